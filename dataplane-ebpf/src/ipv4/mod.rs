//! IPv4: the header, the routing decision, and the path of an IPv4 frame from there (policy,
//! services, VXLAN, the ICMP answer) to its outcome. Everything here is IPv4's own; an IPv6
//! path would sit beside it as a module of its own, sharing the Ethernet step and the tunnel
//! steps (`crate::path`), the accessors (`crate::parse`), the counters and the hooks.
//!
//! The IPv4 header is always right after the Ethernet header ([`IP_AT`]): a VLAN-tagged frame
//! is never routed.
pub mod arp;
mod decision;
mod icmp;
mod path;
mod policy;
mod route;
pub mod services;

use dataplane_common::checksum::ipv4_decrement_ttl;
use network_types::ip::IpProto;
pub use network_types::ip::Ipv4Hdr;

pub use self::{
    decision::Decision,
    path::{process, process_decapsulated},
};
use crate::parse::{
    EthHdr, Frame, IPPROTO_TCP, IPPROTO_UDP, L4_LEN, OutOfBounds, Plain, ref_at, ref_mut_at,
};

pub const IPPROTO_ICMP: u8 = IpProto::Icmp as u8;

/// Where the IPv4 header starts.
pub const IP_AT: usize = EthHdr::LEN;
/// Where the L4 header of an option-less IPv4 packet starts.
pub const L4_AT: usize = IP_AT + Ipv4Hdr::LEN;
/// Bytes of header the routing decision reads: Ethernet, an option-less IPv4 header, and the
/// start of the L4 header (ports) for policy.
pub const HEADERS_LEN: usize = L4_AT + L4_LEN;

/// IPv4 `frags` bits: more fragments, and the fragment offset. A first fragment has MF set
/// and offset 0; a later one a non-zero offset.
pub const MF_AND_OFFSET: u16 = 0x3fff;
pub const DF: u16 = 0x4000;
pub const OFFSET: u16 = 0x1fff;

// SAFETY: `repr(C)` of `u8` and byte arrays only (network-types 0.2: `vihl`, `tos`, `tot_len`,
// `id`, `frags`, `ttl`, `proto`, `check`, `src_addr`, `dst_addr`).
unsafe impl Plain for Ipv4Hdr {}

/// The Ethernet and option-less IPv4 headers of a frame, as one: one bounds check for both,
/// and two references to disjoint bytes once split.
#[repr(C)]
pub struct Headers {
    pub eth: EthHdr,
    pub ip: Ipv4Hdr,
}

// SAFETY: `repr(C)` of two `Plain` headers of alignment 1, so no padding between them.
unsafe impl Plain for Headers {}

/// The IPv4 header of a frame of `frame_len` bytes (at TC the bytes in `frame` can be fewer
/// than the frame's), and its length in bytes. `None` if the header is cut short, is not
/// version 4, has an IHL under 5, or a total length that is shorter than its header or longer
/// than the frame.
///
/// # Safety
///
/// As for [`ref_at`].
#[inline(always)]
pub unsafe fn header<'a>(frame: Frame, frame_len: usize) -> Option<(&'a Ipv4Hdr, usize)> {
    // SAFETY: the caller's contract is this one's.
    let ip = unsafe { ref_at::<Ipv4Hdr>(frame, IP_AT) }.ok()?;
    let (vihl, tot_len) = (ip.vihl, u16::from_be_bytes(ip.tot_len) as usize);
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

/// The Ethernet and (option-less) IPv4 headers of the frame in `frame`, for writing.
///
/// # Safety
///
/// As for [`ref_mut_at`].
#[inline(always)]
pub unsafe fn headers_mut<'a>(
    frame: Frame,
) -> Result<(&'a mut EthHdr, &'a mut Ipv4Hdr), OutOfBounds> {
    // SAFETY: the caller's contract is this one's.
    let Headers { eth, ip } = unsafe { ref_mut_at::<Headers>(frame, 0) }?;
    Ok((eth, ip))
}

/// The IPv4 header's fragment bits (`frags` in host order).
#[inline(always)]
pub fn frags(ip: &Ipv4Hdr) -> u16 {
    u16::from_be_bytes(ip.frags)
}

/// True if the IPv4 header `ip` has Don't Fragment set.
#[inline(always)]
pub fn dont_fragment(ip: &Ipv4Hdr) -> bool {
    frags(ip) & DF != 0
}

/// Decrements the TTL with an incremental checksum update (which leaves the header's
/// one's-complement sum, and so any CHECKSUM_COMPLETE, valid).
#[inline(always)]
pub fn decrement_ttl(ip: &mut Ipv4Hdr) {
    let (ttl, check) = ipv4_decrement_ttl(ip.ttl, ip.proto, ip.check);
    ip.ttl = ttl;
    ip.check = check;
}

/// Source then destination port of the TCP or UDP header at `l4_at` in `frame`; for ICMP
/// echo, the identifier on the requester's side (request: as source port, reply: as
/// destination); zeros for anything else. `None` if the header is cut short.
#[inline(always)]
pub fn l4_ports(frame: Frame, l4_at: usize, proto: u8) -> Option<[u8; 4]> {
    const ICMP_ECHO_REPLY: u8 = 0;
    const ICMP_ECHO_REQUEST: u8 = 8;
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            // SAFETY: `frame` is current (as every `Frame`); the bytes are copied out at once.
            let ports = unsafe { ref_at::<[u8; 4]>(frame, l4_at) }.ok()?;
            Some(*ports)
        }
        IPPROTO_ICMP => {
            // SAFETY: as above.
            let b = *unsafe { ref_at::<[u8; L4_LEN]>(frame, l4_at) }.ok()?;
            Some(match b[0] {
                ICMP_ECHO_REQUEST => [b[4], b[5], 0, 0],
                ICMP_ECHO_REPLY => [0, 0, b[4], b[5]],
                _ => [0; 4],
            })
        }
        _ => Some([0; 4]),
    }
}
