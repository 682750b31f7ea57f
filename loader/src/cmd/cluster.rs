//! `loader cluster`: the hosts of a cluster as the store has them.
use anyhow::{Result, bail};
use dataplane::model::{cluster::HostRecord, mac::format_mac};

use crate::{cli::StoreArgs, daemon::cluster::Store};

/// Prints the records (a table, or JSON).
pub fn print(store: &StoreArgs, json: bool) -> Result<()> {
    if store.endpoints.is_empty() {
        bail!("give --etcd ENDPOINTS");
    }
    let store = Store::new(store, 10, None)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listed = runtime.block_on(async {
        let mut client = store.connect().await?;
        store.records(&mut client).await
    })?;
    let (records, revision) = (listed.valid, listed.revision);
    if json {
        let list: Vec<&HostRecord> = records.values().collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{} hosts at revision {revision}", records.len());
    println!(
        "{:<18} {:<15} {:<7} {:<17} {:<5} HOST",
        "PREFIX", "UNDERLAY", "ENCAP", "VTEP MAC", "VNI"
    );
    for r in records.values() {
        println!(
            "{:<18} {:<15} {:<7} {:<17} {:<5} {}",
            r.prefix.to_string(),
            r.underlay.to_string(),
            format!("{:?}", r.encap).to_lowercase(),
            r.vtep_mac.map(|m| format_mac(&m)).unwrap_or_default(),
            r.vni.map(|v| v.to_string()).unwrap_or_default(),
            r.host
        );
    }
    Ok(())
}
