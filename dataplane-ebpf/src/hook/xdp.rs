//! The XDP hook: room is made with `bpf_xdp_adjust_head`, frames leave through the
//! `TX_PORTS` device map.
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
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
}
