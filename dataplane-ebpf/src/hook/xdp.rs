//! The XDP hook: room is made with `bpf_xdp_adjust_head`, frames leave through the
//! `TX_PORTS` device map.
use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use dataplane_common::{Counter, Hook, NextHop, vxlan::VXLAN_OVERHEAD};

use super::Shim;
use crate::{counters::Outcome, maps::TX_PORTS, parse::EthHdr};

impl Shim for XdpContext {
    const HOOK: Hook = Hook::Xdp;

    #[inline(always)]
    fn headers(&self, _want: usize) -> (usize, usize) {
        (self.data(), self.data_end())
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.data_end() - self.data()
    }

    #[inline(always)]
    fn arrived_on(&self) -> u32 {
        unsafe { (*self.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn vlan_tagged(&self) -> bool {
        // XDP sees the tag itself: such a frame is not IPv4 to the parser.
        false
    }

    #[inline(always)]
    fn redirect(&self, nh: &NextHop) -> bool {
        TX_PORTS.redirect(nh.ifindex, 0).is_ok()
    }

    #[inline(always)]
    fn redirect_failed(decapsulated: bool) -> Outcome {
        // The frame is untouched: the kernel can have it, unless it was stripped of its tunnel.
        if decapsulated {
            Outcome::Drop(Counter::DropVxlanInner)
        } else {
            Outcome::Pass(Counter::PassNoTxPort)
        }
    }

    #[inline(always)]
    fn fits_tunnel(&self, mtu: u16) -> bool {
        self.frame_len() - EthHdr::LEN + VXLAN_OVERHEAD as usize <= mtu as usize
    }

    #[inline(always)]
    fn push_tunnel(&self) -> bool {
        unsafe { bpf_xdp_adjust_head(self.ctx, -(VXLAN_OVERHEAD as i32)) == 0 }
    }

    #[inline(always)]
    fn pop_tunnel(&self, strip: usize) -> bool {
        unsafe { bpf_xdp_adjust_head(self.ctx, strip as i32) == 0 }
    }

    #[inline(always)]
    fn grow_after_ethernet(&self, len: usize) -> bool {
        // Growing at the front moves the Ethernet header forward too; the caller rewrites it.
        unsafe { bpf_xdp_adjust_head(self.ctx, -(len as i32)) == 0 }
    }

    #[inline(always)]
    fn truncate(&self, len: usize) -> bool {
        let delta = len as i32 - self.frame_len() as i32;
        unsafe { bpf_xdp_adjust_tail(self.ctx, delta) == 0 }
    }

    #[inline(always)]
    fn send_back(&self) -> bool {
        // Through the device map, not XDP_TX: a veth flushes XDP_TX frames to its peer only
        // when the peer runs an XDP program, while a redirect is delivered to a peer that has
        // GRO on, as the wiring step leaves every XDP workload (the ingress interface is a
        // port of the map: routes lead out of it).
        TX_PORTS.redirect(self.arrived_on(), 0).is_ok()
    }
}
