//! Network policy: whether a packet to a local workload (ingress) or from a workload under
//! policy (egress) may pass. A fixed number of map lookups whatever the rule count (the loader
//! compiles the rules into two LPM tries, see `dataplane::plan::policy`):
//!
//! 1. the endpoint of each side under policy (hash, by address and direction);
//! 2. the flow, in both directions, among the flows that have seen a reply (`POLICY_FLOWS`),
//!    then among the admitted flows still waiting for one (`POLICY_NEWFLOWS`): a recorded
//!    flow and its replies pass, as Calico's chains accept ESTABLISHED first; the first reply
//!    moves a flow from the second map to the first. An ICMP error about a recorded flow
//!    (unreachable, time exceeded, parameter problem) passes as part of it;
//! 3. per side under policy: the peer's class (LPM on ruleset + peer address), then the
//!    verdict (LPM on ruleset + class + protocol + port); no entry means the side's default.
//!
//! An admitted new flow is recorded among the new ones. Two LRU maps, so that a workload that
//! floods new flows evicts only flows without replies, never another workload's connection.
//! Deny wins: egress is checked, then ingress.
//!
//! This file holds what is the same for every address family; the endpoints, flows and rule
//! keys are the family's (`crate::ipv4`).
use aya_ebpf::maps::LruHashMap;
use dataplane_common::policy::POLICY_FLOW_IDLE_NS;

use crate::maps::POLICY_ACTIVE;

/// False when no workload on this host is under policy: one array read (which the verifier
/// turns into a load) instead of two endpoint hash lookups per packet.
#[inline(always)]
pub fn in_use() -> bool {
    matches!(POLICY_ACTIVE.get(0), Some(endpoints) if *endpoints != 0)
}

/// True if `flow` is in `flows` and was seen within the idle time; refreshes its time at most
/// once a second (a write per packet would bounce the entry between CPUs).
#[inline(always)]
pub fn known<K>(flows: &LruHashMap<K, u64>, flow: &K, now: u64) -> bool {
    let Some(seen) = flows.get_ptr_mut(flow) else {
        return false;
    };
    // SAFETY: `seen` points at the map's value, which the kernel keeps valid while the program
    // runs (RCU). Other CPUs may use the entry at once: an update replaces an element whole (a
    // reader keeps the old one), and the only write in place is the refresh below, a single
    // 8-byte store; a refresh lost to a race makes the flow look older by under 1 s.
    let last = unsafe { *seen };
    if now.wrapping_sub(last) > POLICY_FLOW_IDLE_NS {
        return false;
    }
    if now.wrapping_sub(last) > 1_000_000_000 {
        // SAFETY: as above.
        unsafe { *seen = now };
    }
    true
}
