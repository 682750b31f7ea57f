//! The packet path, top to bottom, for either hook (`hook::Shim` says how each hook does the
//! few things that differ) and either kind of interface (`route::Role`):
//!
//! 1. route: parse Ethernet and IPv4, check a workload's source address, keep for the kernel
//!    what is its own, look the destination up (or recognise VXLAN from a known tunnel
//!    endpoint on the underlay);
//! 2. VXLAN for this host: strip the tunnel, route the inner packet (a local workload only);
//! 3. policy: the sending workload's egress rules (on its own host) and a local destination's
//!    ingress rules, also on what goes to the kernel, so no frame to or from a workload under
//!    policy leaves unpoliced;
//! 4. to a remote VTEP: encapsulate (or answer "fragmentation needed" if it will not fit);
//!    otherwise rewrite MACs and TTL; redirect.
use dataplane_common::{Counter, NextHop, NextHopKind};

use crate::{
    counters::{Outcome, count},
    decision::Decision,
    hook::Shim,
    icmp,
    parse::{ENCAP_HEADERS_LEN, HEADERS_LEN, Ipv4Hdr, ipv4_dont_fragment},
    policy,
    route::{Ingress, Role, decrement_ttl, only_to_local_workload, rewrite, route},
    vxlan,
};

/// What happens to the frame the hook `h` holds, which arrived on an interface facing `role`.
#[inline(always)]
pub fn process<H: Shim>(h: &H, role: Role) -> Outcome {
    count(H::HOOK, Counter::Rx);
    if h.vlan_tagged() {
        // Forwarded, it would leave with the tag it came with.
        return match role {
            Role::Workload => Outcome::Drop(Counter::DropNotIpFromWorkload),
            Role::Underlay => Outcome::Pass(Counter::PassVlanTagged),
        };
    }
    let from = Ingress {
        role,
        ifindex: h.arrived_on(),
    };
    let (data, data_end) = h.headers(HEADERS_LEN);
    match route(data, data_end, h.frame_len(), from, false) {
        Decision::Decap { strip } => decapsulate(h, strip, from),
        decision => forward(h, decision, from, false),
    }
}

/// Strips the tunnel of a VXLAN frame for this host and routes the inner packet, which only a
/// local workload may receive.
#[inline(always)]
fn decapsulate<H: Shim>(h: &H, strip: usize, from: Ingress) -> Outcome {
    if !h.pop_tunnel(strip) {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    count(H::HOOK, Counter::VxlanDecap);
    let (data, data_end) = h.headers(HEADERS_LEN);
    let inner = only_to_local_workload(route(data, data_end, h.frame_len(), from, true));
    forward(h, inner, from, true)
}

/// Carries out a routing decision: policy first, then encapsulation or a routed hop.
#[inline(always)]
fn forward<H: Shim>(h: &H, decision: Decision, from: Ingress, decapsulated: bool) -> Outcome {
    let (nh, eth, ip) = match decision {
        Decision::Forward { nh, eth, ip } => (nh, eth, ip),
        Decision::ToKernel { reason, ip } => return to_kernel(h, reason, ip, from),
        Decision::Pass(reason) => return Outcome::Pass(reason),
        Decision::Drop(reason) => return Outcome::Drop(reason),
        // A tunnel inside a tunnel: the hooks decapsulate once.
        Decision::Decap { .. } => return Outcome::Drop(Counter::DropVxlanInner),
    };
    let (_, data_end) = h.headers(0);
    let from_workload = from.role == Role::Workload;
    if let Err(reason) = policy::admit(
        H::HOOK,
        ip,
        data_end,
        from_workload,
        nh.is(NextHopKind::Local),
    ) {
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
        egress_slot: nh.egress_slot,
        encapsulated: false,
    }
}

/// Hands an IPv4 packet to the kernel, which may forward it, once policy has had its say: a
/// workload's packets to the host or out of the cluster meet its egress rules (and are
/// recorded, so their replies pass its ingress rules); a packet the programs cannot police
/// (IPv4 options move the ports) is refused if a workload under policy is at either end.
#[inline(always)]
fn to_kernel<H: Shim>(h: &H, reason: Counter, ip: *mut Ipv4Hdr, from: Ingress) -> Outcome {
    let from_workload = from.role == Role::Workload;
    if reason == Counter::PassIpOptions {
        if policy::under_policy(ip, from_workload) {
            return Outcome::Drop(Counter::DropPolicyBypass);
        }
        return Outcome::Pass(reason);
    }
    if from_workload {
        let (_, data_end) = h.headers(0);
        if let Err(refused) = policy::admit(H::HOOK, ip, data_end, true, false) {
            return Outcome::Drop(refused);
        }
    }
    Outcome::Pass(reason)
}

/// Pushes the outer headers for the remote VTEP `nh` in front of the packet at `ip`.
#[inline(always)]
fn encapsulate<H: Shim>(h: &H, nh: &NextHop, ip: *mut Ipv4Hdr) -> Outcome {
    if !h.fits_tunnel(nh.mtu) {
        // With DF the sender learns the tunnel's MTU; without, only fragmentation would do,
        // which the programs leave to the kernel.
        if ipv4_dont_fragment(ip) {
            return icmp::frag_needed(h, nh);
        }
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
        egress_slot: nh.egress_slot,
        encapsulated: true,
    }
}
