//! Map layouts and counter indices shared by the eBPF programs and user space.
//!
//! Every type here is `#[repr(C)]` with no implicit padding (a padding byte in a key makes
//! lookups miss; in a value it leaks kernel memory into user space), and addresses stay in
//! network byte order as `[u8; N]`. The size tests at the bottom pin the layouts.

/// Map names, as the programs declare them and user space looks them up.
pub mod map_names {
    /// LPM trie: destination prefix -> [`NextHop`](super::NextHop).
    pub const ROUTES: &str = "ROUTES";
    /// Device hash map for XDP redirects: egress ifindex -> egress ifindex.
    pub const TX_PORTS: &str = "TX_PORTS";
    /// Hash set of this host's own IPv4 addresses (value unused): their packets go to the kernel.
    pub const HOST_ADDRS: &str = "HOST_ADDRS";
    /// Per-CPU array of `u64` counters indexed by [`counter_index`](super::counter_index).
    pub const COUNTERS: &str = "COUNTERS";
    /// Per-CPU hash: egress ifindex -> frames forwarded out of it.
    pub const FWD_BY_EGRESS: &str = "FWD_BY_EGRESS";
    /// One-entry array: this host's [`VxlanConfig`](super::VxlanConfig).
    pub const VXLAN_CONFIG: &str = "VXLAN_CONFIG";
    /// Hash set of the VNIs this host decapsulates (value unused).
    pub const VXLAN_VNIS: &str = "VXLAN_VNIS";
    /// Per-CPU array: nanoseconds spent in each softirq vector (the bench's CPU accounting).
    pub const SOFTIRQ_NS: &str = "SOFTIRQ_NS";
    /// Hash: (workload address, direction) -> [`PolicyEndpoint`](super::PolicyEndpoint), for
    /// the workloads under policy.
    pub const POLICIES: &str = "POLICIES";
    /// LPM trie: (ruleset, peer address) -> peer class: the most specific of the ruleset's
    /// CIDRs that holds the peer.
    pub const POLICY_PEERS: &str = "POLICY_PEERS";
    /// LPM trie: (ruleset, peer class, protocol bucket, port) -> [`POLICY_ALLOW`](super::POLICY_ALLOW)
    /// or [`POLICY_DENY`](super::POLICY_DENY).
    pub const POLICY_VERDICTS: &str = "POLICY_VERDICTS";
    /// LRU hash: flow ([`FlowKey`](super::FlowKey)) -> when it was last seen (ns): flows
    /// policy admitted, whose packets and replies pass without a rule of their own.
    pub const POLICY_FLOWS: &str = "POLICY_FLOWS";
    /// Per-CPU hash: (workload address, direction) -> packets denied by its policy.
    pub const POLICY_DENIED: &str = "POLICY_DENIED";
}

/// Program names as the object exports them.
pub mod program_names {
    pub const XDP_ROUTE: &str = "xdp_route";
    pub const TC_ROUTE: &str = "tc_route";
    /// An XDP program that passes everything: attached to a veth end so that frames
    /// XDP-redirected into its peer are delivered (see README, "Workload wiring").
    pub const XDP_PASS: &str = "xdp_pass";
    /// Raw tracepoint programs timing softirqs (bench only).
    pub const SOFTIRQ_ENTRY: &str = "softirq_entry";
    pub const SOFTIRQ_EXIT: &str = "softirq_exit";
}

/// Softirq vectors the kernel has (NR_SOFTIRQS) and the two of the network stack.
pub const SOFTIRQ_VECTORS: u32 = 10;
pub const SOFTIRQ_NET_TX: u32 = 2;
pub const SOFTIRQ_NET_RX: u32 = 3;

