//! `loader stats`: the packet counters, summed over CPUs.
use std::path::Path;

use anyhow::Result;
use dataplane::kernel::inspect;

use super::{ifnames, pinned_ids};

pub fn print(json: bool, bpffs: &Path) -> Result<()> {
    let stats = inspect::read(&pinned_ids(bpffs)?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    let names = ifnames();
    for (hook, counters) in &stats.hooks {
        println!("{hook}:");
        for (name, value) in counters {
            println!("  {name:<22} {value}");
        }
    }
    if !stats.policy_denied.is_empty() {
        println!("denied by policy:");
        for d in &stats.policy_denied {
            let endpoint = format!("{} {}", d.workload, d.direction);
            println!("  {endpoint:<22} {}", d.packets);
        }
    }
    println!("forwarded by egress:");
    for (ifindex, value) in &stats.forwarded_by_egress {
        let name = names
            .get(ifindex)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {ifindex}"));
        println!("  {name:<22} {value}");
    }
    Ok(())
}
