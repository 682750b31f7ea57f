//! What the kernel itself holds, asked without the loader: the BPF links of our programs
//! (bpftool), and netfilter rules loaded for the duration of a check.

use std::{collections::BTreeSet, process::Command};

use netlab::netns::Netns;

pub fn bpftool_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool JSON")
}

/// IDs of the links (XDP or tcx attachments) the kernel holds for program `prog_id`.
pub fn link_ids_of_program(prog_id: u64) -> BTreeSet<u64> {
    bpftool_json(&["link", "show"])
        .iter()
        .filter(|l| l["prog_id"].as_u64() == Some(prog_id))
        .filter_map(|l| l["id"].as_u64())
        .collect()
}

/// How many links the kernel holds for program `prog_id`.
pub fn links_of_program(prog_id: u64) -> usize {
    link_ids_of_program(prog_id).len()
}

/// How many links, machine-wide, attach a program named like one of ours.
pub fn links_of_our_programs() -> usize {
    let ours: Vec<u64> = bpftool_json(&["prog", "show"])
        .iter()
        .filter(|p| {
            matches!(
                p["name"].as_str(),
                Some("xdp_workload" | "xdp_underlay" | "tc_workload" | "tc_underlay")
            )
        })
        .filter_map(|p| p["id"].as_u64())
        .collect();
    ours.into_iter().map(links_of_program).sum()
}

/// Runs `check` with `rules` loaded into `ns` by `iptables-restore`, then empties the
/// iptables table `table` (`filter`, `nat`) again; returns what `check` found.
pub fn with_iptables<T>(ns: &Netns, rules: &str, table: &str, check: impl FnOnce() -> T) -> T {
    ns.feed("iptables-restore", &[], rules).unwrap();
    let found = check();
    ns.feed("iptables-restore", &[], &format!("*{table}\nCOMMIT\n"))
        .unwrap();
    found
}
