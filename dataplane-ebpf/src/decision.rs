//! What the programs decide for a frame, before they act on it.
use dataplane_common::{Counter, NextHop, policy::FlowKey, services::ServiceValue};

use crate::parse::{EthHdr, Ipv4Hdr};

/// The decision of `route` (and of `vxlan::classify` for tunnel traffic to this host).
pub enum Decision {
    /// Hand the frame to the kernel untouched, counted under this `Pass*` slot.
    Pass(Counter),
    /// Hand this IPv4 packet to the kernel, counted under `reason`, if policy allows: the
    /// kernel may forward it, to or from a workload under policy.
    ToKernel { reason: Counter, ip: *mut Ipv4Hdr },
    /// Drop the frame, counted under this `Drop*` slot.
    Drop(Counter),
    /// VXLAN for this host: remove the first `strip` bytes (everything before the inner
    /// Ethernet header), then route the inner frame to a local workload.
    Decap { strip: usize },
    /// A workload's TCP or UDP `flow` (IPv4 header at `ip`) to `service`: give it its
    /// backend, then route again.
    ToService {
        service: ServiceValue,
        flow: FlowKey,
        ip: *mut Ipv4Hdr,
    },
    /// Forward to `nh`. The frame is not modified yet: the packet path rewrites it
    /// (`route::rewrite`) once policy has admitted it and its redirect is set up, so that a
    /// refused frame or a failed redirect leaves it untouched.
    Forward {
        nh: NextHop,
        eth: *mut EthHdr,
        ip: *mut Ipv4Hdr,
    },
}
