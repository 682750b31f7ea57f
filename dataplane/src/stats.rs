//! Reading a live dataplane's counters and routes from another process, by kernel map ID.
use std::collections::BTreeMap;

use aya::maps::{LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap};

use crate::{
    config::Ipv4Prefix,
    ebpf::{DataplaneError, KernelIds, read_routes},
    shared::{
        HOOK_COUNT, HOOK_TC, HOOK_XDP, Ipv4Key, NextHop, POLICY_INGRESS, PolicyEndpointKey,
        counter, counter_index, map_names,
    },
};

/// Counters summed over CPUs: per hook (`xdp`, `tc`) by counter name, and frames forwarded
/// per egress ifindex (both hooks).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub hooks: BTreeMap<String, BTreeMap<String, u64>>,
    pub forwarded_by_egress: BTreeMap<u32, u64>,
    /// Packets denied by a workload's policy, by `"ADDR ingress"` / `"ADDR egress"`.
    #[serde(default)]
    pub policy_denied: BTreeMap<String, u64>,
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

/// Opens map `name` by ID as its typed form (`wrap` is the `Map` variant of its kind).
fn typed<M: TryFrom<Map, Error = aya::maps::MapError>>(
    ids: &KernelIds,
    name: &'static str,
    wrap: fn(MapData) -> Map,
) -> Result<M, DataplaneError> {
    M::try_from(wrap(open(ids, name)?)).map_err(map_err(name))
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// Reads every counter of the dataplane whose maps are `ids`.
pub fn read(ids: &KernelIds) -> Result<Stats, DataplaneError> {
    let name = map_names::COUNTERS;
    let counters: PerCpuArray<MapData, u64> = typed(ids, name, Map::PerCpuArray)?;
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
    let by_egress: PerCpuHashMap<MapData, u32, u64> = typed(ids, name, Map::PerCpuHashMap)?;
    for entry in by_egress.iter() {
        let (ifindex, values) = entry.map_err(map_err(name))?;
        stats
            .forwarded_by_egress
            .insert(ifindex, values.iter().sum());
    }
    let name = map_names::POLICY_DENIED;
    let denied: PerCpuHashMap<MapData, PolicyEndpointKey, u64> =
        typed(ids, name, Map::PerCpuHashMap)?;
    for entry in denied.iter() {
        let (key, values) = entry.map_err(map_err(name))?;
        let direction = if key.direction == POLICY_INGRESS {
            "ingress"
        } else {
            "egress"
        };
        stats.policy_denied.insert(
            format!("{} {direction}", std::net::Ipv4Addr::from(key.addr)),
            values.iter().sum(),
        );
    }
    Ok(stats)
}

/// Reads the route map of the dataplane whose maps are `ids`.
pub fn routes(ids: &KernelIds) -> Result<BTreeMap<Ipv4Prefix, NextHop>, DataplaneError> {
    let name = map_names::ROUTES;
    let trie: LpmTrie<MapData, Ipv4Key, NextHop> = typed(ids, name, Map::LpmTrie)?;
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
    let fill = |name: &'static str, entries: Result<u64, aya::maps::MapError>| {
        let id = *ids
            .maps
            .get(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        let info = aya::maps::MapInfo::from_id(id).map_err(map_err(name))?;
        let entries = entries.map_err(map_err(name))?;
        Ok::<_, DataplaneError>(MapFill {
            name,
            entries,
            capacity: info.max_entries() as u64,
        })
    };
    fn count<T>(
        mut keys: impl Iterator<Item = Result<T, aya::maps::MapError>>,
    ) -> Result<u64, aya::maps::MapError> {
        keys.try_fold(0, |n, k| k.map(|_| n + 1))
    }
    use map_names::{
        FWD_BY_EGRESS, HOST_ADDRS, POLICIES, POLICY_FLOWS, POLICY_PEERS, POLICY_VERDICTS, ROUTES,
        TX_PORTS, VXLAN_VNIS,
    };
    let ports: DevMapHash<MapData> = typed(ids, TX_PORTS, Map::DevMapHash)?;
    let addrs: HashMap<MapData, Ipv4Key, u32> = typed(ids, HOST_ADDRS, Map::HashMap)?;
    let vnis: HashMap<MapData, u32, u32> = typed(ids, VXLAN_VNIS, Map::HashMap)?;
    let egress: PerCpuHashMap<MapData, u32, u64> = typed(ids, FWD_BY_EGRESS, Map::PerCpuHashMap)?;
    let endpoints: HashMap<MapData, PolicyEndpointKey, crate::shared::PolicyEndpoint> =
        typed(ids, POLICIES, Map::HashMap)?;
    let peers: LpmTrie<MapData, crate::shared::PolicyPeerKey, u32> =
        typed(ids, POLICY_PEERS, Map::LpmTrie)?;
    let verdicts: LpmTrie<MapData, crate::shared::PolicyVerdictKey, u32> =
        typed(ids, POLICY_VERDICTS, Map::LpmTrie)?;
    let flows: HashMap<MapData, crate::shared::FlowKey, u64> =
        typed(ids, POLICY_FLOWS, Map::LruHashMap)?;
    Ok(vec![
        fill(ROUTES, Ok(routes(ids)?.len() as u64))?,
        fill(TX_PORTS, count(ports.keys()))?,
        fill(HOST_ADDRS, count(addrs.keys()))?,
        fill(VXLAN_VNIS, count(vnis.keys()))?,
        fill(FWD_BY_EGRESS, count(egress.keys()))?,
        fill(POLICIES, count(endpoints.keys()))?,
        fill(POLICY_PEERS, count(peers.keys()))?,
        fill(POLICY_VERDICTS, count(verdicts.keys()))?,
        fill(POLICY_FLOWS, count(flows.keys()))?,
    ])
}
