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
    ipv4::{self, Ipv4Hdr},
    maps::TX_PORTS,
    parse::{EthHdr, Frame, IPPROTO_TCP, IPPROTO_UDP, ref_mut_at},
};

impl Shim for XdpContext {
    const HOOK: Hook = Hook::Xdp;

    #[inline(always)]
    fn headers(&self, _want: usize) -> Frame {
        // SAFETY: the context's packet bounds, read now.
        unsafe { Frame::new(self.data(), self.data_end()) }
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.data_end() - self.data()
    }

    #[inline(always)]
    fn arrived_on(&self) -> u32 {
        // SAFETY: `ctx` is the `xdp_md` the kernel passed the program, valid while it runs.
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
        // SAFETY: the helper checks the new head against the buffer itself; it moves the data,
        // which the trait's contract makes every caller re-derive.
        unsafe { bpf_xdp_adjust_head(self.ctx, -(VXLAN_OVERHEAD as i32)) == 0 }
    }

    #[inline(always)]
    fn pop_tunnel(&self, strip: usize) -> bool {
        // SAFETY: as in `push_tunnel`.
        unsafe { bpf_xdp_adjust_head(self.ctx, strip as i32) == 0 }
    }

    #[inline(always)]
    fn grow_after_ethernet(&self, len: usize) -> bool {
        // Growing at the front moves the Ethernet header forward too; the caller rewrites it.
        // SAFETY: as in `push_tunnel`.
        unsafe { bpf_xdp_adjust_head(self.ctx, -(len as i32)) == 0 }
    }

    #[inline(always)]
    fn truncate(&self, len: usize) -> bool {
        let delta = len as i32 - self.frame_len() as i32;
        // SAFETY: the helper checks the new tail against the buffer itself; callers re-derive.
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
    fn translate_v4(&self, proto: u8, side: Side, from: &Endpoint, to: &Endpoint) -> bool {
        // XDP frames carry full checksums (no offload state yet): RFC 1624 updates in place.
        let check_at = if proto == IPPROTO_TCP { 16 } else { 6 };
        let frame = self.headers(0);
        // Each reference is checked as it is made: the verifier wants the bound next to its use.
        // SAFETY: a frame read just now; the caller holds no reference into it (the trait's
        // contract), the three references cover disjoint bytes (IPv4 header, ports, L4
        // checksum: 14..34, 34..38, and 40..42 or 50..52) and no helper runs while they live.
        let Ok(ip) = (unsafe { ref_mut_at::<Ipv4Hdr>(frame, ipv4::IP_AT) }) else {
            return false;
        };
        // SAFETY: as above.
        let Ok(ports) = (unsafe { ref_mut_at::<[[u8; 2]; 2]>(frame, ipv4::L4_AT) }) else {
            return false;
        };
        // SAFETY: as above.
        let Ok(l4_check) = (unsafe { ref_mut_at::<[u8; 2]>(frame, ipv4::L4_AT + check_at) }) else {
            return false;
        };
        ip.check = csum_replace_addr(ip.check, from.addr, to.addr);
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
                ip.src_addr = to.addr;
                ports[0] = to.port;
            }
            Side::Destination => {
                ip.dst_addr = to.addr;
                ports[1] = to.port;
            }
        }
        true
    }
}
