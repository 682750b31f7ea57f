//! The smallest change that takes a map from what it holds to what a plan wants.
use std::collections::BTreeMap;

/// Entries to write and entries to delete to take a map from `current` to `desired`.
#[derive(Debug, PartialEq, Eq)]
pub struct Diff<K, V> {
    pub upserts: Vec<(K, V)>,
    pub removals: Vec<K>,
}

/// Computes the smallest change from `current` to `desired`: unchanged entries are not
/// rewritten.
pub fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Diff<K, V> {
    let upserts = desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let removals = current
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .cloned()
        .collect();
    Diff { upserts, removals }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_writes_only_what_changes() {
        let current = BTreeMap::from([(1, 'a'), (2, 'b'), (3, 'c')]);
        let desired = BTreeMap::from([(2, 'b'), (3, 'x'), (4, 'd')]);
        let d = diff(&current, &desired);
        assert_eq!(d.upserts, vec![(3, 'x'), (4, 'd')]);
        assert_eq!(d.removals, vec![1]);
    }

    #[test]
    fn diff_of_equal_maps_is_empty() {
        let m = BTreeMap::from([(1, 'a')]);
        assert_eq!(
            diff(&m, &m),
            Diff {
                upserts: vec![],
                removals: vec![]
            }
        );
    }
}