pub const MAX_ROUTES: u32 = 65_536;
pub const MAX_TX_PORTS: u32 = 4_096;
pub const MAX_HOST_ADDRS: u32 = 256;
pub const MAX_VNIS: u32 = 256;
pub const MAX_POLICY_ENDPOINTS: u32 = 16_384;
pub const MAX_POLICY_PEERS: u32 = 262_144;
pub const MAX_POLICY_VERDICTS: u32 = 524_288;
pub const MAX_POLICY_FLOWS: u32 = 262_144;

/// Policy directions: traffic to a workload, and from it.
pub const POLICY_INGRESS: u32 = 0;
pub const POLICY_EGRESS: u32 = 1;
/// Verdicts and default actions.
pub const POLICY_ALLOW: u32 = 1;
pub const POLICY_DENY: u32 = 2;
/// Protocol buckets of [`PolicyVerdictKey`]: TCP, UDP and ICMP by number, everything else here.
pub const POLICY_PROTO_OTHER: u8 = 255;
/// A flow idle this long is forgotten: its next packet meets the policy again.
pub const POLICY_FLOW_IDLE_NS: u64 = 300 * 1_000_000_000;

/// Key of `POLICIES` and `POLICY_DENIED`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct PolicyEndpointKey {
    /// The workload's address, network order.
    pub addr: [u8; 4],
    /// [`POLICY_INGRESS`] or [`POLICY_EGRESS`].
    pub direction: u32,
}

/// A workload's policy in one direction: which compiled ruleset, and what happens to traffic
/// no rule matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEndpoint {
    pub ruleset: u32,
    /// [`POLICY_ALLOW`] or [`POLICY_DENY`].
    pub default_action: u32,
}

/// Data of the `POLICY_PEERS` LPM key: the ruleset (big endian, always matched in full:
/// prefix lengths are 32 + the CIDR's) then the peer address.
pub type PolicyPeerKey = [u8; 8];

/// Data of the `POLICY_VERDICTS` LPM key: ruleset (4, big endian), peer class (4, big
/// endian), protocol bucket (1), destination port (2, big endian), one unused byte. Prefix
/// lengths are 72 + the port block's length: the port ranges of the rules are cut into
/// aligned blocks, so a lookup with the full 88 bits finds exactly one block or none.
pub type PolicyVerdictKey = [u8; 12];

/// A flow as `POLICY_FLOWS` keys it. ICMP echo uses the identifier as the requester's port
/// (request: `sport` = id, `dport` = 0; reply: the reverse), so a reply is its request's
/// reverse key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Kind of next hop, stored in [`NextHop::kind`].
pub const NEXTHOP_LOCAL: u32 = 1;
/// The next hop is another host reached over the underlay, routed (no encapsulation).
pub const NEXTHOP_REMOTE: u32 = 2;
/// The next hop is another host's VXLAN tunnel endpoint: encapsulate, then send on the underlay.
pub const NEXTHOP_VXLAN: u32 = 3;

/// Bytes VXLAN adds in front of the inner IP packet on the wire: outer Ethernet (14) is
/// replaced, so outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// IANA's VXLAN port; Flannel's vxlan backend uses 8472 (the Linux default before IANA's).
pub const VXLAN_DEFAULT_PORT: u16 = 4789;
/// TTL of the outer IPv4 header (the Linux vxlan driver's default when none is set).
pub const VXLAN_OUTER_TTL: u8 = 64;
/// UDP source ports come from this range (the Linux local port range the driver uses).
pub const VXLAN_SPORT_MIN: u16 = 32768;
pub const VXLAN_SPORT_MAX: u16 = 60999;

/// [`NextHop::flags`]: the egress is a veth whose peer is the workload. The TC program then
/// hands the packet straight to the peer's ingress (`bpf_redirect_peer`), skipping the host
/// side's transmit path.
pub const NH_FLAG_VETH_PEER: u32 = 1;

