//! Names and capacities of the routing object's maps and programs, as the programs declare
//! them and user space looks them up.

/// Map names.
pub mod map_names {
    /// LPM trie: destination prefix -> [`NextHop`](crate::NextHop).
    pub const ROUTES: &str = "ROUTES";
    /// Hash: a workload interface's ifindex -> the address of its workload's /32 route (network
    /// order): the source check's first, cheaper question (a hash, not the route trie); any
    /// other source of the interface is asked of the route trie.
    pub const WORKLOAD_SRCS: &str = "WORKLOAD_SRCS";
    /// Device hash map for XDP redirects: egress ifindex -> egress ifindex.
    pub const TX_PORTS: &str = "TX_PORTS";
    /// Hash set of this host's own IPv4 addresses (value unused): their packets go to the kernel.
    pub const HOST_ADDRS: &str = "HOST_ADDRS";
    /// Per-CPU array of `u64` counters indexed by [`counter_index`](crate::counter_index).
    pub const COUNTERS: &str = "COUNTERS";
    /// Per-CPU array: egress slot ([`NextHop::egress_slot`](crate::NextHop::egress_slot)) ->
    /// [`EgressCount`](crate::counters::EgressCount), the frames forwarded out of the
    /// interface the slot is given to. An array, not a hash keyed by ifindex: the count is one
    /// add at an address the next hop already names, with no hashing and no insert on a
    /// CPU's first frame.
    pub const FWD_BY_EGRESS: &str = "FWD_BY_EGRESS";
    /// One-entry array: this host's [`VxlanConfig`](crate::vxlan::VxlanConfig).
    pub const VXLAN_CONFIG: &str = "VXLAN_CONFIG";
    /// Hash set of the VNIs this host decapsulates (value unused).
    pub const VXLAN_VNIS: &str = "VXLAN_VNIS";
    /// Hash set of the underlay addresses (network order) this host accepts VXLAN from: the
    /// hosts its routes lead to, as next hop or VTEP (value unused).
    pub const VXLAN_VTEPS: &str = "VXLAN_VTEPS";
    /// Hash: (workload address, direction) -> [`PolicyEndpoint`](crate::policy::PolicyEndpoint),
    /// for the workloads under policy.
    pub const POLICIES: &str = "POLICIES";
    /// LPM trie: (ruleset, peer address) -> peer class: the most specific of the ruleset's
    /// CIDRs that holds the peer.
    pub const POLICY_PEERS: &str = "POLICY_PEERS";
    /// LPM trie: (ruleset, peer class, protocol bucket, port) ->
    /// [`POLICY_ALLOW`](crate::policy::POLICY_ALLOW) or [`POLICY_DENY`](crate::policy::POLICY_DENY).
    pub const POLICY_VERDICTS: &str = "POLICY_VERDICTS";
    /// LRU hash: flow ([`FlowKey`](crate::policy::FlowKey)) -> when it was last seen (ns):
    /// flows policy admitted that have seen a reply, whose packets and replies pass without a
    /// rule of their own.
    pub const POLICY_FLOWS: &str = "POLICY_FLOWS";
    /// LRU hash, as `POLICY_FLOWS`, for admitted flows that have not seen a reply yet: a flood
    /// of new flows evicts only these, never a flow with replies.
    pub const POLICY_NEWFLOWS: &str = "POLICY_NEWFLOWS";
    /// Per-CPU hash: (workload address, direction) -> packets denied by its policy.
    pub const POLICY_DENIED: &str = "POLICY_DENIED";
    /// One-entry array: how many entries `POLICIES` holds. At 0 (no workload on this host
    /// under policy) the programs skip the policy stage's lookups altogether.
    pub const POLICY_ACTIVE: &str = "POLICY_ACTIVE";
    /// Hash: [`ServiceKey`](crate::services::ServiceKey) ->
    /// [`ServiceValue`](crate::services::ServiceValue): the services, by virtual address,
    /// port and protocol.
    pub const SERVICES: &str = "SERVICES";
    /// Hash: [`BackendKey`](crate::services::BackendKey) ->
    /// [`Endpoint`](crate::services::Endpoint): each service's backends, by index.
    pub const BACKENDS: &str = "BACKENDS";
    /// LRU hash: a client's flow to a service (`FlowKey`, destination the service) ->
    /// [`ServiceFlow`](crate::services::ServiceFlow) naming the backend it goes to.
    pub const SERVICE_FLOWS: &str = "SERVICE_FLOWS";
    /// LRU hash: a backend's reply flow (`FlowKey`, source the backend) ->
    /// [`ServiceFlow`](crate::services::ServiceFlow) naming the service address the client
    /// connected to, which the reply's source becomes.
    pub const SERVICE_REPLIES: &str = "SERVICE_REPLIES";
    /// One-entry array: how many services `SERVICES` holds. At 0 the programs skip the
    /// service lookups altogether.
    pub const SERVICES_ACTIVE: &str = "SERVICES_ACTIVE";
}

/// Program names as the object exports them.
pub mod program_names {
    /// The routing programs, one per hook and role of the interface they are attached to:
    /// frames from a workload, or from the underlay (other hosts, the outside).
    pub const XDP_WORKLOAD: &str = "xdp_workload";
    pub const XDP_UNDERLAY: &str = "xdp_underlay";
    pub const TC_WORKLOAD: &str = "tc_workload";
    pub const TC_UNDERLAY: &str = "tc_underlay";
    pub const ROUTING: [&str; 4] = [XDP_WORKLOAD, XDP_UNDERLAY, TC_WORKLOAD, TC_UNDERLAY];
    /// An XDP program that passes everything: attached to a veth end so that frames
    /// XDP-redirected into its peer are delivered (see README, "Workload wiring").
    pub const XDP_PASS: &str = "xdp_pass";
}

pub const MAX_ROUTES: u32 = 65_536;
pub const MAX_TX_PORTS: u32 = 4_096;
/// Twice the egress interfaces: a new egress always finds a slot that no route in the map
/// still names, so no frame of a departing egress is ever counted for its successor.
pub const MAX_EGRESS_SLOTS: u32 = 2 * MAX_TX_PORTS;
pub const MAX_HOST_ADDRS: u32 = 256;
pub const MAX_VNIS: u32 = 256;
pub const MAX_VTEPS: u32 = 16_384;
pub const MAX_POLICY_ENDPOINTS: u32 = 16_384;
pub const MAX_POLICY_PEERS: u32 = 262_144;
pub const MAX_POLICY_VERDICTS: u32 = 524_288;
pub const MAX_POLICY_FLOWS: u32 = 262_144;
pub const MAX_POLICY_NEW_FLOWS: u32 = 262_144;
/// Default capacities of the service maps (each can be set at load: `loader run
/// --max-services`, `--max-service-backends`, `--max-service-flows`).
pub const MAX_SERVICES: u32 = 65_536;
pub const MAX_SERVICE_BACKENDS: u32 = 262_144;
pub const MAX_SERVICE_FLOWS: u32 = 262_144;
