//! The TC hook: room is made with `bpf_skb_adjust_room` (which keeps GSO working, shrinking
//! segments by the tunnel overhead), frames leave through `bpf_redirect_peer` (a local
//! workload behind a veth) or `bpf_redirect` (anything else).
use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, bpf_adj_room_mode,
    },
    helpers::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use dataplane::shared::{
    HOOK_TC, NEXTHOP_VXLAN, NH_FLAG_VETH_PEER, NextHop, VXLAN_OVERHEAD, counter,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    counters::{Outcome, account, count},
    program_log::log_outcome,
    route::{self, Decision, decrement_ttl, only_to_local_workload, rewrite, route},
    vxlan,
};

/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)`: length of the inner L2 header the tunnel carries.
const ENCAP_L2_ETH_LEN: u64 = (EthHdr::LEN as u64) << 56;

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    count(HOOK_TC, counter::RX);
    let (data, data_end) = headers(ctx, route::HEADERS_LEN);
    let outcome = match route(data, data_end, ctx.len() as usize) {
        Decision::Decap { strip } => decap(ctx, strip),
        decision => decide(ctx, decision),
    };
    account(HOOK_TC, &outcome);
    log_outcome(ctx, HOOK_TC, &outcome);
    match outcome {
        Outcome::Pass(_) => TC_ACT_OK as i32,
        Outcome::Drop(_) => TC_ACT_SHOT as i32,
        Outcome::Redirected { .. } => TC_ACT_REDIRECT as i32,
    }
}

/// The packet's linear data, pulled so that at least `want` bytes are directly readable when
/// the packet has them (a failed pull leaves it shorter, and the parsers then refuse it).
#[inline(always)]
fn headers(ctx: &TcContext, want: usize) -> (usize, usize) {
    let linear = ctx.data_end() - ctx.data();
    if linear < want && ctx.len() as usize > linear {
        let _ = ctx.pull_data(want as u32);
    }
    (ctx.data(), ctx.data_end())
}

#[inline(always)]
fn decide(ctx: &TcContext, decision: Decision) -> Outcome {
    let (nh, eth, ip) = match decision.into_forward(HOOK_TC, ctx.data_end()) {
        Ok(forward) => forward,
        Err(outcome) => return outcome,
    };
    if nh.kind == NEXTHOP_VXLAN {
        return encap(ctx, &nh, ip);
    }
    if !redirect(&nh) {
        return Outcome::Drop(counter::DROP_REDIRECT_ERROR);
    }
    rewrite(eth, ip, &nh);
    Outcome::Redirected {
        egress: nh.ifindex,
        encapsulated: false,
    }
}

#[inline(always)]
fn redirect(nh: &NextHop) -> bool {
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
fn decap(ctx: &TcContext, strip: usize) -> Outcome {
    // Shrinking at the MAC layer removes what follows the outer Ethernet header: outer IPv4,
    // UDP, VXLAN and the inner Ethernet header. The outer Ethernet header stays (its type is
    // IPv4, as the inner one's) and gets the workload's MACs.
    // `strip` counts the outer Ethernet header, which stays, but not the inner one, which goes.
    let shrink = -(strip as i32);
    let mode = bpf_adj_room_mode::BPF_ADJ_ROOM_MAC;
    if ctx
        .adjust_room(shrink, mode, BPF_F_ADJ_ROOM_DECAP_L3_IPV4 as u64)
        .is_err()
    {
        return Outcome::Drop(counter::DROP_ADJUST_FAILED);
    }
    count(HOOK_TC, counter::VXLAN_DECAP);
    let (data, data_end) = headers(ctx, route::HEADERS_LEN);
    let inner = only_to_local_workload(route(data, data_end, ctx.len() as usize));
    decide(ctx, inner)
}

#[inline(always)]
fn encap(ctx: &TcContext, nh: &NextHop, ip: *mut Ipv4Hdr) -> Outcome {
    let len = ctx.len() as usize;
    // A GSO packet's segments shrink by the overhead in adjust_room, so they fit wherever the
    // workload's own segments fit; a single packet must fit the underlay MTU itself.
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    if !gso && len - EthHdr::LEN + VXLAN_OVERHEAD as usize > nh.mtu as usize {
        return Outcome::Pass(counter::PASS_TOO_BIG);
    }
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let sport = vxlan::source_port(data, data_end, ip);
    decrement_ttl(ip);
    let flags =
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH;
    let mode = bpf_adj_room_mode::BPF_ADJ_ROOM_MAC;
    if ctx
        .adjust_room(VXLAN_OVERHEAD as i32, mode, flags as u64 | ENCAP_L2_ETH_LEN)
        .is_err()
    {
        return Outcome::Drop(counter::DROP_ADJUST_FAILED);
    }
    let (data, data_end) = headers(ctx, vxlan::ENCAP_HEADERS_LEN);
    if !vxlan::write_headers(data, data_end, ctx.len() as usize, nh, sport) {
        return Outcome::Drop(counter::DROP_ADJUST_FAILED);
    }
    if unsafe { bpf_redirect(nh.ifindex, 0) } != TC_ACT_REDIRECT as i64 {
        return Outcome::Drop(counter::DROP_REDIRECT_ERROR);
    }
    Outcome::Redirected {
        egress: nh.ifindex,
        encapsulated: true,
    }
}
