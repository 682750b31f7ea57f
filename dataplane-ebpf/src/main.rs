//! eBPF programs of the dataplane: routed forwarding at XDP and at TC (sched_cls).
//!
//! The entry points are thin: the shared [`route`] module parses and decides, [`counters`]
//! accounts, and each entry point only maps the decision onto its hook's redirect mechanism.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod counters;
mod maps;
mod parse;
mod route;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, xdp_action},
    helpers::{bpf_redirect, bpf_redirect_peer},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use dataplane::shared::{HOOK_TC, HOOK_XDP, NH_FLAG_VETH_PEER, counter};

use crate::{
    counters::{count, count_forwarded},
    maps::TX_PORTS,
    route::{Decision, rewrite, route},
};

/// Routed forwarding at XDP: redirects through the `TX_PORTS` device map.
#[xdp]
pub fn xdp_route(ctx: XdpContext) -> u32 {
    count(HOOK_XDP, counter::RX);
    let (data, data_end) = (ctx.data(), ctx.data_end());
    match route(data, data_end, data_end - data) {
        Decision::Pass(reason) => {
            count(HOOK_XDP, reason);
            xdp_action::XDP_PASS
        }
        Decision::Forward { nh, eth, ip } => {
            // Redirect first: it only records the target. If the port is missing the frame goes
            // to the kernel still untouched.
            match TX_PORTS.redirect(nh.ifindex, 0) {
                Ok(action) => {
                    rewrite(eth, ip, &nh);
                    count_forwarded(HOOK_XDP, nh.ifindex);
                    action
                }
                Err(_) => {
                    count(HOOK_XDP, counter::PASS_NO_TX_PORT);
                    xdp_action::XDP_PASS
                }
            }
        }
    }
}

/// Routed forwarding at TC ingress. A local workload behind a veth is reached with
/// `bpf_redirect_peer` (straight into the workload namespace's ingress, keeping GSO and
/// partial checksums); anything else leaves through `bpf_redirect` on the egress device.
#[classifier]
pub fn tc_route(ctx: TcContext) -> i32 {
    count(HOOK_TC, counter::RX);
    // Headers must sit in the linear part for direct access; pull them there if needed (a
    // failed pull leaves the frame short, and `route` then passes it as malformed).
    let linear = ctx.data_end() - ctx.data();
    if linear < route::HEADERS_LEN && ctx.len() as usize > linear {
        let _ = ctx.pull_data(route::HEADERS_LEN as u32);
    }
    let (data, data_end) = (ctx.data(), ctx.data_end());
    match route(data, data_end, ctx.len() as usize) {
        Decision::Pass(reason) => {
            count(HOOK_TC, reason);
            TC_ACT_OK as i32
        }
        Decision::Forward { nh, eth, ip } => {
            let action = unsafe {
                if nh.flags & NH_FLAG_VETH_PEER != 0 {
                    bpf_redirect_peer(nh.ifindex, 0)
                } else {
                    bpf_redirect(nh.ifindex, 0)
                }
            };
            if action != TC_ACT_REDIRECT as i64 {
                count(HOOK_TC, counter::DROP_REDIRECT_ERROR);
                return action as i32;
            }
            rewrite(eth, ip, &nh);
            count_forwarded(HOOK_TC, nh.ifindex);
            TC_ACT_REDIRECT as i32
        }
    }
}

/// Passes everything. Attached to a workload's end of a veth so that frames XDP-redirected
/// into that veth are delivered (a veth drops `ndo_xdp_xmit` frames unless its peer runs NAPI,
/// which an attached XDP program or GRO turns on).
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