/// Where a route sends a packet: egress interface and the Ethernet addresses to write.
///
/// For [`NEXTHOP_VXLAN`], `dst_mac`/`src_mac` are the *inner* frame's (remote and local VTEP
/// MACs) and the `outer_*` fields describe the tunnel; for the other kinds those are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NextHop {
    pub ifindex: u32,
    /// [`NEXTHOP_LOCAL`], [`NEXTHOP_REMOTE`] or [`NEXTHOP_VXLAN`].
    pub kind: u32,
    /// `NH_FLAG_*` bits.
    pub flags: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Underlay next hop's MAC and the underlay interface's own.
    pub outer_dst_mac: [u8; 6],
    pub outer_src_mac: [u8; 6],
    pub outer_src_ip: [u8; 4],
    pub outer_dst_ip: [u8; 4],
    /// Second word of the VXLAN header as sent: VNI << 8, network order.
    pub vni_word: [u8; 4],
    /// UDP destination port, network order.
    pub udp_dport: [u8; 2],
    /// MTU of the underlay interface: an encapsulated packet must fit it.
    pub mtu: u16,
    /// One's-complement sum of every outer IPv4 header word but total length and checksum
    /// (see `checksum::ipv4_fixed_sum`): the program adds the length and folds.
    pub outer_csum_base: u32,
}

/// This host's VXLAN settings for decapsulation (slot 0 of `VXLAN_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VxlanConfig {
    /// UDP port, network order; 0 when VXLAN is off (nothing is decapsulated).
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

/// Data part of the LPM key: an IPv4 address in network byte order. The trie key is
/// `{ prefix_len: u32, addr }` (aya's `Key<[u8; 4]>` on both sides).
pub type Ipv4Key = [u8; 4];

/// Which program kind counted a packet: counters are kept apart per attach kind.
pub const HOOK_XDP: u32 = 0;
pub const HOOK_TC: u32 = 1;
pub const HOOK_COUNT: u32 = 2;

/// Counter slots. `PASS_*` are frames handed to the kernel untouched; `DROP_*` are frames
/// the programs refused. Every exit path of every program bumps exactly one of
/// `FORWARDED`, `PASS_*` or `DROP_*`, and every frame seen bumps `RX`.
pub mod counter {
    pub const RX: u32 = 0;
    pub const FORWARDED: u32 = 1;
    pub const PASS_ARP: u32 = 2;
    pub const PASS_NOT_IPV4: u32 = 3;
    pub const PASS_NOT_UNICAST: u32 = 4;
    pub const PASS_MALFORMED: u32 = 5;
    pub const PASS_IP_OPTIONS: u32 = 6;
    pub const PASS_HOST_ADDR: u32 = 7;
    pub const PASS_NO_ROUTE: u32 = 8;
    pub const PASS_TTL_EXPIRED: u32 = 9;
    pub const PASS_NO_TX_PORT: u32 = 10;
    pub const DROP_REDIRECT_ERROR: u32 = 11;
    /// An encapsulated packet would not fit the underlay MTU: passed to the kernel.
    pub const PASS_TOO_BIG: u32 = 12;
    /// VXLAN to this host's port with a header too short or without the I flag.
    pub const DROP_VXLAN_MALFORMED: u32 = 13;
    /// VXLAN for a VNI this host does not serve.
    pub const DROP_VXLAN_UNKNOWN_VNI: u32 = 14;
    /// Decapsulated, but the inner packet is not IPv4 unicast for a local workload.
    pub const DROP_VXLAN_INNER: u32 = 15;
    /// Adjusting the packet for (de)encapsulation failed in the kernel helper.
    pub const DROP_ADJUST_FAILED: u32 = 16;
    /// Informational, on top of `FORWARDED`: frames encapsulated, and decapsulated.
    pub const VXLAN_ENCAP: u32 = 17;
    pub const VXLAN_DECAP: u32 = 18;
    /// Denied by the destination workload's ingress policy, or the source's egress policy.
    pub const DROP_POLICY_INGRESS: u32 = 19;
    pub const DROP_POLICY_EGRESS: u32 = 20;
    /// A fragment, or a packet too short for its ports, to or from a workload under policy:
    /// its ports cannot be checked, so it is refused.
    pub const DROP_POLICY_UNCHECKABLE: u32 = 21;
    /// Informational: flows admitted by policy (recorded in `POLICY_FLOWS`), and packets
    /// passed as part of a recorded flow or its replies.
    pub const POLICY_NEW_FLOW: u32 = 22;
    pub const POLICY_ESTABLISHED: u32 = 23;
    pub const COUNT: u32 = 24;

