//! The routing decision: classify what the kernel must keep, look the destination up, and
//! rewrite for the next hop.
use aya_ebpf::maps::lpm_trie::Key;
use dataplane_common::{Counter, NextHop, NextHopKind, checksum::ipv4_decrement_ttl};

use crate::decision::Decision;
use crate::{
    maps::{HOST_ADDRS, ROUTES, WORKLOAD_SRCS},
    parse::{ETHERTYPE_ARP, ETHERTYPE_IPV4, EthHdr, Ipv4Hdr, ipv4, ptr_at},
    services, vxlan,
};

/// What the interface a frame arrived on faces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// One local workload (its host-side veth): everything from it is checked as coming from
    /// that workload.
    Workload,
    /// Other hosts and the outside: tunnels end here.
    Underlay,
}

/// The interface a frame arrived on.
#[derive(Clone, Copy)]
pub struct Ingress {
    pub role: Role,
    pub ifindex: u32,
}

/// Which routing of the frame this is: a frame is routed once as it arrived, and once more
/// after a tunnel is stripped or a service's backend written in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// As it arrived.
    Arrived,
    /// The inner frame of a tunnel this host ended, which only a local workload may receive
    /// ([`only_to_local_workload`]): the host-address lookup is left out for it, since a host
    /// address is no workload's route and the frame is refused either way.
    Decapsulated,
    /// A workload's packet given its service's backend: its source was checked on arrival
    /// and a connection is translated once, so neither is looked up again.
    Translated,
}

/// Decides what to do with the frame in `data..data_end` that arrived on `from`; `frame_len`
/// is its full length (at TC the linear part can be shorter than the frame); `pass`: which
/// routing of the frame this is.
#[inline(always)]
pub fn route(
    data: usize,
    data_end: usize,
    frame_len: usize,
    from: Ingress,
    pass: Pass,
) -> Decision {
    let Some(eth) = ptr_at::<EthHdr>(data, data_end, 0) else {
        return Decision::Pass(Counter::PassMalformed);
    };
    let (ether_type, dst_mac0) = unsafe { ((*eth).ether_type, (*eth).dst_addr[0]) };
    if ether_type == ETHERTYPE_ARP {
        return Decision::Pass(Counter::PassArp);
    }
    if ether_type != ETHERTYPE_IPV4 {
        // A workload speaks IPv4 and ARP only: nothing else of its reaches the kernel, which
        // could forward it where no policy looks.
        return match from.role {
            Role::Workload => Decision::Drop(Counter::DropNotIpFromWorkload),
            Role::Underlay => Decision::Pass(Counter::PassNotIpv4),
        };
    }
    if dst_mac0 & 1 != 0 {
        // Broadcast or multicast: the kernel's to handle (it does not forward them).
        return Decision::Pass(Counter::PassNotUnicast);
    }
    let Some((ip, header_len)) = ipv4(data, data_end, frame_len) else {
        return Decision::Pass(Counter::PassMalformed);
    };
    let (ttl, src, dst) = unsafe { ((*ip).ttl, (*ip).src_addr, (*ip).dst_addr) };
    if from.role == Role::Workload && pass != Pass::Translated && !source_belongs(src, from.ifindex)
    {
        return Decision::Drop(Counter::DropSpoofedSource);
    }
    if header_len != Ipv4Hdr::LEN && from.role == Role::Workload {
        return Decision::ToKernel {
            reason: Counter::PassIpOptions,
            ip,
        };
    }
    if from.role == Role::Workload
        && pass == Pass::Arrived
        && services::in_use()
        && let Some(flow) = services::flow_of(ip, data_end)
        && let Some(service) = services::service_of(&flow)
    {
        return Decision::ToService { service, flow, ip };
    }
    if pass != Pass::Decapsulated && HOST_ADDRS.get_ptr(dst).is_some() {
        // Ours: VXLAN from a known tunnel endpoint on the tunnel's interface is decapsulated
        // (outer options allowed), the rest is the kernel's.
        if from.role == Role::Underlay
            && let Some(decision) = vxlan::classify(data, data_end, ip, header_len, from.ifindex)
        {
            return decision;
        }
        return Decision::ToKernel {
            reason: Counter::PassHostAddr,
            ip,
        };
    }
    if header_len != Ipv4Hdr::LEN {
        // Options (record route, timestamps, source routes) need the kernel's processing on
        // forward; they are rare enough that giving them up costs nothing.
        return Decision::ToKernel {
            reason: Counter::PassIpOptions,
            ip,
        };
    }
    let Some(nh) = ROUTES.get(Key::new(32, dst)) else {
        return Decision::ToKernel {
            reason: Counter::PassNoRoute,
            ip,
        };
    };
    if ttl <= 1 {
        // The kernel sends ICMP time exceeded (and forwards nothing).
        return Decision::Pass(Counter::PassTtlExpired);
    }
    Decision::Forward { nh: *nh, eth, ip }
}

/// True if the route table gives `src` to the workload behind `ifindex`: the route for `src`
/// is a local route out of that very interface (a reverse-path check through the route map,
/// so a workload's own /32 and any prefix a `route ... dev` line hands it both count). The
/// common case, the workload's own /32, is answered by a hash keyed by the interface first.
#[inline(always)]
fn source_belongs(src: [u8; 4], ifindex: u32) -> bool {
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
        Decision::Forward { nh, .. } if nh.is(NextHopKind::Local) => inner,
        _ => Decision::Drop(Counter::DropVxlanInner),
    }
}

/// Writes the next hop's MACs.
#[inline(always)]
pub fn set_macs(eth: *mut EthHdr, nh: &NextHop) {
    unsafe {
        (*eth).dst_addr = nh.dst_mac;
        (*eth).src_addr = nh.src_mac;
    }
}

/// Decrements the TTL with an incremental checksum update (which leaves the header's
/// one's-complement sum, and so any CHECKSUM_COMPLETE, valid).
#[inline(always)]
pub fn decrement_ttl(ip: *mut Ipv4Hdr) {
    unsafe {
        let (ttl, check) = ipv4_decrement_ttl((*ip).ttl, (*ip).proto, (*ip).check);
        (*ip).ttl = ttl;
        (*ip).check = check;
    }
}

/// A routed hop: MACs for the next hop, TTL one less.
#[inline(always)]
pub fn rewrite(eth: *mut EthHdr, ip: *mut Ipv4Hdr, nh: &NextHop) {
    set_macs(eth, nh);
    decrement_ttl(ip);
}
