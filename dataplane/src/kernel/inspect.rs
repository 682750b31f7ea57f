//! Reading a live dataplane back: the kernel IDs of its programs and maps (from the loading
//! process, or from its pins by any process), its counters, routes and map fill levels (by
//! map ID, from another process), and the programs' run statistics.
use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::{
    maps::{LpmTrie, Map, MapData, MapInfo, PerCpuArray, PerCpuHashMap},
    programs::{
        ProgramError,
        links::{FdLink, PinnedLink},
    },
};
use dataplane_common::{
    Counter, Hook, Ipv4Key, NextHop, counter_index,
    counters::EgressCount,
    maps::{map_names, program_names},
    policy::{FlowKey, PolicyEndpoint, PolicyEndpointKey, PolicyPeerKey, PolicyVerdictKey},
    services::{BackendKey, Endpoint, ServiceFlow, ServiceKey, ServiceValue},
};

use super::{
    attach::pinned_link_error,
    error::{DataplaneError, map_err},
    object::Dataplane,
    pins::{PINNED_MAPS, PinDir},
    sync::read_routes,
};
use crate::model::{Ipv4Prefix, policy::Direction};

/// What the kernel knows the loaded programs and maps by: lets other processes (`loader
/// stats`, the bench) find the live maps of this host.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelIds {
    pub programs: BTreeMap<String, u32>,
    pub maps: BTreeMap<String, u32>,
}

impl Dataplane {
    /// The kernel IDs of the programs and maps.
    pub fn kernel_ids(&self) -> Result<KernelIds, DataplaneError> {
        let mut ids = KernelIds::default();
        for (name, program) in self.bpf.programs() {
            let info = match program.info() {
                Ok(info) => info,
                // A program of the object this instance did not load has no kernel record.
                Err(ProgramError::NotLoaded) => continue,
                Err(source) => return Err(DataplaneError::ProgramInfo(source)),
            };
            ids.programs.insert(name.to_string(), info.id());
            let map_ids = info
                .map_ids()
                .map_err(DataplaneError::ProgramInfo)?
                .unwrap_or_default();
            for id in map_ids {
                let info = MapInfo::from_id(id)
                    .map_err(|source| DataplaneError::MapInfo { id, source })?;
                if let Some(name) = info.name_as_str() {
                    ids.maps.insert(name.to_string(), id);
                }
            }
        }
        Ok(ids)
    }

    /// Run time and run count of the routing programs so far, summed over both hooks, as the
    /// kernel's BPF statistics have them (zero unless `kernel.bpf_stats_enabled` is on or a
    /// stats fd is held, see `aya::sys::enable_stats`).
    pub fn run_stats(&self) -> Result<(u64, u64), DataplaneError> {
        let mut time = 0;
        let mut count = 0;
        for name in program_names::ROUTING {
            let program = self.bpf.program(name).ok_or(DataplaneError::Missing {
                kind: "program",
                name,
            })?;
            let info = program
                .info()
                .map_err(|source| DataplaneError::Program { name, source })?;
            time += info.run_time().as_nanos() as u64;
            count += info.run_count();
        }
        Ok((time, count))
    }
}

/// The kernel IDs of a pinned dataplane's maps and programs, read from its pins: how other
/// processes find a host's dataplane whether or not a loader runs.
pub fn kernel_ids_from_pins(pins: &PinDir) -> Result<KernelIds, DataplaneError> {
    let mut ids = KernelIds::default();
    for name in PINNED_MAPS {
        let info = MapInfo::from_pin(pins.map(name)).map_err(map_err(name))?;
        ids.maps.insert(name.to_string(), info.id());
    }
    let mut program_ids = std::collections::BTreeSet::new();
    for path in pins.links()? {
        let link_err = pinned_link_error(&path);
        let link: FdLink = PinnedLink::from_pin(&path).map_err(link_err)?.into();
        program_ids.insert(link.info().map_err(link_err)?.program_id());
    }
    // The links name their programs by ID only: the kernel's list of programs has the names.
    for program in aya::programs::loaded_programs() {
        let program = program.map_err(DataplaneError::ProgramInfo)?;
        if program_ids.contains(&program.id()) {
            let name = program.name_as_str().unwrap_or("unnamed").to_string();
            ids.programs.insert(name, program.id());
        }
    }
    Ok(ids)
}

