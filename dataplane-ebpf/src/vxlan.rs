//! VXLAN over the IPv4 underlay: recognising a packet for this host's VTEP, and writing the
//! outer headers. The underlay is IPv4 whatever the inner packet is; what depends on the
//! inner family (its flow hash for the source port) is suffixed with it.
//!
//! Both hooks lay an encapsulated frame out the same way once they have made room for it:
//! outer Ethernet at 0, outer IPv4 at 14, UDP at 34, VXLAN at 42, inner Ethernet at 50, the
//! inner packet at 64 (XDP grows the head by 50 bytes in front of the old Ethernet header,
//! which becomes the inner one; TC grows 50 bytes after the Ethernet header, which becomes the
//! outer one). [`write_headers`] fills bytes 0..64 in either case.
use dataplane_common::{
    Counter, NextHop,
    checksum::{flow_source_port, ipv4_checksum_with_len},
    vxlan::{VXLAN_OUTER_TTL, VXLAN_SPORT_MAX, VXLAN_SPORT_MIN, VxlanConfig},
};

use crate::{
    ipv4::{self, Decision, Ipv4Hdr},
    maps::{VXLAN_CONFIG, VXLAN_VNIS, VXLAN_VTEPS},
    parse::{
        ETHERTYPE_IPV4, EthHdr, Frame, IPPROTO_TCP, IPPROTO_UDP, Plain, UdpHdr, VXLAN_FLAG_I,
        VxlanHdr, ref_at, ref_mut_at,
    },
};

/// Bytes of headers an encapsulated frame starts with: outer Ethernet, IPv4, UDP, VXLAN,
/// inner Ethernet.
pub const ENCAP_HEADERS_LEN: usize = size_of::<OuterHeaders>();

/// The headers [`write_headers`] writes, as one: one bounds check for all, and references
/// to disjoint bytes once split.
#[repr(C)]
struct OuterHeaders {
    eth: EthHdr,
    ip: Ipv4Hdr,
    udp: UdpHdr,
    vxlan: VxlanHdr,
    inner_eth: EthHdr,
}

// SAFETY: `repr(C)` of `Plain` headers of alignment 1, so no padding between them.
unsafe impl Plain for OuterHeaders {}

#[inline(always)]
fn config() -> Option<&'static VxlanConfig> {
    VXLAN_CONFIG.get(0)
}

/// For an IPv4 packet to one of this host's addresses, whose header `ip` is `ip_header_len`
/// bytes (the frame's, in `frame`), that arrived on interface `ifindex`: is it VXLAN for us?
/// `None` if it is not VXLAN at all (not UDP, another port, a fragment, VXLAN off, not the
/// tunnel's interface), so the caller carries on; otherwise what to do with it.
#[inline(always)]
pub fn classify(
    frame: Frame,
    ip: &Ipv4Hdr,
    ip_header_len: usize,
    ifindex: u32,
) -> Option<Decision> {
    let (proto, outer_src) = (ip.proto, ip.src_addr);
    // Later fragments carry no UDP header; first fragments need reassembly: the kernel's.
    if proto != IPPROTO_UDP || ipv4::frags(ip) & ipv4::MF_AND_OFFSET != 0 {
        return None;
    }
    let config = config()?;
    if config.port == [0, 0] || config.ifindex != ifindex {
        return None;
    }
    let port = config.port;
    let udp_off = ipv4::IP_AT + ip_header_len;
    // SAFETY: a current frame (every `Frame` is: see `parse::Frame`); the references here are
    // only read, while only map lookups run, and nothing holds a `&mut` into the frame.
    let udp = unsafe { ref_at::<UdpHdr>(frame, udp_off) }.ok()?;
    if udp.dst != port {
        return None;
    }
    // Only the tunnel endpoints our routes name may put packets into our workloads.
    if VXLAN_VTEPS.get_ptr(outer_src).is_none() {
        return Some(Decision::Drop(Counter::DropVxlanUnknownVtep));
    }
    let vxlan_off = udp_off + UdpHdr::LEN;
    let inner_eth_off = vxlan_off + VxlanHdr::LEN;
    // SAFETY: as above.
    let Ok(vxlan) = (unsafe { ref_at::<VxlanHdr>(frame, vxlan_off) }) else {
        return Some(Decision::Drop(Counter::DropVxlanMalformed));
    };
    // SAFETY: as above.
    let Ok(inner_eth) = (unsafe { ref_at::<EthHdr>(frame, inner_eth_off) }) else {
        return Some(Decision::Drop(Counter::DropVxlanMalformed));
    };
    let (flags, vni) = (vxlan.flags, vxlan.vni);
    if flags & VXLAN_FLAG_I == 0 {
        return Some(Decision::Drop(Counter::DropVxlanMalformed));
    }
    let vni = u32::from_be_bytes([0, vni[0], vni[1], vni[2]]);
    if VXLAN_VNIS.get_ptr(vni).is_none() {
        return Some(Decision::Drop(Counter::DropVxlanUnknownVni));
    }
    if inner_eth.ether_type != ETHERTYPE_IPV4 {
        return Some(Decision::Drop(Counter::DropVxlanInner));
    }
    // Everything before the inner Ethernet header goes.
    Some(Decision::Decap {
        strip: inner_eth_off,
    })
}

