//! What the IPv4 route step decides for a frame, before the path acts on it.
use dataplane_common::{Counter, NextHop, policy::FlowKey, services::ServiceValue};

/// The decision of `route` (and of `vxlan::classify` for tunnel traffic to this host). It
/// holds no reference into the frame: each step that acts on it re-derives the headers it
/// reads or writes from the frame as it is then (the IPv4 header is at `IP_AT`), so that no
/// reference outlives a helper that moves or rewrites the frame.
pub enum Decision {
    /// Hand the frame to the kernel untouched, counted under this `Pass*` slot.
    Pass(Counter),
    /// Hand this IPv4 packet to the kernel, counted under `reason`, if policy allows: the
    /// kernel may forward it, to or from a workload under policy.
    ToKernel { reason: Counter },
    /// Drop the frame, counted under this `Drop*` slot.
    Drop(Counter),
    /// VXLAN for this host: remove the first `strip` bytes (everything before the inner
    /// Ethernet header), then route the inner frame to a local workload.
    Decap { strip: usize },
    /// A workload's TCP or UDP `flow` to `service`: give it its backend, then route again.
    ToService {
        service: ServiceValue,
        flow: FlowKey,
    },
    /// Forward to `nh`. The frame is not modified yet: the packet path rewrites it
    /// (`route::rewrite`) once policy has admitted it and its redirect is set up, so that a
    /// refused frame or a failed redirect leaves it untouched.
    Forward { nh: NextHop },
}
