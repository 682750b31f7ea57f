//! Taking a hash map from what it holds to what a plan wants, in the steps the callers order
//! (entries in before the entries that need them, out after): read it, put in what differs,
//! take out keys.
use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};

use super::error::{DataplaneError, map_err};

fn open<'a, K: aya::Pod, V: aya::Pod>(
    bpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, DataplaneError> {
    let map = bpf
        .map_mut(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    HashMap::try_from(map).map_err(map_err(name))
}

/// Every entry of the hash map `name`.
pub fn read_hash<K: aya::Pod + Ord, V: aya::Pod>(
    bpf: &mut Ebpf,
    name: &'static str,
) -> Result<BTreeMap<K, V>, DataplaneError> {
    let hash: HashMap<&mut MapData, K, V> = open(bpf, name)?;
    hash.iter().collect::<Result<_, _>>().map_err(map_err(name))
}

/// Writes the entries of `desired` that `current` (what the map holds) does not hold as they
/// are; returns how many.
pub fn put_in<K: aya::Pod + Ord, V: aya::Pod + PartialEq>(
    bpf: &mut Ebpf,
    name: &'static str,
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Result<usize, DataplaneError> {
    let mut hash: HashMap<&mut MapData, K, V> = open(bpf, name)?;
    let mut written = 0;
    for (key, value) in desired {
        if current.get(key) != Some(value) {
            hash.insert(key, value, 0).map_err(map_err(name))?;
            written += 1;
        }
    }
    Ok(written)
}

/// Removes `keys` from the hash map `name`; returns how many.
pub fn take_out<'k, K: aya::Pod + 'k, V: aya::Pod>(
    bpf: &mut Ebpf,
    name: &'static str,
    keys: impl IntoIterator<Item = &'k K>,
) -> Result<usize, DataplaneError> {
    let mut hash: HashMap<&mut MapData, K, V> = open(bpf, name)?;
    let mut removed = 0;
    for key in keys {
        hash.remove(key).map_err(map_err(name))?;
        removed += 1;
    }
    Ok(removed)
}

/// The keys of `current` that `desired` does not hold.
pub fn missing<'a, K: Ord, V>(
    current: &'a BTreeMap<K, V>,
    desired: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = &'a K> {
    current.keys().filter(|k| !desired.contains_key(*k))
}
