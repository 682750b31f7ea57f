//! Stable numbers for things the maps refer to by number: the slot of the per-CPU
//! forwarded-frames counter each egress interface counts in (a route's next hop names it, so
//! a forwarded frame is counted with one array add), and each service's id (its backends are
//! keyed by it).
//!
//! Numbers must be stable (an egress keeps its slot and its count while routes use it, a
//! service its id while it exists, across changes and loader restarts: the pinned maps hold
//! them) and never shared in flight: a newcomer gets a number that nothing in the maps uses
//! any more, so a frame routed by a route about to be removed is never counted for the
//! newcomer, nor a connection given a backend of a service about to go. The forwarded-frames
//! counter has twice as many slots as there can be egresses, which makes that possible.
use std::collections::{BTreeMap, BTreeSet};

/// Numbers below `count` for the things `wanted`, given the numbers the maps use now
/// (`current`): a thing already numbered keeps its number, a new one gets the lowest number
/// that `current` does not use. `None` if `wanted` and `current` together need more than
/// `count` numbers.
pub fn assign<K: Ord + Copy>(
    current: &BTreeMap<K, u32>,
    wanted: &BTreeSet<K>,
    count: u32,
) -> Option<BTreeMap<K, u32>> {
    let taken: BTreeSet<u32> = current.values().copied().collect();
    let mut free = (0..count).filter(|slot| !taken.contains(slot));
    wanted
        .iter()
        .map(|ifindex| match current.get(ifindex) {
            Some(slot) => Some((*ifindex, *slot)),
            None => free.next().map(|slot| (*ifindex, slot)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane_common::maps::MAX_EGRESS_SLOTS;

    fn assign(current: &BTreeMap<u32, u32>, wanted: &BTreeSet<u32>) -> Option<BTreeMap<u32, u32>> {
        super::assign(current, wanted, MAX_EGRESS_SLOTS)
    }

    #[test]
    fn an_egress_in_use_keeps_its_slot() {
        let current = BTreeMap::from([(7, 3), (9, 0)]);
        let slots = assign(&current, &BTreeSet::from([7, 9])).unwrap();
        assert_eq!(slots, current);
    }

    #[test]
    fn a_new_egress_never_takes_a_slot_a_current_route_still_names() {
        // Egress 7 leaves as 8 arrives: 8 must not count in 7's slot (3), which routes
        // still being removed name.
        let current = BTreeMap::from([(7, 0), (9, 1)]);
        let slots = assign(&current, &BTreeSet::from([8, 9])).unwrap();
        assert_eq!(slots, BTreeMap::from([(8, 2), (9, 1)]));
    }

    #[test]
    fn slots_start_at_zero_on_an_empty_map() {
        let slots = assign(&BTreeMap::new(), &BTreeSet::from([4, 2])).unwrap();
        assert_eq!(slots, BTreeMap::from([(2, 0), (4, 1)]));
    }

    #[test]
    fn more_egresses_than_slots_is_refused() {
        let current: BTreeMap<u32, u32> = (0..MAX_EGRESS_SLOTS).map(|s| (s + 1, s)).collect();
        let wanted = BTreeSet::from([MAX_EGRESS_SLOTS + 5]);
        assert_eq!(assign(&current, &wanted), None);
    }
}
