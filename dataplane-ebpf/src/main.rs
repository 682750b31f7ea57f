//! eBPF programs of the dataplane: routed forwarding, VXLAN encap/decap and policy, at XDP
//! and at TC (sched_cls).
//!
//! The entry points only map the packet path's outcome onto their hook's verdicts. The path
//! itself is [`path`], written once over the [`hook::Shim`] each hook implements. What depends
//! on the address family lives in the family's module ([`ipv4`]: header, route step, policy
//! and service keys, the ICMP answer); what does not is shared: [`path`] (the Ethernet step,
//! the tunnel steps), [`parse`] (the frame accessors), [`vxlan`], [`policy`] and [`services`]
//! (what their families share), [`counters`] and the hooks' redirects.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod counters;
mod hook;
mod ipv4;
mod maps;
mod object;
mod parse;
mod path;
mod policy;
mod program_log;
mod services;
mod vxlan;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use dataplane_common::Hook;

use crate::{
    counters::{Outcome, account},
    path::Role,
    program_log::log_outcome,
};

/// XDP on a workload's interface: redirects through the `TX_PORTS` device map.
#[xdp]
pub fn xdp_workload(ctx: XdpContext) -> u32 {
    xdp_verdict(finish(&ctx, Hook::Xdp, path::process(&ctx, Role::Workload)))
}

/// XDP on an interface facing other hosts (tunnels end here).
#[xdp]
pub fn xdp_underlay(ctx: XdpContext) -> u32 {
    xdp_verdict(finish(&ctx, Hook::Xdp, path::process(&ctx, Role::Underlay)))
}

/// TC ingress on a workload's interface. A local workload behind a veth is reached with
/// `bpf_redirect_peer` (straight into the workload namespace's ingress, keeping GSO and
/// partial checksums); anything else leaves through `bpf_redirect` on the egress device.
#[classifier]
pub fn tc_workload(ctx: TcContext) -> i32 {
    tc_verdict(finish(&ctx, Hook::Tc, path::process(&ctx, Role::Workload)))
}

/// TC ingress on an interface facing other hosts (tunnels end here).
#[classifier]
pub fn tc_underlay(ctx: TcContext) -> i32 {
    tc_verdict(finish(&ctx, Hook::Tc, path::process(&ctx, Role::Underlay)))
}

/// Passes everything. Attached to a workload's end of a veth so that frames XDP-redirected
/// into that veth are delivered (a veth drops `ndo_xdp_xmit` frames unless its peer runs NAPI,
/// which an attached XDP program or GRO turns on).
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn xdp_verdict(outcome: Outcome) -> u32 {
    match outcome {
        Outcome::Pass(_) => xdp_action::XDP_PASS,
        Outcome::Drop(_) => xdp_action::XDP_DROP,
        Outcome::Redirected { .. } | Outcome::Replied(_) => xdp_action::XDP_REDIRECT,
    }
}

#[inline(always)]
fn tc_verdict(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Pass(_) => TC_ACT_OK,
        Outcome::Drop(_) => TC_ACT_SHOT,
        Outcome::Redirected { .. } | Outcome::Replied(_) => TC_ACT_REDIRECT,
    }
}

/// Counts and logs how the frame left, the same way for every hook.
#[inline(always)]
fn finish<C: aya_ebpf::EbpfContext>(ctx: &C, hook: Hook, outcome: Outcome) -> Outcome {
    account(hook, &outcome);
    log_outcome(ctx, hook, &outcome);
    outcome
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
