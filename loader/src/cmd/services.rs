//! `loader services`: the services as the kernel holds them.
use std::path::Path;

use anyhow::Result;
use dataplane::kernel::inspect;

use super::pinned_ids;

pub fn print(json: bool, bpffs: &Path) -> Result<()> {
    let services = inspect::services(&pinned_ids(bpffs)?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&services)?);
        return Ok(());
    }
    println!("{:<22} {:<5} BACKENDS", "SERVICE", "PROTO");
    for s in &services {
        let backends: Vec<String> = s.backends.iter().map(ToString::to_string).collect();
        println!(
            "{:<22} {:<5} {}",
            s.front.to_string(),
            s.protocol,
            backends.join(" ")
        );
    }
    Ok(())
}