/// The UDP source port for an inner IPv4 packet (option-less header `ip`, the frame's, in
/// `frame`): a hash of its flow, so that one flow keeps one port and flows spread over ECMP
/// paths.
#[inline(always)]
pub fn source_port_v4(ip: &Ipv4Hdr, frame: Frame) -> [u8; 2] {
    let (src, dst, proto) = (ip.src_addr, ip.dst_addr, ip.proto);
    let mut ports = [0u8; 4];
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
        && ipv4::frags(ip) & ipv4::OFFSET == 0
        // SAFETY: a current frame (every `Frame` is: see `parse::Frame`); the bytes are copied
        // out at once, and a `&mut` into the frame, if any is held, is to other bytes
        // (`ref_mut_at`).
        && let Ok(p) = unsafe { ref_at::<[u8; 4]>(frame, ipv4::L4_AT) }
    {
        ports = *p;
    }
    flow_source_port(src, dst, proto, ports, VXLAN_SPORT_MIN, VXLAN_SPORT_MAX).to_be_bytes()
}

/// Writes bytes 0..64 of an encapsulated frame of `frame_len` bytes in all (see module
/// docs), the inner Ethernet header's type `inner_type`. Returns false if the frame is too
/// short to hold them (the caller drops it).
#[inline(always)]
pub fn write_headers(
    frame: Frame,
    frame_len: usize,
    nh: &NextHop,
    sport: [u8; 2],
    inner_type: [u8; 2],
) -> bool {
    // SAFETY: a frame read right after the helper that made room (the caller's, as every
    // `Frame`); this is the only reference into it, and no helper runs while it lives.
    let Ok(OuterHeaders {
        eth: outer_eth,
        ip: outer_ip,
        udp,
        vxlan,
        inner_eth,
    }) = (unsafe { ref_mut_at::<OuterHeaders>(frame, 0) })
    else {
        return false;
    };
    // For a GSO super-packet these lengths wrap; the kernel rewrites them per segment.
    let ip_len = (frame_len - EthHdr::LEN) as u16;
    let udp_len = (frame_len - EthHdr::LEN - Ipv4Hdr::LEN) as u16;
    let vni_word = nh.vni_word;
    outer_eth.dst_addr = nh.outer_dst_mac;
    outer_eth.src_addr = nh.outer_src_mac;
    outer_eth.ether_type = ETHERTYPE_IPV4;
    outer_ip.vihl = 0x45;
    outer_ip.tos = 0;
    outer_ip.tot_len = ip_len.to_be_bytes();
    outer_ip.id = [0, 0];
    outer_ip.frags = [0x40, 0]; // DF: the underlay is never fragmented for us
    outer_ip.ttl = VXLAN_OUTER_TTL;
    outer_ip.proto = IPPROTO_UDP;
    outer_ip.check = ipv4_checksum_with_len(nh.outer_csum_base, ip_len);
    outer_ip.src_addr = nh.outer_src_ip;
    outer_ip.dst_addr = nh.outer_dst_ip;
    udp.src = sport;
    udp.dst = nh.udp_dport;
    udp.len = udp_len.to_be_bytes();
    udp.check = [0, 0]; // zero: no UDP checksum over IPv4 (RFC 7348), as Linux sends
    vxlan.flags = VXLAN_FLAG_I;
    vxlan._reserved1 = [0; 3];
    // The VNI word as sent is VNI << 8: three bytes of VNI, then the reserved byte.
    vxlan.vni = [vni_word[0], vni_word[1], vni_word[2]];
    vxlan._reserved2 = vni_word[3];
    inner_eth.dst_addr = nh.dst_mac;
    inner_eth.src_addr = nh.src_mac;
    inner_eth.ether_type = inner_type;
    true
}
