//! Every header the programs read or write, and the one bounds-checked accessor all parsing
//! goes through. Parsers here only find and validate headers; what to do with a packet is
//! decided in `route`, `vxlan` and `policy`.
use core::mem::size_of;

use network_types::ip::IpProto;
pub use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
    udp::UdpHdr,
    vxlan::VxlanHdr,
};

pub const IPPROTO_ICMP: u8 = IpProto::Icmp as u8;
pub const IPPROTO_TCP: u8 = IpProto::Tcp as u8;
pub const IPPROTO_UDP: u8 = IpProto::Udp as u8;

pub const ETHERTYPE_IPV4: u16 = EtherType::Ipv4 as u16;
pub const ETHERTYPE_ARP: u16 = EtherType::Arp as u16;

/// The VXLAN header's flags byte with the I flag (VNI valid).
pub const VXLAN_FLAG_I: u8 = network_types::vxlan::VXLAN_I_FLAG_MASK;

/// Bytes of L4 header the policy reads: the ports (TCP, UDP) or type, code, checksum and
/// identifier (ICMP).
pub const L4_LEN: usize = 8;

/// Bytes of header the routing decision reads: Ethernet, an option-less IPv4 header, and the
/// start of the L4 header (ports) for policy.
pub const HEADERS_LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN + L4_LEN;

/// Bytes of headers an encapsulated frame starts with: outer Ethernet, IPv4, UDP, VXLAN,
/// inner Ethernet.
pub const ENCAP_HEADERS_LEN: usize =
    EthHdr::LEN + Ipv4Hdr::LEN + UdpHdr::LEN + VxlanHdr::LEN + EthHdr::LEN;

/// IPv4 `frags` bits: more fragments, and the fragment offset. A first fragment has MF set
/// and offset 0; a later one a non-zero offset.
pub const IPV4_MF_AND_OFFSET: u16 = 0x3fff;
pub const IPV4_DF: u16 = 0x4000;
pub const IPV4_OFFSET: u16 = 0x1fff;

/// A pointer to a `T` at `offset` from `data`, or `None` if it would reach past `data_end`.
/// The comparison is written so that the verifier sees the bound on the pointer it checks.
#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, offset: usize) -> Option<*mut T> {
    let start = data + offset;
    if start + size_of::<T>() > data_end {
        return None;
    }
    Some(start as *mut T)
}

/// The IPv4 header after the Ethernet header of a frame of `frame_len` bytes (at TC the
/// linear part `data..data_end` can be shorter than the frame), and its length in bytes.
/// `None` if the header is cut short, is not version 4, has an IHL under 5, or a total length
/// that is shorter than its header or longer than the frame.
#[inline(always)]
pub fn ipv4(data: usize, data_end: usize, frame_len: usize) -> Option<(*mut Ipv4Hdr, usize)> {
    let ip = ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN)?;
    let (vihl, tot_len) = unsafe { ((*ip).vihl, u16::from_be_bytes((*ip).tot_len) as usize) };
    let header_len = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4
        || header_len < Ipv4Hdr::LEN
        || tot_len < header_len
        || tot_len > frame_len - EthHdr::LEN
    {
        return None;
    }
    Some((ip, header_len))
}

/// The IPv4 header's fragment bits (`frags` in host order).
#[inline(always)]
pub fn ipv4_frags(ip: *const Ipv4Hdr) -> u16 {
    unsafe { u16::from_be_bytes((*ip).frags) }
}

/// True if the IPv4 header at `ip` has Don't Fragment set.
#[inline(always)]
pub fn ipv4_dont_fragment(ip: *const Ipv4Hdr) -> bool {
    ipv4_frags(ip) & IPV4_DF != 0
}

/// Source then destination port of the TCP or UDP header at `l4`; for ICMP echo, the
/// identifier on the requester's side (request: as source port, reply: as destination); zeros
/// for anything else. `None` if the header is cut short.
#[inline(always)]
pub fn l4_ports(l4: usize, data_end: usize, proto: u8) -> Option<[u8; 4]> {
    const ICMP_ECHO_REPLY: u8 = 0;
    const ICMP_ECHO_REQUEST: u8 = 8;
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let p = ptr_at::<[u8; 4]>(l4, data_end, 0)?;
            Some(unsafe { *p })
        }
        IPPROTO_ICMP => {
            let p = ptr_at::<[u8; L4_LEN]>(l4, data_end, 0)?;
            let b = unsafe { *p };
            Some(match b[0] {
                ICMP_ECHO_REQUEST => [b[4], b[5], 0, 0],
                ICMP_ECHO_REPLY => [0, 0, b[4], b[5]],
                _ => [0; 4],
            })
        }
        _ => Some([0; 4]),
    }
}
