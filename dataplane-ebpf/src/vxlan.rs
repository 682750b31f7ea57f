//! VXLAN: recognising a packet for this host's VTEP, and writing the outer headers.
//!
//! Both hooks lay an encapsulated frame out the same way once they have made room for it:
//! outer Ethernet at 0, outer IPv4 at 14, UDP at 34, VXLAN at 42, inner Ethernet at 50, inner
//! IPv4 at 64 (XDP grows the head by 50 bytes in front of the old Ethernet header, which
//! becomes the inner one; TC grows 50 bytes after the Ethernet header, which becomes the
//! outer one). [`write_headers`] fills bytes 0..64 in either case.
use dataplane_common::{
    Counter, NextHop,
    checksum::{flow_source_port, ipv4_checksum_with_len},
    vxlan::{VXLAN_OUTER_TTL, VXLAN_SPORT_MAX, VXLAN_SPORT_MIN, VxlanConfig},
};

use crate::{
    decision::Decision,
    maps::{VXLAN_CONFIG, VXLAN_VNIS, VXLAN_VTEPS},
    parse::{
        ETHERTYPE_IPV4, EthHdr, IPPROTO_TCP, IPPROTO_UDP, IPV4_MF_AND_OFFSET, IPV4_OFFSET, Ipv4Hdr,
        UdpHdr, VXLAN_FLAG_I, VxlanHdr, ipv4_frags, ptr_at,
    },
};

#[inline(always)]
fn config() -> Option<&'static VxlanConfig> {
    VXLAN_CONFIG.get(0)
}

/// For an IPv4 packet to one of this host's addresses, whose header is `ip_header_len` bytes
/// at `data + 14`, that arrived on interface `ifindex`: is it VXLAN for us? `None` if it is
/// not VXLAN at all (not UDP, another port, a fragment, VXLAN off, not the tunnel's
/// interface), so the caller carries on; otherwise what to do with it.
#[inline(always)]
pub fn classify(
    data: usize,
    data_end: usize,
    ip: *const Ipv4Hdr,
    ip_header_len: usize,
    ifindex: u32,
) -> Option<Decision> {
    let (proto, outer_src) = unsafe { ((*ip).proto, (*ip).src_addr) };
    // Later fragments carry no UDP header; first fragments need reassembly: the kernel's.
    if proto != IPPROTO_UDP || ipv4_frags(ip) & IPV4_MF_AND_OFFSET != 0 {
        return None;
    }
    let config = config()?;
    if config.port == [0, 0] || config.ifindex != ifindex {
        return None;
    }
    let port = config.port;
    let udp_off = EthHdr::LEN + ip_header_len;
    let udp = ptr_at::<UdpHdr>(data, data_end, udp_off)?;
    if unsafe { (*udp).dst } != port {
        return None;
    }
    // Only the tunnel endpoints our routes name may put packets into our workloads.
    if VXLAN_VTEPS.get_ptr(outer_src).is_none() {
        return Some(Decision::Drop(Counter::DropVxlanUnknownVtep));
    }
    let vxlan_off = udp_off + UdpHdr::LEN;
    let inner_eth_off = vxlan_off + VxlanHdr::LEN;
    let (Some(vxlan), Some(inner_eth)) = (
        ptr_at::<VxlanHdr>(data, data_end, vxlan_off),
        ptr_at::<EthHdr>(data, data_end, inner_eth_off),
    ) else {
        return Some(Decision::Drop(Counter::DropVxlanMalformed));
    };
    let (flags, vni) = unsafe { ((*vxlan).flags, (*vxlan).vni) };
    if flags & VXLAN_FLAG_I == 0 {
        return Some(Decision::Drop(Counter::DropVxlanMalformed));
    }
    let vni = u32::from_be_bytes([0, vni[0], vni[1], vni[2]]);
    if VXLAN_VNIS.get_ptr(vni).is_none() {
        return Some(Decision::Drop(Counter::DropVxlanUnknownVni));
    }
    if unsafe { (*inner_eth).ether_type } != ETHERTYPE_IPV4 {
        return Some(Decision::Drop(Counter::DropVxlanInner));
    }
    // Everything before the inner Ethernet header goes.
    Some(Decision::Decap {
        strip: inner_eth_off,
    })
}

