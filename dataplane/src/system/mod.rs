//! The host around the programs: network namespaces ([`netns`]), links, addresses,
//! neighbours and routes ([`netinfo`]), a BPF filesystem to pin in ([`bpffs`]), masquerade
//! ([`nat`]), workload wiring ([`workload`]) and what the CNI plugin and the loader tell each
//! other ([`workloads`]).
pub mod bpffs;
pub mod nat;
pub mod netinfo;
pub mod netns;
pub mod workload;
pub mod workloads;

/// Where the loader and the CNI plugin keep their files, one directory per network namespace
/// (under /run, which `ip netns exec` shares, unlike /sys).
pub const STATE_ROOT: &str = "/run/ebpf-dataplane";
