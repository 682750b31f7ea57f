//! The host around the programs: network namespaces ([`netns`]), links, addresses,
//! neighbours and routes read through iproute2 ([`netinfo`]), a BPF filesystem to pin in
//! ([`bpffs`]), workload wiring ([`workload`]), the loader's state record ([`state`]) and
//! what the CNI plugin and the loader tell each other ([`workloads`]).
pub mod bpffs;
pub mod nat;
pub mod netinfo;
pub mod netns;
pub mod rtnl;
pub mod state;
pub mod workload;
pub mod workloads;
