//! Policy maps: workloads under policy, their compiled rules, and the flows they admitted.

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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each is `repr(C)`, has no padding (see the size tests) and every bit pattern of
    // its fields is valid.
    unsafe impl aya::Pod for super::PolicyEndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PolicyEndpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn policy_layouts_have_no_padding() {
        assert_eq!(size_of::<PolicyEndpointKey>(), 8);
        assert_eq!(size_of::<PolicyEndpoint>(), 8);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(core::mem::offset_of!(FlowKey, proto), 12);
    }
}
