//! The routing decision: classify what the kernel must keep, look the destination up, and
//! rewrite for the next hop.
use aya_ebpf::maps::lpm_trie::Key;
use dataplane_common::{Counter, NextHop, NextHopKind, checksum::ipv4_decrement_ttl};

use crate::decision::Decision;
use crate::{
    maps::{HOST_ADDRS, ROUTES},
    parse::{ETHERTYPE_ARP, ETHERTYPE_IPV4, EthHdr, Ipv4Hdr, ipv4, ptr_at},
    vxlan,
};

/// Decides what to do with the frame in `data..data_end`; `frame_len` is its full length
/// (at TC the linear part can be shorter than the frame).
#[inline(always)]
pub fn route(data: usize, data_end: usize, frame_len: usize) -> Decision {
    let Some(eth) = ptr_at::<EthHdr>(data, data_end, 0) else {
        return Decision::Pass(Counter::PassMalformed);
    };
    let (ether_type, dst_mac0) = unsafe { ((*eth).ether_type, (*eth).dst_addr[0]) };
    if ether_type == ETHERTYPE_ARP {
        return Decision::Pass(Counter::PassArp);
    }
    if ether_type != ETHERTYPE_IPV4 {
        return Decision::Pass(Counter::PassNotIpv4);
    }
    if dst_mac0 & 1 != 0 {
        // Broadcast or multicast: the kernel's to handle.
        return Decision::Pass(Counter::PassNotUnicast);
    }
    let Some((ip, header_len)) = ipv4(data, data_end, frame_len) else {
        return Decision::Pass(Counter::PassMalformed);
    };
    let (ttl, dst) = unsafe { ((*ip).ttl, (*ip).dst_addr) };
    if HOST_ADDRS.get_ptr(dst).is_some() {
        // Ours: VXLAN to our VTEP is decapsulated (outer options allowed), the rest is the
        // kernel's.
        return vxlan::classify(data, data_end, ip, header_len)
            .unwrap_or(Decision::Pass(Counter::PassHostAddr));
    }
    if header_len != Ipv4Hdr::LEN {
        // Options (record route, timestamps, source routes) need the kernel's processing on
        // forward; they are rare enough that giving them up costs nothing.
        return Decision::Pass(Counter::PassIpOptions);
    }
    let Some(nh) = ROUTES.get(Key::new(32, dst)) else {
        return Decision::Pass(Counter::PassNoRoute);
    };
    if ttl <= 1 {
        // The kernel sends ICMP time exceeded.
        return Decision::Pass(Counter::PassTtlExpired);
    }
    Decision::Forward { nh: *nh, eth, ip }
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
