//! The TC hook: room is made with `bpf_skb_adjust_room` (which keeps GSO working, shrinking
//! segments by the tunnel overhead), frames leave through `bpf_redirect_peer` (a local
//! workload behind a veth) or `bpf_redirect` (anything else).
use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_REDIRECT,
        bpf_adj_room_mode,
    },
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_change_tail},
    programs::TcContext,
};
use dataplane_common::{
    Counter, Hook, NH_FLAG_VETH_PEER, NextHop, services::Endpoint, vxlan::VXLAN_OVERHEAD,
};

use super::{Shim, Side};
use crate::{
    counters::Outcome,
    ipv4,
    parse::{EthHdr, Frame, IPPROTO_TCP, IPPROTO_UDP},
};

/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)`: length of the inner L2 header the tunnel carries.
const ENCAP_L2_ETH_LEN: u64 = (EthHdr::LEN as u64) << 56;

/// Where an IPv4 translation writes (the helpers take offsets from the frame's start), in a
/// frame whose option-less IPv4 header follows the Ethernet header: the address and port of
/// `side`, and the L4 checksum of `proto` (TCP or UDP).
#[derive(Clone, Copy)]
pub struct NatOffsetsV4 {
    pub addr: usize,
    pub port: usize,
    pub l4_check: usize,
}

/// Offset of the IPv4 header checksum.
pub const IPV4_CHECK_AT: usize = ipv4::IP_AT + 10;

impl NatOffsetsV4 {
    #[inline(always)]
    pub fn of(proto: u8, side: Side) -> Self {
        let l4 = ipv4::L4_AT;
        let (addr, port) = match side {
            Side::Source => (ipv4::IP_AT + 12, l4),
            Side::Destination => (ipv4::IP_AT + 16, l4 + 2),
        };
        let l4_check = l4 + if proto == IPPROTO_TCP { 16 } else { 6 };
        NatOffsetsV4 {
            addr,
            port,
            l4_check,
        }
    }
}

impl Shim for TcContext {
    const HOOK: Hook = Hook::Tc;

    #[inline(always)]
    fn headers(&self, want: usize) -> Frame {
        // A failed pull leaves the linear part shorter, and the parsers then refuse the frame.
        let linear = self.data_end() - self.data();
        if linear < want && self.len() as usize > linear {
            let _ = self.pull_data(want as u32);
        }
        // SAFETY: the context's packet bounds, read after the pull.
        unsafe { Frame::new(self.data(), self.data_end()) }
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len() as usize
    }

    #[inline(always)]
    fn arrived_on(&self) -> u32 {
        // SAFETY: `skb` is the `__sk_buff` the kernel passed the program, valid while it runs.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn vlan_tagged(&self) -> bool {
        // SAFETY: as in `arrived_on`.
        unsafe { (*self.skb.skb).vlan_present != 0 }
    }

    #[inline(always)]
    fn redirect(&self, nh: &NextHop) -> bool {
        // SAFETY: the helpers take an ifindex and flags, nothing the kernel does not check.
        let action = unsafe {
            if nh.flags & NH_FLAG_VETH_PEER != 0 {
                bpf_redirect_peer(nh.ifindex, 0)
            } else {
                bpf_redirect(nh.ifindex, 0)
            }
        };
        action == TC_ACT_REDIRECT as i64
    }

    #[inline(always)]
    fn redirect_failed(_decapsulated: bool) -> Outcome {
        Outcome::Drop(Counter::DropRedirectError)
    }

    #[inline(always)]
    fn fits_tunnel(&self, mtu: u16) -> bool {
        // A GSO packet's segments shrink by the overhead in adjust_room, so they fit wherever
        // the workload's own segments fit; a single packet must fit the underlay MTU itself.
        // SAFETY: as in `arrived_on`.
        let gso = unsafe { (*self.skb.skb).gso_size } != 0;
        gso || self.frame_len() - EthHdr::LEN + VXLAN_OVERHEAD as usize <= mtu as usize
    }

    #[inline(always)]
    fn push_tunnel(&self) -> bool {
        let flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
            | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
            | BPF_F_ADJ_ROOM_ENCAP_L2_ETH;
        let mode = bpf_adj_room_mode::BPF_ADJ_ROOM_MAC;
        self.adjust_room(VXLAN_OVERHEAD as i32, mode, flags as u64 | ENCAP_L2_ETH_LEN)
            .is_ok()
    }

    #[inline(always)]
    fn grow_after_ethernet(&self, len: usize) -> bool {
        let mode = bpf_adj_room_mode::BPF_ADJ_ROOM_MAC;
        self.adjust_room(len as i32, mode, 0).is_ok()
    }

    #[inline(always)]
    fn truncate(&self, len: usize) -> bool {
        // SAFETY: the helper checks the new length against the skb itself; it rewrites packet
        // data, which the trait's contract makes every caller re-derive.
        unsafe { bpf_skb_change_tail(self.skb.skb, len as u32, 0) == 0 }
    }

    #[inline(always)]
    fn send_back(&self) -> bool {
        // SAFETY: as in `redirect`.
        unsafe { bpf_redirect(self.arrived_on(), 0) == TC_ACT_REDIRECT as i64 }
    }

    #[inline(always)]
    fn pop_tunnel(&self, strip: usize) -> bool {
        // Shrinking at the MAC layer removes what follows the outer Ethernet header: outer
        // IPv4, UDP, VXLAN and the inner Ethernet header. The outer Ethernet header stays (its
        // type is IPv4, as the inner one's) and gets the workload's MACs. `strip` counts the
        // outer Ethernet header, which stays, but not the inner one, which goes.
        let mode = bpf_adj_room_mode::BPF_ADJ_ROOM_MAC;
        self.adjust_room(-(strip as i32), mode, BPF_F_ADJ_ROOM_DECAP_L3_IPV4 as u64)
            .is_ok()
    }

    #[inline(always)]
    fn translate_v4(&self, proto: u8, side: Side, from: &Endpoint, to: &Endpoint) -> bool {
        // The helpers know the skb's checksum state: a CHECKSUM_PARTIAL packet (a workload's
        // GSO traffic) holds only the pseudo-header's sum, which they update as such. They
        // check the offsets against the packet themselves.
        let at = NatOffsetsV4::of(proto, side);
        let zero_stays = if proto == IPPROTO_UDP {
            BPF_F_MARK_MANGLED_0 as u64
        } else {
            0
        };
        let (from_addr, to_addr) = (
            u32::from_ne_bytes(from.addr) as u64,
            u32::from_ne_bytes(to.addr) as u64,
        );
        let (from_port, to_port) = (
            u16::from_ne_bytes(from.port) as u64,
            u16::from_ne_bytes(to.port) as u64,
        );
        self.l4_csum_replace(
            at.l4_check,
            from_addr,
            to_addr,
            BPF_F_PSEUDO_HDR as u64 | zero_stays | 4,
        )
        .is_ok()
            && self
                .l4_csum_replace(at.l4_check, from_port, to_port, zero_stays | 2)
                .is_ok()
            && self
                .l3_csum_replace(IPV4_CHECK_AT, from_addr, to_addr, 4)
                .is_ok()
            && self.store(at.addr, &to.addr, 0).is_ok()
            && self.store(at.port, &to.port, 0).is_ok()
    }
}
