//! ARP from a workload (RFC 826, IPv4 over Ethernet): the one kind of frame besides unicast
//! IPv4 a workload may send, and only in its own name. The kernel learns a neighbour from every
//! ARP request it answers; a workload that could name any sender would plant entries for
//! addresses that are not its own (other workloads', the host's peers').
use dataplane_common::Counter;

use super::route::source_belongs;
use crate::{
    counters::Outcome,
    parse::{EthHdr, Frame, Plain, ref_at},
};

/// An ARP packet for IPv4 over Ethernet.
#[repr(C)]
pub struct ArpHdr {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub oper: [u8; 2],
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

// SAFETY: `repr(C)` of `u8` and byte arrays only: alignment 1, no padding.
unsafe impl Plain for ArpHdr {}

/// Ethernet (1), IPv4 (0x0800), 6- and 4-byte addresses.
const ETHERNET_IPV4: ([u8; 2], [u8; 2], u8, u8) = ([0, 1], [0x08, 0x00], 6, 4);

/// The fate of an ARP frame in `frame` from the workload behind `ifindex`: to the kernel if
/// it is IPv4-over-Ethernet ARP in the workload's own name (or a probe's, 0.0.0.0) from the
/// MAC the frame comes from; dropped and counted otherwise. (A sender MAC other than the
/// frame's would have the host's entry for the workload flip at the workload's will.)
#[inline(always)]
pub fn from_workload(frame: Frame, ifindex: u32) -> Outcome {
    // SAFETY: `frame` is the caller's current one; both references are shared, read at
    // once and dropped, and nothing writes the frame meanwhile. (One check at a time: the
    // verifier follows each.)
    let Ok(eth) = (unsafe { ref_at::<EthHdr>(frame, 0) }) else {
        return Outcome::Drop(Counter::DropArpFromWorkload);
    };
    // SAFETY: as above.
    let Ok(arp) = (unsafe { ref_at::<ArpHdr>(frame, EthHdr::LEN) }) else {
        return Outcome::Drop(Counter::DropArpFromWorkload);
    };
    if (arp.htype, arp.ptype, arp.hlen, arp.plen) != ETHERNET_IPV4 || arp.sha != eth.src_addr {
        return Outcome::Drop(Counter::DropArpFromWorkload);
    }
    let sender = arp.spa;
    if sender == [0; 4] || source_belongs(sender, ifindex) {
        Outcome::Pass(Counter::PassArp)
    } else {
        Outcome::Drop(Counter::DropArpFromWorkload)
    }
}
