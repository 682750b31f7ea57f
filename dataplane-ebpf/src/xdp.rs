//! The XDP hook: room is made with `bpf_xdp_adjust_head`, frames leave through the
//! `TX_PORTS` device map.
use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use dataplane::shared::{HOOK_XDP, NEXTHOP_VXLAN, NextHop, VXLAN_OVERHEAD, counter};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    counters::{Outcome, account, count},
    program_log::log_outcome,
    maps::TX_PORTS,
    route::{Decision, decrement_ttl, only_to_local_workload, rewrite, route},
    vxlan,
};

#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    count(HOOK_XDP, counter::RX);
    let outcome = match route(ctx.data(), ctx.data_end(), ctx.data_end() - ctx.data()) {
        Decision::Decap { strip } => decap(ctx, strip),
        decision => decide(ctx, decision, false),
    };
    account(HOOK_XDP, &outcome);
    log_outcome(ctx, HOOK_XDP, &outcome);
    match outcome {
        Outcome::Pass(_) => xdp_action::XDP_PASS,
        Outcome::Drop(_) => xdp_action::XDP_DROP,
        Outcome::Redirected { .. } => xdp_action::XDP_REDIRECT,
    }
}

#[inline(always)]
fn decide(ctx: &XdpContext, decision: Decision, decapsulated: bool) -> Outcome {
    let (nh, eth, ip) = match decision.into_forward(HOOK_XDP, ctx.data_end()) {
        Ok(forward) => forward,
        Err(outcome) => return outcome,
    };
    if nh.kind == NEXTHOP_VXLAN {
        return encap(ctx, &nh, ip);
    }
    // Redirect first: it only records the target. If the port is missing the frame goes to
    // the kernel still untouched (or, stripped of its tunnel, is dropped).
    if TX_PORTS.redirect(nh.ifindex, 0).is_err() {
        return if decapsulated {
            Outcome::Drop(counter::DROP_VXLAN_INNER)
        } else {
            Outcome::Pass(counter::PASS_NO_TX_PORT)
        };
    }
    rewrite(eth, ip, &nh);
    Outcome::Redirected {
        egress: nh.ifindex,
        encapsulated: false,
    }
}

#[inline(always)]
fn decap(ctx: &XdpContext, strip: usize) -> Outcome {
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, strip as i32) } != 0 {
        return Outcome::Drop(counter::DROP_ADJUST_FAILED);
    }
    count(HOOK_XDP, counter::VXLAN_DECAP);
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let inner = only_to_local_workload(route(data, data_end, data_end - data));
    decide(ctx, inner, true)
}

#[inline(always)]
fn encap(ctx: &XdpContext, nh: &NextHop, ip: *mut Ipv4Hdr) -> Outcome {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let frame_len = data_end - data;
    if frame_len - EthHdr::LEN + VXLAN_OVERHEAD as usize > nh.mtu as usize {
        return Outcome::Pass(counter::PASS_TOO_BIG);
    }
    if TX_PORTS.redirect(nh.ifindex, 0).is_err() {
        return Outcome::Pass(counter::PASS_NO_TX_PORT);
    }
    let sport = vxlan::source_port(data, data_end, ip);
    decrement_ttl(ip);
    let grow = -(VXLAN_OVERHEAD as i32);
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, grow) } != 0 {
        return Outcome::Drop(counter::DROP_ADJUST_FAILED);
    }
    // Every pointer moved: re-derive from the context.
    let total = frame_len + VXLAN_OVERHEAD as usize;
    if !vxlan::write_headers(ctx.data(), ctx.data_end(), total, nh, sport) {
        return Outcome::Drop(counter::DROP_ADJUST_FAILED);
    }
    Outcome::Redirected {
        egress: nh.ifindex,
        encapsulated: true,
    }
}