/// Counters summed over CPUs: per hook (`xdp`, `tc`) by counter name, and frames forwarded
/// per egress ifindex (both hooks).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub hooks: BTreeMap<String, BTreeMap<String, u64>>,
    pub forwarded_by_egress: BTreeMap<u32, u64>,
    /// Packets denied by each workload's policy, by direction.
    #[serde(default)]
    pub policy_denied: Vec<DeniedCount>,
}

/// Packets denied by one workload's policy in one direction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeniedCount {
    pub workload: Ipv4Addr,
    pub direction: Direction,
    pub packets: u64,
}

impl Stats {
    /// A counter summed over both hooks.
    pub fn total(&self, name: &str) -> u64 {
        self.hooks.values().filter_map(|c| c.get(name)).sum()
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

/// Reads every counter of the dataplane whose maps are `ids`.
pub fn read(ids: &KernelIds) -> Result<Stats, DataplaneError> {
    let name = map_names::COUNTERS;
    let counters: PerCpuArray<MapData, u64> = typed(ids, name, Map::PerCpuArray)?;
    let mut stats = Stats::default();
    for hook in Hook::ALL {
        let mut by_name = BTreeMap::new();
        for slot in Counter::ALL {
            let values = counters
                .get(&counter_index(hook, slot), 0)
                .map_err(map_err(name))?;
            by_name.insert(slot.name().to_string(), values.iter().sum());
        }
        stats.hooks.insert(hook.name().to_string(), by_name);
    }

    stats.forwarded_by_egress = egress_slots(ids)?
        .into_values()
        .filter(|(ifindex, _)| *ifindex != 0)
        .collect();
    let name = map_names::POLICY_DENIED;
    let denied: PerCpuHashMap<MapData, PolicyEndpointKey, u64> =
        typed(ids, name, Map::PerCpuHashMap)?;
    for entry in denied.iter() {
        let (key, values) = entry.map_err(map_err(name))?;
        let Some(direction) = Direction::from_code(key.direction) else {
            continue; // the programs write only the two directions
        };
        stats.policy_denied.push(DeniedCount {
            workload: Ipv4Addr::from(key.addr),
            direction,
            packets: values.iter().sum(),
        });
    }
    stats
        .policy_denied
        .sort_by_key(|d| (d.workload, d.direction));
    Ok(stats)
}

/// One service as the maps hold it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceView {
    pub front: std::net::SocketAddrV4,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// In index order: the programs draw an index uniformly.
    pub backends: Vec<std::net::SocketAddrV4>,
}

/// The services of the dataplane whose maps are `ids`, by address, port and protocol.
pub fn services(ids: &KernelIds) -> Result<Vec<ServiceView>, DataplaneError> {
    use aya::maps::HashMap;
    use map_names::{BACKENDS, SERVICES};
    let services: HashMap<MapData, ServiceKey, ServiceValue> = typed(ids, SERVICES, Map::HashMap)?;
    let backends: HashMap<MapData, BackendKey, Endpoint> = typed(ids, BACKENDS, Map::HashMap)?;
    let endpoint = |addr: [u8; 4], port: [u8; 2]| {
        std::net::SocketAddrV4::new(Ipv4Addr::from(addr), u16::from_be_bytes(port))
    };
    let mut by_id: BTreeMap<u32, BTreeMap<u32, std::net::SocketAddrV4>> = BTreeMap::new();
    for entry in backends.iter() {
        let (key, b) = entry.map_err(map_err(BACKENDS))?;
        by_id
            .entry(key.service)
            .or_default()
            .insert(key.index, endpoint(b.addr, b.port));
    }
    let mut out = Vec::new();
    for entry in services.iter() {
        let (key, value) = entry.map_err(map_err(SERVICES))?;
        let listed = by_id.remove(&value.id).unwrap_or_default();
        out.push(ServiceView {
            front: endpoint(key.vip, key.port),
            protocol: if key.proto == 6 { "tcp" } else { "udp" },
            backends: listed
                .into_iter()
                .filter(|(index, _)| *index < value.backends)
                .map(|(_, b)| b)
                .collect(),
        });
    }
    out.sort_by_key(|s| (s.front, s.protocol));
    Ok(out)
}

/// Every slot of the forwarded-frames counter: slot -> (the interface it counts for, 0 for a
/// free slot; frames, summed over CPUs).
fn egress_slots(ids: &KernelIds) -> Result<BTreeMap<u32, (u32, u64)>, DataplaneError> {
    let name = map_names::FWD_BY_EGRESS;
    let counts: PerCpuArray<MapData, EgressCount> = typed(ids, name, Map::PerCpuArray)?;
    let mut slots = BTreeMap::new();
    for slot in 0..counts.len() {
        let values = counts.get(&slot, 0).map_err(map_err(name))?;
        // User space labels a slot on every CPU at once; any CPU's copy names it.
        let ifindex = values.first().map_or(0, |v| v.ifindex);
        slots.insert(slot, (ifindex, values.iter().map(|v| v.packets).sum()));
    }
    Ok(slots)
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
        BACKENDS, FWD_BY_EGRESS, HOST_ADDRS, POLICIES, POLICY_FLOWS, POLICY_PEERS, POLICY_VERDICTS,
        ROUTES, SERVICE_FLOWS, SERVICES, TX_PORTS, VXLAN_VNIS,
    };
    let ports: DevMapHash<MapData> = typed(ids, TX_PORTS, Map::DevMapHash)?;
    let addrs: HashMap<MapData, Ipv4Key, u32> = typed(ids, HOST_ADDRS, Map::HashMap)?;
    let vnis: HashMap<MapData, u32, u32> = typed(ids, VXLAN_VNIS, Map::HashMap)?;
    let endpoints: HashMap<MapData, PolicyEndpointKey, PolicyEndpoint> =
        typed(ids, POLICIES, Map::HashMap)?;
    let peers: LpmTrie<MapData, PolicyPeerKey, u32> = typed(ids, POLICY_PEERS, Map::LpmTrie)?;
    let verdicts: LpmTrie<MapData, PolicyVerdictKey, u32> =
        typed(ids, POLICY_VERDICTS, Map::LpmTrie)?;
    let flows: HashMap<MapData, FlowKey, u64> = typed(ids, POLICY_FLOWS, Map::LruHashMap)?;
    let services: HashMap<MapData, ServiceKey, ServiceValue> = typed(ids, SERVICES, Map::HashMap)?;
    let backends: HashMap<MapData, BackendKey, Endpoint> = typed(ids, BACKENDS, Map::HashMap)?;
    let service_flows: HashMap<MapData, FlowKey, ServiceFlow> =
        typed(ids, SERVICE_FLOWS, Map::LruHashMap)?;
    Ok(vec![
        fill(ROUTES, Ok(routes(ids)?.len() as u64))?,
        fill(TX_PORTS, count(ports.keys()))?,
        fill(HOST_ADDRS, count(addrs.keys()))?,
        fill(VXLAN_VNIS, count(vnis.keys()))?,
        fill(
            FWD_BY_EGRESS,
            Ok(egress_slots(ids)?
                .values()
                .filter(|(ifindex, _)| *ifindex != 0)
                .count() as u64),
        )?,
        fill(POLICIES, count(endpoints.keys()))?,
        fill(POLICY_PEERS, count(peers.keys()))?,
        fill(POLICY_VERDICTS, count(verdicts.keys()))?,
        fill(POLICY_FLOWS, count(flows.keys()))?,
        fill(SERVICES, count(services.keys()))?,
        fill(BACKENDS, count(backends.keys()))?,
        fill(SERVICE_FLOWS, count(service_flows.keys()))?,
    ])
}
