//! Per-CPU counters: one slot per (hook, reason), and frames forwarded per egress interface.
use dataplane::shared::{PolicyEndpointKey, counter, counter_index};

use crate::maps::{COUNTERS, FWD_BY_EGRESS, POLICY_DENIED};

#[inline(always)]
pub fn count(hook: u32, slot: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter_index(hook, slot)) {
        // Per-CPU slot: no other writer, a plain add is enough.
        unsafe { *value += 1 };
    }
}

#[inline(always)]
fn count_forwarded(hook: u32, egress_ifindex: u32) {
    count(hook, counter::FORWARDED);
    match FWD_BY_EGRESS.get_ptr_mut(&egress_ifindex) {
        Some(value) => unsafe { *value += 1 },
        None => {
            // First frame out of this port on this CPU; a lost race only loses this one count
            // here, the hook's FORWARDED counter above still has it.
            let _ = FWD_BY_EGRESS.insert(&egress_ifindex, &1, 0);
        }
    }
}

/// Counts a packet denied by the policy of workload `addr` in `direction`.
#[inline(always)]
pub fn count_denied(addr: [u8; 4], direction: u32) {
    let key = PolicyEndpointKey { addr, direction };
    match POLICY_DENIED.get_ptr_mut(&key) {
        Some(value) => unsafe { *value += 1 },
        None => {
            let _ = POLICY_DENIED.insert(&key, &1, 0);
        }
    }
}

/// How a frame left a program: every exit path ends in exactly one of these.
pub enum Outcome {
    Pass(u32),
    Drop(u32),
    /// Redirected out of `egress`; `encapsulated` if VXLAN headers were pushed.
    Redirected {
        egress: u32,
        encapsulated: bool,
    },
}

/// Counts the outcome in `hook`'s counters.
#[inline(always)]
pub fn account(hook: u32, outcome: &Outcome) {
    match outcome {
        Outcome::Pass(reason) | Outcome::Drop(reason) => count(hook, *reason),
        Outcome::Redirected {
            egress,
            encapsulated,
        } => {
            if *encapsulated {
                count(hook, counter::VXLAN_ENCAP);
            }
            count_forwarded(hook, *egress);
        }
    }
}
