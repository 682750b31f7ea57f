//! Reading a live dataplane's counters and routes from another process, by kernel map ID.
use std::collections::BTreeMap;

use aya::maps::{LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap};

use crate::{
    config::Ipv4Prefix,
    ebpf::{DataplaneError, KernelIds, read_routes},
    shared::{HOOK_COUNT, HOOK_TC, HOOK_XDP, Ipv4Key, NextHop, counter, counter_index, map_names},
};

/// Counters summed over CPUs: per hook (`xdp`, `tc`) by counter name, and frames forwarded
/// per egress ifindex (both hooks).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub hooks: BTreeMap<String, BTreeMap<String, u64>>,
    pub forwarded_by_egress: BTreeMap<u32, u64>,
}

impl Stats {
    /// A counter summed over both hooks.
    pub fn total(&self, name: &str) -> u64 {
        self.hooks.values().filter_map(|c| c.get(name)).sum()
    }
}

pub fn hook_name(hook: u32) -> &'static str {
    match hook {
        HOOK_XDP => "xdp",
        HOOK_TC => "tc",
        _ => "unknown",
    }
}

fn open(ids: &KernelIds, name: &'static str) -> Result<MapData, DataplaneError> {
    let id = *ids
        .maps
        .get(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    MapData::from_id(id).map_err(|source| DataplaneError::Map { name, source })
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// Reads every counter of the dataplane whose maps are `ids`.
pub fn read(ids: &KernelIds) -> Result<Stats, DataplaneError> {
    let name = map_names::COUNTERS;
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(ids, name)?)).map_err(map_err(name))?;
    let mut stats = Stats::default();
    for hook in 0..HOOK_COUNT {
        let mut by_name = BTreeMap::new();
        for slot in 0..counter::COUNT {
            let values = counters
                .get(&counter_index(hook, slot), 0)
                .map_err(map_err(name))?;
            by_name.insert(
                counter::NAMES[slot as usize].to_string(),
                values.iter().sum(),
            );
        }
        stats.hooks.insert(hook_name(hook).to_string(), by_name);
    }

    let name = map_names::FWD_BY_EGRESS;
    let by_egress: PerCpuHashMap<MapData, u32, u64> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(open(ids, name)?)).map_err(map_err(name))?;
    for entry in by_egress.iter() {
        let (ifindex, values) = entry.map_err(map_err(name))?;
        stats
            .forwarded_by_egress
            .insert(ifindex, values.iter().sum());
    }
    Ok(stats)
}

/// Reads the route map of the dataplane whose maps are `ids`.
pub fn routes(ids: &KernelIds) -> Result<BTreeMap<Ipv4Prefix, NextHop>, DataplaneError> {
    let name = map_names::ROUTES;
    let trie: LpmTrie<MapData, Ipv4Key, NextHop> =
        LpmTrie::try_from(Map::LpmTrie(open(ids, name)?)).map_err(map_err(name))?;
    read_routes(&trie)
}

/// How full one map is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// Entries against capacity for every hash-like map of the dataplane (a full map refuses
/// updates: operators watch this).
pub fn map_fill(ids: &KernelIds) -> Result<Vec<MapFill>, DataplaneError> {
    use aya::maps::{DevMapHash, HashMap};
    let capacity = |name: &'static str| -> Result<u64, DataplaneError> {
        let id = *ids
            .maps
            .get(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        let info = aya::maps::MapInfo::from_id(id).map_err(map_err(name))?;
        Ok(info.max_entries() as u64)
    };
    let count = |name: &'static str,
                 n: Result<usize, aya::maps::MapError>|
     -> Result<MapFill, DataplaneError> {
        Ok(MapFill {
            name,
            entries: n.map_err(map_err(name))? as u64,
            capacity: capacity(name)?,
        })
    };
    let mut out = vec![MapFill {
        name: map_names::ROUTES,
        entries: routes(ids)?.len() as u64,
        capacity: capacity(map_names::ROUTES)?,
    }];
    let ports: DevMapHash<MapData> =
        DevMapHash::try_from(Map::DevMapHash(open(ids, map_names::TX_PORTS)?))
            .map_err(map_err(map_names::TX_PORTS))?;
    out.push(count(
        map_names::TX_PORTS,
        ports.keys().try_fold(0, |n, k| k.map(|_| n + 1)),
    )?);
    let addrs: HashMap<MapData, Ipv4Key, u32> =
        HashMap::try_from(Map::HashMap(open(ids, map_names::HOST_ADDRS)?))
            .map_err(map_err(map_names::HOST_ADDRS))?;
    out.push(count(
        map_names::HOST_ADDRS,
        addrs.keys().try_fold(0, |n, k| k.map(|_| n + 1)),
    )?);
    let vnis: HashMap<MapData, u32, u32> =
        HashMap::try_from(Map::HashMap(open(ids, map_names::VXLAN_VNIS)?))
            .map_err(map_err(map_names::VXLAN_VNIS))?;
    out.push(count(
        map_names::VXLAN_VNIS,
        vnis.keys().try_fold(0, |n, k| k.map(|_| n + 1)),
    )?);
    let egress: PerCpuHashMap<MapData, u32, u64> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(open(ids, map_names::FWD_BY_EGRESS)?))
            .map_err(map_err(map_names::FWD_BY_EGRESS))?;
    out.push(count(
        map_names::FWD_BY_EGRESS,
        egress.keys().try_fold(0, |n, k| k.map(|_| n + 1)),
    )?);
    Ok(out)
}
