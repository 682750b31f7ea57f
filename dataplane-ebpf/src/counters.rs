//! Per-CPU counters: one slot per (hook, counter), frames forwarded per egress interface, and
//! packets denied per workload and direction.
use dataplane_common::{Counter, Hook, counter_index, policy::PolicyEndpointKey};

use crate::maps::{COUNTERS, FWD_BY_EGRESS, POLICY_DENIED};

#[inline(always)]
pub fn count(hook: Hook, slot: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter_index(hook, slot)) {
        // Per-CPU slot: no other writer, a plain add is enough.
        // SAFETY: `value` points at this CPU's slot of the array, valid while the program runs;
        // user space only reads it, and only this CPU's programs, which run one at a time, add.
        unsafe { *value += 1 };
    }
}

#[inline(always)]
fn count_forwarded(hook: Hook, egress_slot: u32) {
    count(hook, Counter::Forwarded);
    if let Some(slot) = FWD_BY_EGRESS.get_ptr_mut(egress_slot) {
        // Per-CPU slot, as above.
        // SAFETY: as in `count`, this CPU's slot. User space rewrites a slot when it gives it
        // to an interface or takes it back; a count racing with that is lost, no more.
        unsafe { (*slot).packets += 1 };
    }
}

/// Counts a packet denied by the policy of the workload with IPv4 address `addr` in
/// `direction`.
#[inline(always)]
pub fn count_denied_v4(addr: [u8; 4], direction: u32) {
    let key = PolicyEndpointKey { addr, direction };
    match POLICY_DENIED.get_ptr_mut(key) {
        // SAFETY: this CPU's value of the per-CPU hash's entry, valid while the program runs
        // (RCU), written by no one else meanwhile.
        Some(value) => unsafe { *value += 1 },
        None => {
            let _ = POLICY_DENIED.insert(key, 1, 0);
        }
    }
}

/// How a frame left a program: every exit path ends in exactly one of these.
pub enum Outcome {
    Pass(Counter),
    Drop(Counter),
    /// Answered in its place: the frame, rewritten into the answer, goes back out of the
    /// interface it came in by.
    Replied(Counter),
    /// Redirected out of interface `egress`, counted in its `egress_slot`; `encapsulated` if
    /// VXLAN headers were pushed.
    Redirected {
        egress: u32,
        egress_slot: u32,
        encapsulated: bool,
    },
}

/// Counts the outcome in `hook`'s counters.
#[inline(always)]
pub fn account(hook: Hook, outcome: &Outcome) {
    match outcome {
        Outcome::Pass(reason) | Outcome::Drop(reason) | Outcome::Replied(reason) => {
            count(hook, *reason)
        }
        Outcome::Redirected {
            egress_slot,
            encapsulated,
            ..
        } => {
            if *encapsulated {
                count(hook, Counter::VxlanEncap);
            }
            count_forwarded(hook, *egress_slot);
        }
    }
}
