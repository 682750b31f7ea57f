//! Masquerading workload traffic that leaves the cluster (natOutgoing): one nftables rule in
//! a table the loader owns, in the current network namespace. Such traffic has no route in
//! the maps: the programs pass it to the kernel, which forwards it and translates its source
//! to the outgoing interface's address, and its replies back.
use std::{io::Write, process::Command};

use crate::model::Ipv4Prefix;

/// The loader's table (`nft list table ip ebpf_dataplane_nat`).
pub const TABLE: &str = "ebpf_dataplane_nat";

#[derive(Debug, thiserror::Error)]
#[error("nft: {0}")]
pub struct NatError(String);

/// The table's text: traffic from `range` to anywhere outside it leaves behind this host's
/// address.
pub fn ruleset(range: Ipv4Prefix) -> String {
    format!(
        "table ip {TABLE} {{}}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {range} ip daddr != {range} masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// Installs (or replaces, in one transaction) the table for `range`.
pub fn install(range: Ipv4Prefix) -> Result<(), NatError> {
    nft_script(&ruleset(range))
}

/// Removes the table if it is there.
pub fn remove() -> Result<(), NatError> {
    nft_script(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"))
}

fn nft_script(script: &str) -> Result<(), NatError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| NatError(format!("cannot run nft: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(|e| NatError(e.to_string()))?;
    let out = child
        .wait_with_output()
        .map_err(|e| NatError(e.to_string()))?;
    if !out.status.success() {
        return Err(NatError(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_masquerades_only_what_leaves_the_range() {
        let text = ruleset("198.18.0.0/16".parse().unwrap());
        assert!(text.starts_with("table ip ebpf_dataplane_nat {}\ndelete table"));
        assert!(
            text.contains("ip saddr 198.18.0.0/16 ip daddr != 198.18.0.0/16 masquerade"),
            "{text}"
        );
    }
}
