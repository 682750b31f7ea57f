//! ICMP (v4) "fragmentation needed", built in place of a packet too big for the tunnel and sent
//! back to its source, so that path MTU discovery works whatever MTU a workload was given
//! (as Calico's and Cilium's eBPF dataplanes do; the kernel would drop such a packet silently,
//! having no route for it).
//!
//! Layout of the answer (106 bytes): Ethernet (the frame's MACs swapped), IPv4 from this host's
//! tunnel address to the packet's source, ICMP type 3 code 4 carrying the tunnel's inner MTU,
//! then the packet's IPv4 header and first 44 bytes of payload (RFC 792 asks for 8, RFC 1812
//! for as much as fits). 44, not 8: at TC a packet whose checksum the kernel is still to
//! complete (a TCP segment from a workload with TX checksum offload) cannot be cut short of its
//! checksum field, which lies up to 18 bytes into the payload, behind the 28 bytes added.
use dataplane_common::{
    Counter, NextHop,
    checksum::{checksum_of, ipv4_checksum_with_len, ipv4_fixed_sum},
    vxlan::{VXLAN_OUTER_TTL, VXLAN_OVERHEAD},
};

use super::{Headers, IP_AT, IPPROTO_ICMP, Ipv4Hdr, L4_AT, headers_mut};
use crate::{
    counters::Outcome,
    hook::Shim,
    parse::{ETHERTYPE_IPV4, EthHdr, ref_at, ref_mut_at},
};

/// The quoted part of the packet: its (option-less) IPv4 header and 44 bytes of payload.
const QUOTE_LEN: usize = Ipv4Hdr::LEN + 44;
/// ICMP header: type, code, checksum, unused, next-hop MTU.
const ICMP_LEN: usize = 8;
/// Bytes the answer adds between the Ethernet header and the quoted packet.
const ADDED: usize = Ipv4Hdr::LEN + ICMP_LEN;
/// The whole answer.
const ANSWER_LEN: usize = EthHdr::LEN + ADDED + QUOTE_LEN;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;

/// Turns the frame (an option-less IPv4 packet routed into the tunnel of `nh`) into ICMP
/// "fragmentation needed" and sends it back where the frame came from.
#[inline(always)]
pub fn frag_needed<H: Shim>(h: &H, nh: &NextHop) -> Outcome {
    // What the answer needs of the frame before its front is rewritten: MACs and the source.
    let frame = h.headers(EthHdr::LEN + QUOTE_LEN);
    // SAFETY: a frame read just now; both references are only read, before any helper runs,
    // and the caller holds no `&mut` into the frame it uses afterwards.
    if unsafe { ref_at::<[u8; QUOTE_LEN]>(frame, IP_AT) }.is_err() {
        return Outcome::Pass(Counter::PassTooBig);
    }
    // SAFETY: as above.
    let Ok(Headers { eth, ip }) = (unsafe { ref_at::<Headers>(frame, 0) }) else {
        return Outcome::Pass(Counter::PassTooBig);
    };
    let (their_mac, our_mac, source) = (eth.src_addr, eth.dst_addr, ip.src_addr);
    let mtu = nh.mtu - VXLAN_OVERHEAD as u16;

    // Room for the new IPv4 and ICMP headers in front of the packet, which then sits where
    // the quote belongs (at the same offset at both hooks); what lies past the quote goes.
    if !h.grow_after_ethernet(ADDED) || !h.truncate(ANSWER_LEN) {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    let frame = h.headers(ANSWER_LEN);
    // SAFETY: a frame read after the helpers above; the two references cover disjoint bytes
    // (headers 0..34, the ICMP message from 34), and no helper runs while they live.
    let Ok((eth, ip)) = (unsafe { headers_mut(frame) }) else {
        return Outcome::Drop(Counter::DropAdjustFailed);
    };
    // SAFETY: as above.
    let Ok(message) = (unsafe { ref_mut_at::<[u8; ICMP_LEN + QUOTE_LEN]>(frame, L4_AT) }) else {
        return Outcome::Drop(Counter::DropAdjustFailed);
    };
    let total = (ADDED + QUOTE_LEN) as u16;
    let fixed = ipv4_fixed_sum(VXLAN_OUTER_TTL, IPPROTO_ICMP, nh.outer_src_ip, source);
    let mtu = mtu.to_be_bytes();
    eth.dst_addr = their_mac;
    eth.src_addr = our_mac;
    eth.ether_type = ETHERTYPE_IPV4;
    ip.vihl = 0x45;
    ip.tos = 0;
    ip.tot_len = total.to_be_bytes();
    ip.id = [0, 0];
    ip.frags = [0x40, 0];
    ip.ttl = VXLAN_OUTER_TTL;
    ip.proto = IPPROTO_ICMP;
    ip.check = ipv4_checksum_with_len(fixed, total);
    ip.src_addr = nh.outer_src_ip;
    ip.dst_addr = source;
    message[..ICMP_LEN].copy_from_slice(&[
        ICMP_DEST_UNREACHABLE,
        ICMP_FRAG_NEEDED,
        0,
        0,
        0,
        0,
        mtu[0],
        mtu[1],
    ]);
    let sum = checksum_of(message);
    message[2] = sum[0];
    message[3] = sum[1];
    if !h.send_back() {
        return Outcome::Drop(Counter::DropRedirectError);
    }
    Outcome::Replied(Counter::ReplyFragNeeded)
}
