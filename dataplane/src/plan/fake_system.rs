//! A [`System`] answered from tables a test sets: the plan's logic tested without root or a
//! network namespace.
use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicUsize, Ordering},
};

use super::resolve::System;
use crate::system::netinfo::{KernelRoute, Link, NetInfoError};

#[derive(Default)]
pub struct FakeSystem {
    pub links: Vec<Link>,
    pub addrs: Vec<(String, Ipv4Addr)>,
    /// Neighbours that answer: address, interface, MAC.
    pub neighbours: Vec<(Ipv4Addr, &'static str, [u8; 6])>,
    /// The kernel's routes, whatever table is asked for.
    pub kernel: Vec<KernelRoute>,
    /// The neighbour table (usually empty: every neighbour is then asked for on its own).
    pub table: Vec<(Ipv4Addr, &'static str, [u8; 6])>,
    /// How many times the neighbour table was read.
    pub table_reads: AtomicUsize,
    /// How many neighbour lookups were made.
    pub lookups: AtomicUsize,
}

impl System for FakeSystem {
    fn links(&self) -> Result<Vec<Link>, NetInfoError> {
        Ok(self.links.clone())
    }
    fn ipv4_addrs(&self) -> Result<Vec<(String, Ipv4Addr)>, NetInfoError> {
        Ok(self.addrs.clone())
    }
    fn neighbour_mac(&self, addr: Ipv4Addr, dev: &str) -> Result<Option<[u8; 6]>, NetInfoError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .neighbours
            .iter()
            .find(|(a, d, _)| *a == addr && *d == dev)
            .map(|n| n.2))
    }
    fn neighbour_mac_now(
        &self,
        addr: Ipv4Addr,
        dev: &str,
    ) -> Result<Option<[u8; 6]>, NetInfoError> {
        self.neighbour_mac(addr, dev)
    }
    fn kernel_routes(&self, _table: &str) -> Result<Vec<KernelRoute>, NetInfoError> {
        Ok(self.kernel.clone())
    }
    fn neighbour_table(&self) -> Result<Vec<(Ipv4Addr, String, [u8; 6])>, NetInfoError> {
        self.table_reads.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .table
            .iter()
            .map(|(addr, dev, mac)| (*addr, dev.to_string(), *mac))
            .collect())
    }
}

/// An interface that is up, with a MAC made from its index; a veth named `cali*` has its
/// peer in another namespace (a workload's), any other none.
pub fn link(name: &str, ifindex: u32, kind: Option<&str>) -> Link {
    Link {
        name: name.into(),
        ifindex,
        mac: Some([2, 0, 0, 0, 0, ifindex as u8]),
        kind: kind.map(Into::into),
        mtu: 1500,
        up: true,
        peer_elsewhere: kind == Some("veth") && name.starts_with("cali"),
    }
}
