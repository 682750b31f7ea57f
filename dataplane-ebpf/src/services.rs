//! Services: a workload's connection to a virtual address and port goes to one of the
//! service's backends, every packet of it to the same one, and the backend's replies seem to
//! come from the address the client asked for. Only on the client's host, on what its
//! workloads send (the programs see every such packet first) and on what is delivered to them.
//!
//! A new connection draws its backend at random (`bpf_get_prandom_u32`, uniform over the
//! backends, as kube-proxy's `statistic --mode random` chains and `numgen random` maps do) and
//! is recorded both ways: the client's flow to the backend it got (`SERVICE_FLOWS`), and the
//! backend's reply flow to the service address to put back (`SERVICE_REPLIES`). A recorded
//! connection keeps its backend while it is active, even if the backend leaves the service
//! (as conntrack keeps a TCP connection under kube-proxy); idle for
//! [`SERVICE_FLOW_IDLE_NS`] it is forgotten, and a TCP SYN that reuses its addresses and
//! ports after the service's backends changed opens a new one. TCP and UDP only; a fragment
//! is not translated.
//!
//! This file holds what is the same for every address family; the flows, service keys and
//! translation are the family's (`crate::ipv4`).
use aya_ebpf::maps::LruHashMap;
use dataplane_common::services::{SERVICE_FLOW_IDLE_NS, ServiceFlow};

use crate::{
    maps::SERVICES_ACTIVE,
    parse::{Frame, IPPROTO_TCP, ref_at},
};

/// False when this host has no service: one array read instead of a hash lookup per packet.
#[inline(always)]
pub fn in_use() -> bool {
    matches!(SERVICES_ACTIVE.get(0), Some(services) if *services != 0)
}

/// What `flows` recorded for `flow`, if seen within the idle time; refreshes its time at most
/// once a second (a write per packet would bounce the entry between CPUs).
#[inline(always)]
pub fn recall<K>(flows: &LruHashMap<K, ServiceFlow>, flow: &K, now: u64) -> Option<ServiceFlow> {
    let entry = flows.get_ptr_mut(flow)?;
    // SAFETY: `entry` points at the map's value, which the kernel keeps valid while the
    // program runs (RCU). Other CPUs may use the entry at once: an update replaces an element
    // whole (a reader keeps the old one), and the only write in place is the refresh below, a
    // single 8-byte store; a refresh lost to a race makes the entry look older by under 1 s.
    let seen = unsafe { (*entry).seen_ns };
    if now.wrapping_sub(seen) > SERVICE_FLOW_IDLE_NS {
        return None;
    }
    if now.wrapping_sub(seen) > 1_000_000_000 {
        // SAFETY: as above.
        unsafe { (*entry).seen_ns = now };
    }
    // SAFETY: as above.
    Some(unsafe { *entry })
}

/// True if the TCP segment whose header starts at `l4_at` in `frame` opens a connection: SYN
/// without ACK. False for UDP, and for a header cut short.
#[inline(always)]
pub fn opens_a_connection(proto: u8, frame: Frame, l4_at: usize) -> bool {
    const TCP_FLAGS_AT: usize = 13;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    if proto != IPPROTO_TCP {
        return false;
    }
    // SAFETY: a current frame (every `Frame` is: see `parse::Frame`); the byte is copied out
    // at once, and a `&mut` into the frame, if any is held, is to other bytes (`ref_mut_at`).
    match unsafe { ref_at::<u8>(frame, l4_at + TCP_FLAGS_AT) } {
        Ok(flags) => *flags & (SYN | ACK) == SYN,
        Err(_) => false,
    }
}
