//! The dataplane library.
//!
//! Without the `user` feature this crate is `no_std` and holds only what the eBPF programs and
//! user space must agree on: map value layouts, counter indices, and the pure header arithmetic
//! ([`shared`], [`checksum`]). With `user` (the default) it is also the user-side library: the route
//! table model and parser, system lookups, loading and attaching the programs, map sync and
//! reading the counters.
#![cfg_attr(not(feature = "user"), no_std)]

pub mod checksum;
pub mod shared;

#[cfg(feature = "user")]
pub mod cluster;
#[cfg(feature = "user")]
pub mod config;
#[cfg(feature = "user")]
pub mod ebpf;
#[cfg(feature = "user")]
pub mod kernel_routes;
#[cfg(feature = "user")]
pub mod netinfo;
#[cfg(feature = "user")]
pub mod netns;
#[cfg(feature = "user")]
pub mod pins;
#[cfg(feature = "user")]
pub mod policy;
#[cfg(feature = "user")]
pub mod resolve;
#[cfg(feature = "user")]
pub mod softirq;
#[cfg(feature = "user")]
pub mod state;
#[cfg(feature = "user")]
pub mod stats;
#[cfg(feature = "user")]
pub mod workload;
