//! The maps the programs share with user space. Layouts and names live in
//! `dataplane_common`; the loader fills these maps and reads the counters.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use dataplane_common::{
    COUNTERS_LEN, Ipv4Key, NextHop,
    counters::EgressCount,
    maps::{
        MAX_EGRESS_SLOTS, MAX_HOST_ADDRS, MAX_POLICY_ENDPOINTS, MAX_POLICY_FLOWS,
        MAX_POLICY_NEW_FLOWS, MAX_POLICY_PEERS, MAX_POLICY_VERDICTS, MAX_ROUTES,
        MAX_SERVICE_BACKENDS, MAX_SERVICE_FLOWS, MAX_SERVICES, MAX_TX_PORTS, MAX_VNIS, MAX_VTEPS,
    },
    policy::{FlowKey, PolicyEndpoint, PolicyEndpointKey, PolicyPeerKey, PolicyVerdictKey},
    services::{BackendKey, Endpoint, ServiceFlow, ServiceKey, ServiceValue},
    vxlan::VxlanConfig,
};

#[map]
pub static ROUTES: LpmTrie<Ipv4Key, NextHop> = LpmTrie::with_max_entries(MAX_ROUTES, 0);

#[map]
pub static WORKLOAD_SRCS: HashMap<u32, Ipv4Key> = HashMap::with_max_entries(MAX_TX_PORTS, 0);

#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_TX_PORTS, 0);

#[map]
pub static HOST_ADDRS: HashMap<Ipv4Key, u32> = HashMap::with_max_entries(MAX_HOST_ADDRS, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

#[map]
pub static FWD_BY_EGRESS: PerCpuArray<EgressCount> =
    PerCpuArray::with_max_entries(MAX_EGRESS_SLOTS, 0);

#[map]
pub static VXLAN_CONFIG: Array<VxlanConfig> = Array::with_max_entries(1, 0);

#[map]
pub static VXLAN_VNIS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_VNIS, 0);

#[map]
pub static VXLAN_VTEPS: HashMap<Ipv4Key, u32> = HashMap::with_max_entries(MAX_VTEPS, 0);

#[map]
pub static POLICIES: HashMap<PolicyEndpointKey, PolicyEndpoint> =
    HashMap::with_max_entries(MAX_POLICY_ENDPOINTS, 0);

#[map]
pub static POLICY_PEERS: LpmTrie<PolicyPeerKey, u32> =
    LpmTrie::with_max_entries(MAX_POLICY_PEERS, 0);

#[map]
pub static POLICY_VERDICTS: LpmTrie<PolicyVerdictKey, u32> =
    LpmTrie::with_max_entries(MAX_POLICY_VERDICTS, 0);

#[map]
pub static POLICY_NEWFLOWS: LruHashMap<FlowKey, u64> =
    LruHashMap::with_max_entries(MAX_POLICY_NEW_FLOWS, 0);

#[map]
pub static POLICY_FLOWS: LruHashMap<FlowKey, u64> =
    LruHashMap::with_max_entries(MAX_POLICY_FLOWS, 0);

#[map]
pub static POLICY_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static POLICY_DENIED: PerCpuHashMap<PolicyEndpointKey, u64> =
    PerCpuHashMap::with_max_entries(MAX_POLICY_ENDPOINTS * 2, 0);

#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::with_max_entries(MAX_SERVICES, 0);

#[map]
pub static BACKENDS: HashMap<BackendKey, Endpoint> =
    HashMap::with_max_entries(MAX_SERVICE_BACKENDS, 0);

#[map]
pub static SERVICE_FLOWS: LruHashMap<FlowKey, ServiceFlow> =
    LruHashMap::with_max_entries(MAX_SERVICE_FLOWS, 0);

#[map]
pub static SERVICE_REPLIES: LruHashMap<FlowKey, ServiceFlow> =
    LruHashMap::with_max_entries(MAX_SERVICE_FLOWS, 0);

#[map]
pub static SERVICES_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// Per-CPU scratch: a new service connection waiting for policy's word on its first packet
/// (not pinned: nothing outlives a program run in it).
#[map]
pub static SERVICE_PENDING: PerCpuArray<crate::ipv4::services::NewFlow> =
    PerCpuArray::with_max_entries(1, 0);
