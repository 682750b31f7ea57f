//! The `COUNTERS` slots: one per (hook, [`Counter`]).
//!
//! Every exit path of every routing program bumps exactly one of [`Counter::Forwarded`], a
//! `Pass*` slot (handed to the kernel untouched), a `Drop*` slot (refused) or a `Reply*` slot
//! (answered in its place), and every frame seen bumps [`Counter::Rx`]. The informational slots
//! count on top of those.

/// Writes out a `#[repr(u32)]` enum of numbered, named slots from ONE table of rows
/// `/// doc` `Variant = number => "name",` and, from the same rows: the enum, `COUNT`, `ALL`
/// (every variant, in number order), `name()` and `from_u32()`. It also checks at compile time
/// that the numbers are exactly `0..COUNT` in row order and that no name is used twice.
///
/// The numbers are an ABI (the programs index `COUNTERS` with them, user space reads the slots
/// back, the programs' log records carry them) and the names are the metric names: rows are
/// only ever appended, never renumbered or renamed.
macro_rules! numbered_slots {
    (
        $(#[$enum_meta:meta])*
        pub enum $Enum:ident {
            $( $(#[doc = $doc:literal])+ $variant:ident = $n:literal => $name:literal, )+
        }
    ) => {
        $(#[$enum_meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub enum $Enum {
            $( $(#[doc = $doc])+ $variant = $n, )+
        }

        impl $Enum {
            /// How many there are; their numbers are `0..COUNT`.
            pub const COUNT: u32 = [$($name),+].len() as u32;

            /// Every one, in number order.
            pub const ALL: [$Enum; Self::COUNT as usize] = [$($Enum::$variant),+];

            /// The name `loader stats`, the metrics and the programs' log reader use.
            pub const fn name(self) -> &'static str {
                match self {
                    $($Enum::$variant => $name,)+
                }
            }

            /// The one numbered `n`, if any.
            pub fn from_u32(n: u32) -> Option<Self> {
                Self::ALL.get(n as usize).copied()
            }
        }

        // The table's invariants, checked when the crate compiles (the programs' build too).
        const _: () = {
            let mut i = 0;
            while i < $Enum::ALL.len() {
                assert!(
                    $Enum::ALL[i] as usize == i,
                    "slot numbers must be 0..COUNT in row order"
                );
                let mut j = 0;
                while j < i {
                    assert!(
                        !str_eq($Enum::ALL[i].name(), $Enum::ALL[j].name()),
                        "slot names must be unique"
                    );
                    j += 1;
                }
                i += 1;
            }
        };
    };
}

/// `a == b`, in a const context.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

numbered_slots! {
    /// Which program kind counted a packet: counters are kept apart per attach kind.
    pub enum Hook {
        /// The XDP programs.
        Xdp = 0 => "xdp",
        /// The TC (sched_cls) programs.
        Tc = 1 => "tc",
    }
}

// THE counter table. What must change with it:
// - the eBPF programs (`dataplane-ebpf`), which count under these variants;
// - the metrics (`loader/src/metrics.rs`) and `loader stats`, which read the names (through
//   `dataplane::kernel::inspect`), and the log reader (`dataplane::kernel::program_log`);
// - the docs' counter list (docs/design.md), and tests that read counters by name.
// Append new rows at the end with the next number; never renumber or rename a row.
numbered_slots! {
    /// A counter slot: why a frame left a program the way it did.
    pub enum Counter {
        /// Every frame a program saw.
        Rx = 0 => "rx",
        /// Redirected to its next hop (encapsulated or not).
        Forwarded = 1 => "forwarded",
        /// ARP, handed to the kernel.
        PassArp = 2 => "pass_arp",
        /// From the underlay, anything not IPv4, handed to the kernel.
        PassNotIpv4 = 3 => "pass_not_ipv4",
        /// A broadcast or multicast destination MAC, handed to the kernel.
        PassNotUnicast = 4 => "pass_not_unicast",
        /// A frame too short for its headers, or an IPv4 header that does not hold together.
        PassMalformed = 5 => "pass_malformed",
        /// IPv4 options, handed to the kernel (nobody under policy at either end).
        PassIpOptions = 6 => "pass_ip_options",
        /// To one of the host's own addresses.
        PassHostAddr = 7 => "pass_host_addr",
        /// No route matches the destination.
        PassNoRoute = 8 => "pass_no_route",
        /// TTL <= 1: the kernel sends ICMP time exceeded.
        PassTtlExpired = 9 => "pass_ttl_expired",
        /// XDP: the egress is missing from the device map (the frame is untouched).
        PassNoTxPort = 10 => "pass_no_tx_port",
        /// TC: the redirect helper refused.
        DropRedirectError = 11 => "drop_redirect_error",
        /// An encapsulated packet without DF would not fit the underlay MTU: passed to the kernel
        /// (which would have to fragment it; with DF the programs answer, see `ReplyFragNeeded`).
        PassTooBig = 12 => "pass_too_big",
        /// VXLAN to this host's port with a header too short or without the I flag.
        DropVxlanMalformed = 13 => "drop_vxlan_malformed",
        /// VXLAN for a VNI this host does not serve.
        DropVxlanUnknownVni = 14 => "drop_vxlan_unknown_vni",
        /// Decapsulated, but the inner packet is not IPv4 unicast for a local workload.
        DropVxlanInner = 15 => "drop_vxlan_inner",
        /// Adjusting the packet for (de)encapsulation failed in the kernel helper.
        DropAdjustFailed = 16 => "drop_adjust_failed",
        /// Informational, on top of `Forwarded`: frames encapsulated.
        VxlanEncap = 17 => "vxlan_encap",
        /// Informational: frames decapsulated.
        VxlanDecap = 18 => "vxlan_decap",
        /// Denied by the destination workload's ingress policy.
        DropPolicyIngress = 19 => "drop_policy_ingress",
        /// Denied by the source workload's egress policy.
        DropPolicyEgress = 20 => "drop_policy_egress",
        /// A fragment, or a packet too short for its ports, to or from a workload under policy:
        /// its ports cannot be checked, so it is refused.
        DropPolicyUncheckable = 21 => "drop_policy_uncheckable",
        /// Informational: flows admitted by policy (recorded in `POLICY_FLOWS`).
        PolicyNewFlow = 22 => "policy_new_flow",
        /// Informational: packets passed as part of a recorded flow or its replies.
        PolicyEstablished = 23 => "policy_established",
        /// From a workload interface, an IPv4 source the route table does not give that
        /// interface's workload.
        DropSpoofedSource = 24 => "drop_spoofed_source",
        /// VXLAN to this host's VTEP from an underlay address that is no known tunnel endpoint.
        DropVxlanUnknownVtep = 25 => "drop_vxlan_unknown_vtep",
        /// A frame the kernel took a VLAN tag off before the program ran (TC): the host's VLAN
        /// devices take it.
        PassVlanTagged = 26 => "pass_vlan_tagged",
        /// From a workload interface, neither IPv4 nor ARP (IPv6, VLAN-tagged, anything else).
        DropNotIpFromWorkload = 27 => "drop_not_ip_from_workload",
        /// To or from a workload under policy, a frame the programs cannot police and would
        /// otherwise hand to the kernel (IPv4 options, an egress missing from the device map).
        DropPolicyBypass = 28 => "drop_policy_bypass",
        /// A DF packet too big for the tunnel: answered with ICMP "fragmentation needed" (with
        /// the tunnel's MTU) sent back to its source, so path MTU discovery works.
        ReplyFragNeeded = 29 => "reply_frag_needed",
        /// Informational: a workload's new connection to a service, sent to the backend drawn
        /// for it (recorded in `SERVICE_FLOWS`).
        ServiceNewFlow = 30 => "service_new_flow",
        /// Informational: a packet of a known connection to a service.
        ServiceEstablished = 31 => "service_established",
        /// Informational: a backend's reply given its service's address as source.
        ServiceReply = 32 => "service_reply",
        /// To a service, but its backend could not be found (the service changed under the
        /// packet), or the flow could not be recorded: refused, the client retries.
        DropServiceNoBackend = 33 => "drop_service_no_backend",
        /// From a workload, an ARP frame that is not IPv4-over-Ethernet ARP, or whose sender
        /// address is not the workload's own (nor 0.0.0.0, a probe): it would plant a
        /// neighbour on the host for an address that is not the workload's.
        DropArpFromWorkload = 34 => "drop_arp_from_workload",
        /// From a workload, an IPv4 packet in a broadcast or multicast frame: the kernel would
        /// take it (for its own addresses too) with no source check and no egress rule on the
        /// way. A workload speaks unicast IPv4 and ARP.
        DropNotUnicastFromWorkload = 35 => "drop_not_unicast_from_workload",
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
    fn slots_are_numbered_in_order_with_unique_names() {
        let numbers: std::vec::Vec<u32> = Counter::ALL.iter().map(|c| *c as u32).collect();
        assert_eq!(numbers, (0..Counter::COUNT).collect::<std::vec::Vec<_>>());
        for (n, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(Counter::from_u32(n as u32), Some(*counter));
        }
        assert_eq!(Counter::from_u32(Counter::COUNT), None);
        let hooks: std::vec::Vec<&str> = Hook::ALL.iter().map(|h| h.name()).collect();
        assert_eq!(hooks, ["xdp", "tc"]);
        assert_eq!(Hook::from_u32(1), Some(Hook::Tc));
        // Numbers and names are an ABI: a few pinned, first, last and in between.
        assert_eq!(Counter::COUNT, 36);
        assert_eq!(Counter::Rx as u32, 0);
        assert_eq!(Counter::PassTooBig as u32, 12);
        assert_eq!(Counter::PassTooBig.name(), "pass_too_big");
        assert_eq!(Counter::DropServiceNoBackend as u32, 33);
        assert_eq!(
            Counter::DropServiceNoBackend.name(),
            "drop_service_no_backend"
        );
        assert_eq!(Counter::DropNotUnicastFromWorkload as u32, 35);
        assert_eq!(
            Counter::DropNotUnicastFromWorkload.name(),
            "drop_not_unicast_from_workload"
        );
    }

    #[test]
    fn counter_indices_do_not_overlap_between_hooks() {
        let last = Counter::ALL[Counter::ALL.len() - 1];
        assert_eq!(
            counter_index(Hook::Xdp, last) + 1,
            counter_index(Hook::Tc, Counter::Rx)
        );
        assert_eq!(counter_index(Hook::Tc, last) + 1, COUNTERS_LEN);
    }

    #[test]
    fn egress_count_layout_has_no_padding() {
        assert_eq!(core::mem::size_of::<EgressCount>(), 8 + 4 + 4);
        assert_eq!(core::mem::offset_of!(EgressCount, ifindex), 8);
    }
}
