//! The `COUNTERS` slots: one per (hook, [`Counter`]).
//!
//! Every exit path of every routing program bumps exactly one of [`Counter::Forwarded`], a
//! `Pass*` slot (handed to the kernel untouched), a `Drop*` slot (refused) or a `Reply*` slot
//! (answered in its place), and every frame seen bumps [`Counter::Rx`]. The informational slots
//! count on top of those.

/// Which program kind counted a packet: counters are kept apart per attach kind.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Xdp = 0,
    Tc = 1,
}

impl Hook {
    pub const COUNT: u32 = 2;
    pub const ALL: [Hook; Self::COUNT as usize] = [Hook::Xdp, Hook::Tc];

    /// The name `loader stats` and the metrics use.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        }
    }

    pub fn from_u32(n: u32) -> Option<Self> {
        Self::ALL.get(n as usize).copied()
    }
}

/// A counter slot: why a frame left a program the way it did.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    Rx = 0,
    Forwarded = 1,
    PassArp = 2,
    PassNotIpv4 = 3,
    PassNotUnicast = 4,
    PassMalformed = 5,
    PassIpOptions = 6,
    PassHostAddr = 7,
    PassNoRoute = 8,
    PassTtlExpired = 9,
    PassNoTxPort = 10,
    DropRedirectError = 11,
    /// An encapsulated packet without DF would not fit the underlay MTU: passed to the kernel
    /// (which would have to fragment it; with DF the programs answer, see `ReplyFragNeeded`).
    PassTooBig = 12,
    /// VXLAN to this host's port with a header too short or without the I flag.
    DropVxlanMalformed = 13,
    /// VXLAN for a VNI this host does not serve.
    DropVxlanUnknownVni = 14,
    /// Decapsulated, but the inner packet is not IPv4 unicast for a local workload.
    DropVxlanInner = 15,
    /// Adjusting the packet for (de)encapsulation failed in the kernel helper.
    DropAdjustFailed = 16,
    /// Informational, on top of `Forwarded`: frames encapsulated, and decapsulated.
    VxlanEncap = 17,
    VxlanDecap = 18,
    /// Denied by the destination workload's ingress policy, or the source's egress policy.
    DropPolicyIngress = 19,
    DropPolicyEgress = 20,
    /// A fragment, or a packet too short for its ports, to or from a workload under policy:
    /// its ports cannot be checked, so it is refused.
    DropPolicyUncheckable = 21,
    /// Informational: flows admitted by policy (recorded in `POLICY_FLOWS`), and packets
    /// passed as part of a recorded flow or its replies.
    PolicyNewFlow = 22,
    PolicyEstablished = 23,
    /// From a workload interface, an IPv4 source the route table does not give that
    /// interface's workload.
    DropSpoofedSource = 24,
    /// VXLAN to this host's VTEP from an underlay address that is no known tunnel endpoint.
    DropVxlanUnknownVtep = 25,
    /// A frame the kernel took a VLAN tag off before the program ran (TC): the host's VLAN
    /// devices take it.
    PassVlanTagged = 26,
    /// From a workload interface, neither IPv4 nor ARP (IPv6, VLAN-tagged, anything else).
    DropNotIpFromWorkload = 27,
    /// To or from a workload under policy, a frame the programs cannot police and would
    /// otherwise hand to the kernel (IPv4 options, an egress missing from the device map).
    DropPolicyBypass = 28,
    /// A DF packet too big for the tunnel: answered with ICMP "fragmentation needed" (with the
    /// tunnel's MTU) sent back to its source, so path MTU discovery works.
    ReplyFragNeeded = 29,
    /// Informational: a workload's new connection to a service, sent to the backend drawn
    /// for it (recorded in `SERVICE_FLOWS`), and a packet of a known one.
    ServiceNewFlow = 30,
    ServiceEstablished = 31,
    /// Informational: a backend's reply given its service's address as source.
    ServiceReply = 32,
    /// To a service, but its backend could not be found (the service changed under the
    /// packet), or the flow could not be recorded: refused, the client retries.
    DropServiceNoBackend = 33,
}

impl Counter {
    pub const COUNT: u32 = 34;

