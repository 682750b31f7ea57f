//! The packet path, top to bottom, for either hook (`hook::Shim` says how each hook does the
//! few things that differ) and either kind of interface (`route::Role`):
//!
//! 1. route: parse Ethernet and IPv4, check a workload's source address, keep for the kernel
//!    what is its own, look the destination up (or recognise VXLAN from a known tunnel
//!    endpoint on the underlay);
//! 2. VXLAN for this host: strip the tunnel, route the inner packet (a local workload only);
//!    a workload's connection to a service: give it its backend (`services`), route again;
//! 3. policy: the sending workload's egress rules (on its own host) and a local destination's
//!    ingress rules, also on what goes to the kernel, so no frame to or from a workload under
//!    policy leaves unpoliced;
//! 4. to a remote VTEP: encapsulate (or answer "fragmentation needed" if it will not fit);
//!    otherwise redirect, give a backend's reply to a local client its service's address,
//!    rewrite MACs and TTL.
use dataplane_common::{
    Counter, NextHop, NextHopKind,
    policy::FlowKey,
    services::{Endpoint, ServiceValue},
};

use crate::{
    counters::{Outcome, count},
    decision::Decision,
    hook::{Shim, Side},
    icmp,
    parse::{ENCAP_HEADERS_LEN, EthHdr, HEADERS_LEN, Ipv4Hdr, ipv4_dont_fragment, ptr_at},
    policy,
    route::{Ingress, Pass, Role, decrement_ttl, only_to_local_workload, rewrite, route},
    services, vxlan,
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
    match route(data, data_end, h.frame_len(), from, Pass::Arrived) {
        Decision::Decap { strip } => decapsulate(h, strip, from),
        Decision::ToService { service, flow, ip } => to_service(h, &service, &flow, ip, from),
        decision => forward(h, decision, from, false),
    }
}

/// Sends a workload's `flow` to a service on to the service's backend for it: the
/// destination rewritten, the packet routed again.
#[inline(always)]
fn to_service<H: Shim>(
    h: &H,
    service: &ServiceValue,
    flow: &FlowKey,
    ip: *mut Ipv4Hdr,
    from: Ingress,
) -> Outcome {
    let (_, data_end) = h.headers(0);
    let opens = services::opens_a_connection(flow.proto, ip as usize + Ipv4Hdr::LEN, data_end);
    let backend = match services::backend_for(H::HOOK, flow, service, opens) {
        Ok(backend) => backend,
        Err(reason) => return Outcome::Drop(reason),
    };
    let front = Endpoint {
        addr: flow.dst,
        port: flow.dport,
        _pad: [0; 2],
    };
    if !h.translate(ip, data_end, Side::Destination, &front, &backend) {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    let (data, data_end) = h.headers(HEADERS_LEN);
    let translated = route(data, data_end, h.frame_len(), from, Pass::Translated);
    forward(h, translated, from, false)
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
    let inner = only_to_local_workload(route(
        data,
        data_end,
        h.frame_len(),
        from,
        Pass::Decapsulated,
    ));
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
        // A backend that is itself a service (the loader refuses such a table).
        Decision::ToService { .. } => return Outcome::Drop(Counter::DropServiceNoBackend),
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
    let (eth, ip) = if nh.is(NextHopKind::Local) && services::in_use() {
        match from_service(h, eth, ip) {
            Ok(headers) => headers,
            Err(reason) => return Outcome::Drop(reason),
        }
    } else {
        (eth, ip)
    };
    rewrite(eth, ip, &nh);
    Outcome::Redirected {
        egress: nh.ifindex,
        egress_slot: nh.egress_slot,
        encapsulated: false,
    }
}

/// Gives a backend's reply to a local client the service address the client connected to as
/// its source; any other packet is left as it is. Returns the headers, re-derived if the frame
/// was rewritten.
#[inline(always)]
fn from_service<H: Shim>(
    h: &H,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
) -> Result<(*mut EthHdr, *mut Ipv4Hdr), Counter> {
    let (_, data_end) = h.headers(0);
    let Some(flow) = services::flow_of(ip, data_end) else {
        return Ok((eth, ip));
    };
    let Some(front) = services::front_for_reply(&flow) else {
        return Ok((eth, ip));
    };
    let backend = Endpoint {
        addr: flow.src,
        port: flow.sport,
        _pad: [0; 2],
    };
    if !h.translate(ip, data_end, Side::Source, &backend, &front) {
        return Err(Counter::DropAdjustFailed);
    }
    count(H::HOOK, Counter::ServiceReply);
    let (data, data_end) = h.headers(HEADERS_LEN);
    match (
        ptr_at::<EthHdr>(data, data_end, 0),
        ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN),
    ) {
        (Some(eth), Some(ip)) => Ok((eth, ip)),
        _ => Err(Counter::DropAdjustFailed),
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
