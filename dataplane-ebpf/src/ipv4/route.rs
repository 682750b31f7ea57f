//! The IPv4 routing decision: classify what the kernel must keep, look the destination up,
//! and rewrite for the next hop.
use aya_ebpf::maps::lpm_trie::Key;
use dataplane_common::{Counter, NextHop, NextHopKind};

use super::{Decision, EthHdr, Ipv4Hdr, decrement_ttl, header, services};
use crate::{
    maps::{HOST_ADDRS, ROUTES, WORKLOAD_SRCS},
    parse::Frame,
    path::{Ingress, Pass, Role, set_macs},
    vxlan,
};

/// Decides what to do with the IPv4 frame in `frame` (its Ethernet step passed: unicast IPv4)
/// that arrived on `from`; `frame_len` is its full length (at TC the bytes in `frame` can be
/// fewer); `pass`: which routing of the frame this is.
#[inline(always)]
pub fn route(frame: Frame, frame_len: usize, from: Ingress, pass: Pass) -> Decision {
    // SAFETY: `frame` is current (every `Frame` is: see `parse::Frame`); `ip` is only read,
    // while only map lookups run, and nothing holds a `&mut` into the frame meanwhile.
    let Some((ip, header_len)) = (unsafe { header(frame, frame_len) }) else {
        return Decision::Pass(Counter::PassMalformed);
    };
    let (ttl, src, dst) = (ip.ttl, ip.src_addr, ip.dst_addr);
    if from.role == Role::Workload && pass != Pass::Translated && !source_belongs(src, from.ifindex)
    {
        return Decision::Drop(Counter::DropSpoofedSource);
    }
    if header_len != Ipv4Hdr::LEN && from.role == Role::Workload {
        return Decision::ToKernel {
            reason: Counter::PassIpOptions,
        };
    }
    if from.role == Role::Workload
        && pass == Pass::Arrived
        && crate::services::in_use()
        && let Some(flow) = services::flow_of(ip, frame)
        && let Some(service) = services::service_of(&flow)
    {
        return Decision::ToService { service, flow };
    }
    if pass != Pass::Decapsulated && HOST_ADDRS.get_ptr(dst).is_some() {
        // Ours: VXLAN from a known tunnel endpoint on the tunnel's interface is decapsulated
        // (outer options allowed), the rest is the kernel's.
        if from.role == Role::Underlay
            && let Some(decision) = vxlan::classify(frame, ip, header_len, from.ifindex)
        {
            return decision;
        }
        return Decision::ToKernel {
            reason: Counter::PassHostAddr,
        };
    }
    if header_len != Ipv4Hdr::LEN {
        // Options (record route, timestamps, source routes) need the kernel's processing on
        // forward; they are rare enough that giving them up costs nothing.
        return Decision::ToKernel {
            reason: Counter::PassIpOptions,
        };
    }
    let Some(nh) = ROUTES.get(Key::new(32, dst)) else {
        return Decision::ToKernel {
            reason: Counter::PassNoRoute,
        };
    };
    if ttl <= 1 {
        // The kernel sends ICMP time exceeded (and forwards nothing).
        return Decision::Pass(Counter::PassTtlExpired);
    }
    Decision::Forward { nh: *nh }
}

/// True if the route table gives `src` to the workload behind `ifindex`: the route for `src`
/// is a local route out of that very interface (a reverse-path check through the route map,
/// so a workload's own /32 and any prefix a `route ... dev` line hands it both count). The
/// common case, the workload's own /32, is answered by a hash keyed by the interface first.
#[inline(always)]
pub fn source_belongs(src: [u8; 4], ifindex: u32) -> bool {
    // SAFETY: `HashMap::get`'s caveat: an entry removed meanwhile may be reused for another
    // key. The address is compared at once, and a stale one answers for one packet as the
    // table stood a moment before.
    if let Some(own) = unsafe { WORKLOAD_SRCS.get(ifindex) }
        && *own == src
    {
        return true;
    }
    match ROUTES.get(Key::new(32, src)) {
        Some(nh) => nh.is(NextHopKind::Local) && nh.ifindex == ifindex,
        None => false,
    }
}

/// After decapsulation only a local workload may receive the inner packet: anything else the
/// inner frame asks for (another hop, the host, the kernel, another tunnel) is refused.
#[inline(always)]
pub fn only_to_local_workload(inner: Decision) -> Decision {
    match inner {
        Decision::Forward { nh } if nh.is(NextHopKind::Local) => inner,
        _ => Decision::Drop(Counter::DropVxlanInner),
    }
}

/// A routed hop: MACs for the next hop, TTL one less.
#[inline(always)]
pub fn rewrite(eth: &mut EthHdr, ip: &mut Ipv4Hdr, nh: &NextHop) {
    set_macs(eth, nh);
    decrement_ttl(ip);
}