    /// Names as `loader stats` prints them, indexed by slot.
    pub const NAMES: [&str; COUNT as usize] = [
        "rx",
        "forwarded",
        "pass_arp",
        "pass_not_ipv4",
        "pass_not_unicast",
        "pass_malformed",
        "pass_ip_options",
        "pass_host_addr",
        "pass_no_route",
        "pass_ttl_expired",
        "pass_no_tx_port",
        "drop_redirect_error",
        "pass_too_big",
        "drop_vxlan_malformed",
        "drop_vxlan_unknown_vni",
        "drop_vxlan_inner",
        "drop_adjust_failed",
        "vxlan_encap",
        "vxlan_decap",
        "drop_policy_ingress",
        "drop_policy_egress",
        "drop_policy_uncheckable",
        "policy_new_flow",
        "policy_established",
    ];
}

/// Index into the `COUNTERS` array for a hook and a counter slot.
#[inline(always)]
pub const fn counter_index(hook: u32, counter: u32) -> u32 {
    hook * counter::COUNT + counter
}

pub const COUNTERS_LEN: u32 = HOOK_COUNT * counter::COUNT;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `NextHop` is `repr(C)`, has no padding (see the size test) and every bit
    // pattern of its fields is valid.
    unsafe impl aya::Pod for super::NextHop {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VxlanConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyEndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyEndpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn next_hop_layout_has_no_padding() {
        assert_eq!(
            size_of::<NextHop>(),
            4 + 4 + 4 + 6 + 6 + 6 + 6 + 4 + 4 + 4 + 2 + 2 + 4
        );
        assert_eq!(align_of::<NextHop>(), 4);
        assert_eq!(core::mem::offset_of!(NextHop, dst_mac), 12);
        assert_eq!(core::mem::offset_of!(NextHop, src_mac), 18);
        assert_eq!(core::mem::offset_of!(NextHop, outer_dst_mac), 24);
        assert_eq!(core::mem::offset_of!(NextHop, outer_src_ip), 36);
        assert_eq!(core::mem::offset_of!(NextHop, vni_word), 44);
        assert_eq!(core::mem::offset_of!(NextHop, udp_dport), 48);
        assert_eq!(core::mem::offset_of!(NextHop, mtu), 50);
        assert_eq!(core::mem::offset_of!(NextHop, outer_csum_base), 52);
    }

    #[test]
    fn policy_layouts_have_no_padding() {
        assert_eq!(size_of::<PolicyEndpointKey>(), 8);
        assert_eq!(size_of::<PolicyEndpoint>(), 8);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(core::mem::offset_of!(FlowKey, proto), 12);
    }

    #[test]
    fn vxlan_config_layout_has_no_padding() {
        assert_eq!(size_of::<VxlanConfig>(), 4);
    }

    #[test]
    fn counter_names_cover_every_slot_once() {
        let mut names = counter::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), counter::COUNT as usize);
        assert_eq!(counter::NAMES[counter::FORWARDED as usize], "forwarded");
        assert_eq!(
            counter::NAMES[counter::DROP_REDIRECT_ERROR as usize],
            "drop_redirect_error"
        );
    }

    #[test]
    fn counter_indices_do_not_overlap_between_hooks() {
        assert_eq!(
            counter_index(HOOK_XDP, counter::COUNT - 1) + 1,
            counter_index(HOOK_TC, 0)
        );
        assert_eq!(counter_index(HOOK_TC, counter::COUNT - 1) + 1, COUNTERS_LEN);
    }
}
