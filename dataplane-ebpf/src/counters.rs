//! Per-CPU counters: one slot per (hook, reason), and frames forwarded per egress interface.
use dataplane::shared::{counter, counter_index};

use crate::maps::{COUNTERS, FWD_BY_EGRESS};

#[inline(always)]
pub fn count(hook: u32, slot: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter_index(hook, slot)) {
        // Per-CPU slot: no other writer, a plain add is enough.
        unsafe { *value += 1 };
    }
}

#[inline(always)]
pub fn count_forwarded(hook: u32, egress_ifindex: u32) {
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
