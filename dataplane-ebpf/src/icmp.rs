//! ICMP "fragmentation needed", built in place of a packet too big for the tunnel and sent
//! back to its source, so that path MTU discovery works whatever MTU a workload was given
//! (as Calico's and Cilium's eBPF dataplanes do; the kernel would drop such a packet silently,
//! having no route for it).
//!
//! Layout of the answer (70 bytes): Ethernet (the frame's MACs swapped), IPv4 from this host's
//! tunnel address to the packet's source, ICMP type 3 code 4 carrying the tunnel's inner MTU,
//! then the packet's IPv4 header and first 8 bytes of payload, as RFC 792 asks.
use dataplane_common::{
    Counter, NextHop,
    checksum::{checksum, ipv4_checksum_with_len, ipv4_fixed_sum},
    vxlan::{VXLAN_OUTER_TTL, VXLAN_OVERHEAD},
};

use crate::{
    counters::Outcome,
    hook::Shim,
    parse::{ETHERTYPE_IPV4, EthHdr, IPPROTO_ICMP, Ipv4Hdr, ptr_at},
};

/// The quoted part of the packet: its (option-less) IPv4 header and 8 bytes of payload.
const QUOTE_LEN: usize = Ipv4Hdr::LEN + 8;
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
    let (data, data_end) = h.headers(EthHdr::LEN + QUOTE_LEN);
    let (Some(eth), Some(quote)) = (
        ptr_at::<EthHdr>(data, data_end, 0),
        ptr_at::<[u8; QUOTE_LEN]>(data, data_end, EthHdr::LEN),
    ) else {
        return Outcome::Pass(Counter::PassTooBig);
    };
    let (their_mac, our_mac, quote) = unsafe { ((*eth).src_addr, (*eth).dst_addr, *quote) };
    let source = [quote[12], quote[13], quote[14], quote[15]];
    let mtu = nh.mtu - VXLAN_OVERHEAD as u16;

    // Room for the new IPv4 and ICMP headers in front of the quoted packet, which then sits
    // at the same offset at both hooks; everything after the quote goes.
    if !h.grow_after_ethernet(ADDED) || !h.truncate(ANSWER_LEN) {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    let (data, data_end) = h.headers(ANSWER_LEN);
    let (Some(eth), Some(ip), Some(icmp)) = (
        ptr_at::<EthHdr>(data, data_end, 0),
        ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN),
        ptr_at::<[u8; ICMP_LEN + QUOTE_LEN]>(data, data_end, EthHdr::LEN + Ipv4Hdr::LEN),
    ) else {
        return Outcome::Drop(Counter::DropAdjustFailed);
    };
    let mut message = [0u8; ICMP_LEN + QUOTE_LEN];
    message[0] = ICMP_DEST_UNREACHABLE;
    message[1] = ICMP_FRAG_NEEDED;
    message[6..8].copy_from_slice(&mtu.to_be_bytes());
    message[ICMP_LEN..].copy_from_slice(&quote);
    let sum = checksum(&message);
    message[2] = sum[0];
    message[3] = sum[1];
    let total = (ADDED + QUOTE_LEN) as u16;
    let fixed = ipv4_fixed_sum(VXLAN_OUTER_TTL, IPPROTO_ICMP, nh.outer_src_ip, source);
    unsafe {
        (*eth).dst_addr = their_mac;
        (*eth).src_addr = our_mac;
        (*eth).ether_type = ETHERTYPE_IPV4;
        (*ip).vihl = 0x45;
        (*ip).tos = 0;
        (*ip).tot_len = total.to_be_bytes();
        (*ip).id = [0, 0];
        (*ip).frags = [0x40, 0];
        (*ip).ttl = VXLAN_OUTER_TTL;
        (*ip).proto = IPPROTO_ICMP;
        (*ip).check = ipv4_checksum_with_len(fixed, total);
        (*ip).src_addr = nh.outer_src_ip;
        (*ip).dst_addr = source;
        *icmp = message;
    }
    if !h.send_back() {
        return Outcome::Drop(Counter::DropRedirectError);
    }
    Outcome::Replied(Counter::ReplyFragNeeded)
}
