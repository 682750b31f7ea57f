//! The XDP hook: room is made with `bpf_xdp_adjust_head`, frames leave through the
//! `TX_PORTS` device map.
use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use dataplane_common::{
    Counter, Hook, NextHop,
    checksum::{csum_replace_addr, csum_replace_port},
    services::Endpoint,
    vxlan::VXLAN_OVERHEAD,
};

use super::{Shim, Side};
use crate::{
    counters::Outcome,
    maps::TX_PORTS,
    parse::{EthHdr, IPPROTO_TCP, IPPROTO_UDP, Ipv4Hdr, ptr_at},
};

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

    #[inline(always)]
    fn translate(
        &self,
        ip: *mut Ipv4Hdr,
        data_end: usize,
        side: Side,
        from: &Endpoint,
        to: &Endpoint,
    ) -> bool {
        // XDP frames carry full checksums (no offload state yet): RFC 1624 updates in place.
        let proto = unsafe { (*ip).proto };
        let l4 = ip as usize + Ipv4Hdr::LEN;
        let l4_check = if proto == IPPROTO_TCP {
            ptr_at::<[u8; 2]>(l4, data_end, 16)
        } else {
            ptr_at::<[u8; 2]>(l4, data_end, 6)
        };
        let Some(ports) = ptr_at::<[[u8; 2]; 2]>(l4, data_end, 0) else {
            return false;
        };
        let Some(l4_check) = l4_check else {
            return false;
        };
        unsafe {
            (*ip).check = csum_replace_addr((*ip).check, from.addr, to.addr);
            let check = *l4_check;
            if !(proto == IPPROTO_UDP && check == [0, 0]) {
                let c = csum_replace_addr(check, from.addr, to.addr);
                let c = csum_replace_port(c, from.port, to.port);
                // A UDP checksum that comes out zero is sent as all ones (zero means none).
                *l4_check = if proto == IPPROTO_UDP && c == [0, 0] {
                    [0xff, 0xff]
                } else {
                    c
                };
            }
            match side {
                Side::Source => {
                    (*ip).src_addr = to.addr;
                    (*ports)[0] = to.port;
                }
                Side::Destination => {
                    (*ip).dst_addr = to.addr;
                    (*ports)[1] = to.port;
                }
            }
        }
        true
    }
}