    /// Every slot, in slot order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Rx,
        Counter::Forwarded,
        Counter::PassArp,
        Counter::PassNotIpv4,
        Counter::PassNotUnicast,
        Counter::PassMalformed,
        Counter::PassIpOptions,
        Counter::PassHostAddr,
        Counter::PassNoRoute,
        Counter::PassTtlExpired,
        Counter::PassNoTxPort,
        Counter::DropRedirectError,
        Counter::PassTooBig,
        Counter::DropVxlanMalformed,
        Counter::DropVxlanUnknownVni,
        Counter::DropVxlanInner,
        Counter::DropAdjustFailed,
        Counter::VxlanEncap,
        Counter::VxlanDecap,
        Counter::DropPolicyIngress,
        Counter::DropPolicyEgress,
        Counter::DropPolicyUncheckable,
        Counter::PolicyNewFlow,
        Counter::PolicyEstablished,
        Counter::DropSpoofedSource,
        Counter::DropVxlanUnknownVtep,
        Counter::PassVlanTagged,
        Counter::DropNotIpFromWorkload,
        Counter::DropPolicyBypass,
        Counter::ReplyFragNeeded,
        Counter::ServiceNewFlow,
        Counter::ServiceEstablished,
        Counter::ServiceReply,
        Counter::DropServiceNoBackend,
    ];

    /// The name `loader stats`, the metrics and the programs' log records use.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Rx => "rx",
            Counter::Forwarded => "forwarded",
            Counter::PassArp => "pass_arp",
            Counter::PassNotIpv4 => "pass_not_ipv4",
            Counter::PassNotUnicast => "pass_not_unicast",
            Counter::PassMalformed => "pass_malformed",
            Counter::PassIpOptions => "pass_ip_options",
            Counter::PassHostAddr => "pass_host_addr",
            Counter::PassNoRoute => "pass_no_route",
            Counter::PassTtlExpired => "pass_ttl_expired",
            Counter::PassNoTxPort => "pass_no_tx_port",
            Counter::DropRedirectError => "drop_redirect_error",
            Counter::PassTooBig => "pass_too_big",
            Counter::DropVxlanMalformed => "drop_vxlan_malformed",
            Counter::DropVxlanUnknownVni => "drop_vxlan_unknown_vni",
            Counter::DropVxlanInner => "drop_vxlan_inner",
            Counter::DropAdjustFailed => "drop_adjust_failed",
            Counter::VxlanEncap => "vxlan_encap",
            Counter::VxlanDecap => "vxlan_decap",
            Counter::DropPolicyIngress => "drop_policy_ingress",
            Counter::DropPolicyEgress => "drop_policy_egress",
            Counter::DropPolicyUncheckable => "drop_policy_uncheckable",
            Counter::PolicyNewFlow => "policy_new_flow",
            Counter::PolicyEstablished => "policy_established",
            Counter::DropSpoofedSource => "drop_spoofed_source",
            Counter::DropVxlanUnknownVtep => "drop_vxlan_unknown_vtep",
            Counter::PassVlanTagged => "pass_vlan_tagged",
            Counter::DropNotIpFromWorkload => "drop_not_ip_from_workload",
            Counter::DropPolicyBypass => "drop_policy_bypass",
            Counter::ReplyFragNeeded => "reply_frag_needed",
            Counter::ServiceNewFlow => "service_new_flow",
            Counter::ServiceEstablished => "service_established",
            Counter::ServiceReply => "service_reply",
            Counter::DropServiceNoBackend => "drop_service_no_backend",
        }
    }

    pub fn from_u32(n: u32) -> Option<Self> {
        Self::ALL.get(n as usize).copied()
    }
}

/// Index into the `COUNTERS` array for a hook and a counter slot.
#[inline(always)]
pub const fn counter_index(hook: Hook, counter: Counter) -> u32 {
    hook as u32 * Counter::COUNT + counter as u32
}

pub const COUNTERS_LEN: u32 = Hook::COUNT * Counter::COUNT;

/// One slot of `FWD_BY_EGRESS` on one CPU: the frames this CPU forwarded out of the interface
/// the slot is given to. User space writes `ifindex` (with `packets` zeroed) on every CPU when
/// it gives the slot to an interface, and 0 when it takes it back; the programs only add to
/// `packets`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressCount {
    pub packets: u64,
    /// The interface the slot counts for; 0: the slot is free.
    pub ifindex: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, no implicit padding (see the size test), every bit pattern valid.
unsafe impl aya::Pod for EgressCount {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_cover_every_slot_once() {
        let mut names: std::vec::Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::COUNT as usize);
        for (slot, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, slot, "{counter:?} out of slot order");
        }
        assert_eq!(Counter::Forwarded.name(), "forwarded");
        assert_eq!(Counter::DropRedirectError.name(), "drop_redirect_error");
    }

    #[test]
    fn counter_indices_do_not_overlap_between_hooks() {
        assert_eq!(
            counter_index(Hook::Xdp, Counter::DropServiceNoBackend) + 1,
            counter_index(Hook::Tc, Counter::Rx)
        );
        assert_eq!(
            counter_index(Hook::Tc, Counter::DropServiceNoBackend) + 1,
            COUNTERS_LEN
        );
    }

    #[test]
    fn egress_count_layout_has_no_padding() {
        assert_eq!(core::mem::size_of::<EgressCount>(), 8 + 4 + 4);
        assert_eq!(core::mem::offset_of!(EgressCount, ifindex), 8);
    }
}
