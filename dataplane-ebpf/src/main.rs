//! eBPF programs of the dataplane: routed forwarding and VXLAN encap/decap, at XDP and at TC
//! (sched_cls).
//!
//! The entry points are thin: [`route`] parses and decides (shared by both hooks), [`vxlan`]
//! recognises and writes tunnel headers, [`counters`] accounts; `xdp` and `tc` only map a
//! decision onto their hook's helpers (how room is made, how a frame is redirected).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod counters;
mod maps;
mod parse;
mod policy;
mod route;
mod softirq;
mod tc;
mod program_log;
mod vxlan;
mod xdp;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// Routed forwarding and VXLAN at XDP: redirects through the `TX_PORTS` device map.
#[xdp]
pub fn xdp_route(ctx: XdpContext) -> u32 {
    xdp::run(&ctx)
}

/// Routed forwarding and VXLAN at TC ingress. A local workload behind a veth is reached with
/// `bpf_redirect_peer` (straight into the workload namespace's ingress, keeping GSO and
/// partial checksums); anything else leaves through `bpf_redirect` on the egress device.
#[classifier]
pub fn tc_route(ctx: TcContext) -> i32 {
    tc::run(&ctx)
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