/// The UDP source port for an inner IPv4 packet (option-less header at `ip`): a hash of its
/// flow, so that one flow keeps one port and flows spread over ECMP paths.
#[inline(always)]
pub fn source_port(data: usize, data_end: usize, ip: *const Ipv4Hdr) -> [u8; 2] {
    let (src, dst, proto) = unsafe { ((*ip).src_addr, (*ip).dst_addr, (*ip).proto) };
    let mut ports = [0u8; 4];
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
        && ipv4_frags(ip) & IPV4_OFFSET == 0
        && let Some(p) = ptr_at::<[u8; 4]>(data, data_end, EthHdr::LEN + Ipv4Hdr::LEN)
    {
        ports = unsafe { *p };
    }
    flow_source_port(src, dst, proto, ports, VXLAN_SPORT_MIN, VXLAN_SPORT_MAX).to_be_bytes()
}

/// Writes bytes 0..64 of an encapsulated frame of `frame_len` bytes in all (see module
/// docs). Returns false if the frame is too short to hold them (the caller drops it).
#[inline(always)]
pub fn write_headers(
    data: usize,
    data_end: usize,
    frame_len: usize,
    nh: &NextHop,
    sport: [u8; 2],
) -> bool {
    const IP_OFF: usize = EthHdr::LEN;
    const UDP_OFF: usize = IP_OFF + Ipv4Hdr::LEN;
    const VXLAN_OFF: usize = UDP_OFF + UdpHdr::LEN;
    const INNER_ETH_OFF: usize = VXLAN_OFF + VxlanHdr::LEN;
    let (Some(outer_eth), Some(outer_ip), Some(udp), Some(vxlan), Some(inner_eth)) = (
        ptr_at::<EthHdr>(data, data_end, 0),
        ptr_at::<Ipv4Hdr>(data, data_end, IP_OFF),
        ptr_at::<UdpHdr>(data, data_end, UDP_OFF),
        ptr_at::<VxlanHdr>(data, data_end, VXLAN_OFF),
        ptr_at::<EthHdr>(data, data_end, INNER_ETH_OFF),
    ) else {
        return false;
    };
    // For a GSO super-packet these lengths wrap; the kernel rewrites them per segment.
    let ip_len = (frame_len - EthHdr::LEN) as u16;
    let udp_len = (frame_len - EthHdr::LEN - Ipv4Hdr::LEN) as u16;
    let vni_word = nh.vni_word;
    unsafe {
        (*outer_eth).dst_addr = nh.outer_dst_mac;
        (*outer_eth).src_addr = nh.outer_src_mac;
        (*outer_eth).ether_type = ETHERTYPE_IPV4;
        (*outer_ip).vihl = 0x45;
        (*outer_ip).tos = 0;
        (*outer_ip).tot_len = ip_len.to_be_bytes();
        (*outer_ip).id = [0, 0];
        (*outer_ip).frags = [0x40, 0]; // DF: the underlay is never fragmented for us
        (*outer_ip).ttl = VXLAN_OUTER_TTL;
        (*outer_ip).proto = IPPROTO_UDP;
        (*outer_ip).check = ipv4_checksum_with_len(nh.outer_csum_base, ip_len);
        (*outer_ip).src_addr = nh.outer_src_ip;
        (*outer_ip).dst_addr = nh.outer_dst_ip;
        (*udp).src = sport;
        (*udp).dst = nh.udp_dport;
        (*udp).len = udp_len.to_be_bytes();
        (*udp).check = [0, 0]; // zero: no UDP checksum over IPv4 (RFC 7348), as Linux sends
        (*vxlan).flags = VXLAN_FLAG_I;
        (*vxlan)._reserved1 = [0; 3];
        // The VNI word as sent is VNI << 8: three bytes of VNI, then the reserved byte.
        (*vxlan).vni = [vni_word[0], vni_word[1], vni_word[2]];
        (*vxlan)._reserved2 = vni_word[3];
        (*inner_eth).dst_addr = nh.dst_mac;
        (*inner_eth).src_addr = nh.src_mac;
        (*inner_eth).ether_type = ETHERTYPE_IPV4;
    }
    true
}
