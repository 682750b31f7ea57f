//! What the eBPF programs and user space must agree on, and nothing else: map names and
//! capacities, every map key and value, the counter slots, and the header arithmetic both
//! sides compute (checksums, the VXLAN source-port hash).
//!
//! `no_std` always, so the programs compile it unchanged; with the `user` feature the map
//! types are also `aya::Pod`. Every type is `#[repr(C)]` with no implicit padding (a padding
//! byte in a key makes lookups miss; in a value it leaks kernel memory into user space), and
//! addresses stay in network byte order as `[u8; N]`. The size tests pin the layouts.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod checksum;
pub mod counters;
pub mod maps;
pub mod policy;
pub mod routes;
pub mod services;
pub mod softirq;
pub mod vxlan;

pub use counters::{COUNTERS_LEN, Counter, Hook, counter_index};
pub use routes::{Ipv4Key, NH_FLAG_VETH_PEER, NextHop, NextHopKind};
