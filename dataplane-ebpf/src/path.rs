//! The packet path, top to bottom, for either hook (`hook::Shim` says how each hook does the
//! few things that differ):
//!
//! 1. route: parse Ethernet and IPv4, keep for the kernel what is its own, look the
//!    destination up (or recognise VXLAN for this host);
//! 2. VXLAN for this host: strip the tunnel, route the inner packet (a local workload only);
//! 3. policy: the source's egress and the destination's ingress rules;
//! 4. to a remote VTEP: encapsulate; otherwise rewrite MACs and TTL; redirect.
use dataplane_common::{Counter, NextHop, NextHopKind};

use crate::{
    counters::{Outcome, count},
    decision::Decision,
    hook::Shim,
    parse::{ENCAP_HEADERS_LEN, HEADERS_LEN, Ipv4Hdr},
    policy,
    route::{decrement_ttl, only_to_local_workload, rewrite, route},
    vxlan,
};

/// What happens to the frame the hook `h` holds.
#[inline(always)]
pub fn process<H: Shim>(h: &H) -> Outcome {
    count(H::HOOK, Counter::Rx);
    let (data, data_end) = h.headers(HEADERS_LEN);
    match route(data, data_end, h.frame_len()) {
        Decision::Decap { strip } => decapsulate(h, strip),
        decision => forward(h, decision, false),
    }
}

/// Strips the tunnel of a VXLAN frame for this host and routes the inner packet, which only a
/// local workload may receive.
#[inline(always)]
fn decapsulate<H: Shim>(h: &H, strip: usize) -> Outcome {
    if !h.pop_tunnel(strip) {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    count(H::HOOK, Counter::VxlanDecap);
    let (data, data_end) = h.headers(HEADERS_LEN);
    let inner = only_to_local_workload(route(data, data_end, h.frame_len()));
    forward(h, inner, true)
}

/// Carries out a routing decision: policy first, then encapsulation or a routed hop.
#[inline(always)]
fn forward<H: Shim>(h: &H, decision: Decision, decapsulated: bool) -> Outcome {
    let (nh, eth, ip) = match decision {
        Decision::Forward { nh, eth, ip } => (nh, eth, ip),
        Decision::Pass(reason) => return Outcome::Pass(reason),
        Decision::Drop(reason) => return Outcome::Drop(reason),
        // A tunnel inside a tunnel: the hooks decapsulate once.
        Decision::Decap { .. } => return Outcome::Drop(Counter::DropVxlanInner),
    };
    let (_, data_end) = h.headers(0);
    if let Err(reason) = policy::admit(H::HOOK, ip, data_end, &nh) {
        return Outcome::Drop(reason);
    }
    if nh.is(NextHopKind::Vxlan) {
        return encapsulate(h, &nh, ip);
    }
    // Redirect first: it only records the target, so a failure leaves the frame untouched.
    if !h.redirect(&nh) {
        return H::redirect_failed(decapsulated);
    }
    rewrite(eth, ip, &nh);
    Outcome::Redirected {
        egress: nh.ifindex,
        encapsulated: false,
    }
}

/// Pushes the outer headers for the remote VTEP `nh` in front of the packet at `ip`.
#[inline(always)]
fn encapsulate<H: Shim>(h: &H, nh: &NextHop, ip: *mut Ipv4Hdr) -> Outcome {
    if !h.fits_tunnel(nh.mtu) {
        return Outcome::Pass(Counter::PassTooBig);
    }
    if !h.redirect(nh) {
        return H::redirect_failed(false);
    }
    let (data, data_end) = h.headers(0);
    let sport = vxlan::source_port(data, data_end, ip);
    decrement_ttl(ip);
    if !h.push_tunnel() {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    // Every pointer moved: re-derive from the context.
    let (data, data_end) = h.headers(ENCAP_HEADERS_LEN);
    if !vxlan::write_headers(data, data_end, h.frame_len(), nh, sport) {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    Outcome::Redirected {
        egress: nh.ifindex,
        encapsulated: true,
    }
}
