//! The path of an IPv4 frame once the Ethernet step has handed it over (`crate::path` has the
//! whole path, top to bottom): route, then services, policy, and a redirected hop, a tunnel,
//! or the kernel.
//!
//! No reference into the frame crosses a step that calls a helper moving or rewriting the
//! frame: each step derives the headers it reads or writes from the frame as it is then.
use dataplane_common::{
    Counter, NextHop, NextHopKind,
    policy::FlowKey,
    services::{Endpoint, ServiceValue},
};

use super::{
    Decision, HEADERS_LEN, IP_AT, Ipv4Hdr, L4_AT, decrement_ttl, dont_fragment, headers_mut, icmp,
    policy,
    route::{only_to_local_workload, rewrite, route},
    services,
};
use crate::{
    counters::{Outcome, count},
    hook::{Shim, Side},
    parse::{ETHERTYPE_IPV4, Frame, ref_at},
    path::{Ingress, Pass, Role, decapsulate, encapsulate, redirected},
    services::{in_use as services_in_use, opens_a_connection},
    vxlan,
};

/// What happens to the IPv4 frame in `frame` (the Ethernet step passed it) that arrived on
/// `from`.
#[inline(always)]
pub fn process<H: Shim>(h: &H, frame: Frame, from: Ingress) -> Outcome {
    match route(frame, h.frame_len(), from, Pass::Arrived) {
        Decision::Decap { strip } => decapsulate(h, strip, from),
        Decision::ToService { service, flow } => to_service(h, &service, &flow, from),
        decision => forward(h, decision, from, false, false),
    }
}

/// What happens to the inner IPv4 frame in `frame` of a tunnel this host ended (the
/// Ethernet step passed it): only a local workload may receive it.
#[inline(always)]
pub fn process_decapsulated<H: Shim>(h: &H, frame: Frame, from: Ingress) -> Outcome {
    let inner = route(frame, h.frame_len(), from, Pass::Decapsulated);
    forward(h, only_to_local_workload(inner), from, true, false)
}

/// Sends a workload's `flow` to a service on to the service's backend for it: the
/// destination rewritten, the packet routed again, a new connection recorded only once policy
/// admits it.
#[inline(always)]
fn to_service<H: Shim>(h: &H, service: &ServiceValue, flow: &FlowKey, from: Ingress) -> Outcome {
    let opens = opens_a_connection(flow.proto, h.headers(0), L4_AT);
    let (backend, new) = match services::backend_for(H::HOOK, flow, service, opens) {
        Ok(chosen) => chosen,
        Err(reason) => return Outcome::Drop(reason),
    };
    let front = Endpoint {
        addr: flow.dst,
        port: flow.dport,
        _pad: [0; 2],
    };
    if !h.translate_v4(flow.proto, Side::Destination, &front, &backend) {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    let translated = route(
        h.headers(HEADERS_LEN),
        h.frame_len(),
        from,
        Pass::Translated,
    );
    forward(h, translated, from, false, new)
}

/// Carries out a routing decision: policy first, then (only for what it admits) the new
/// service connection held for it (`new_service_flow`), then encapsulation or a routed hop.
#[inline(always)]
fn forward<H: Shim>(
    h: &H,
    decision: Decision,
    from: Ingress,
    decapsulated: bool,
    new_service_flow: bool,
) -> Outcome {
    let nh = match decision {
        Decision::Forward { nh } => nh,
        Decision::ToKernel { reason } => return to_kernel(h, reason, from, new_service_flow),
        Decision::Pass(reason) => return Outcome::Pass(reason),
        Decision::Drop(reason) => return Outcome::Drop(reason),
        // A tunnel inside a tunnel: the hooks decapsulate once.
        Decision::Decap { .. } => return Outcome::Drop(Counter::DropVxlanInner),
        // A backend that is itself a service (the loader refuses such a table).
        Decision::ToService { .. } => return Outcome::Drop(Counter::DropServiceNoBackend),
    };
    let frame = h.headers(0);
    // SAFETY: the frame as `route` read it (no helper since); the two references cover
    // disjoint bytes, and each branch below uses them only before its first helper that moves
    // or rewrites the frame (the steps after it derive their own).
    let Ok((eth, ip)) = (unsafe { headers_mut(frame) }) else {
        // Cannot be: `route` read these very bytes. Refused as it would refuse them.
        return Outcome::Pass(Counter::PassMalformed);
    };
    let from_workload = from.role == Role::Workload;
    if let Err(reason) = policy::admit(H::HOOK, ip, frame, from_workload, nh.is(NextHopKind::Local))
    {
        return Outcome::Drop(reason);
    }
    if new_service_flow && let Err(reason) = services::record_held(H::HOOK) {
        return Outcome::Drop(reason);
    }
    if nh.is(NextHopKind::Vxlan) {
        if !h.fits_tunnel(nh.mtu) {
            // With DF the sender learns the tunnel's MTU; without, only fragmentation would
            // do, which the programs leave to the kernel.
            if dont_fragment(ip) {
                return icmp::frag_needed(h, &nh);
            }
            return Outcome::Pass(Counter::PassTooBig);
        }
        // Redirect first: it only records the target, so a failure leaves the frame untouched.
        if !h.redirect(&nh) {
            return H::redirect_failed(false);
        }
        let sport = vxlan::source_port_v4(ip, frame);
        decrement_ttl(ip);
        return encapsulate(h, &nh, sport, ETHERTYPE_IPV4);
    }
    if !h.redirect(&nh) {
        return H::redirect_failed(decapsulated);
    }
    if nh.is(NextHopKind::Local)
        && services_in_use()
        && let Some(flow) = services::flow_of(ip, frame)
        && let Some(front) = services::front_for_reply(&flow)
    {
        return reply_from_service(h, &nh, &flow, &front);
    }
    rewrite(eth, ip, &nh);
    redirected(&nh, false)
}

/// Gives a backend's reply `flow` to a local client the service address `front` the client
/// connected to as its source, then makes the routed hop to `nh` (redirect set up).
#[inline(always)]
fn reply_from_service<H: Shim>(h: &H, nh: &NextHop, flow: &FlowKey, front: &Endpoint) -> Outcome {
    let backend = Endpoint {
        addr: flow.src,
        port: flow.sport,
        _pad: [0; 2],
    };
    if !h.translate_v4(flow.proto, Side::Source, &backend, front) {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    count(H::HOOK, Counter::ServiceReply);
    // SAFETY: a frame read after the translation's helpers; the two references cover
    // disjoint bytes, and no helper runs while they live.
    let Ok((eth, ip)) = (unsafe { headers_mut(h.headers(HEADERS_LEN)) }) else {
        return Outcome::Drop(Counter::DropAdjustFailed);
    };
    rewrite(eth, ip, nh);
    redirected(nh, false)
}

/// Hands an IPv4 packet to the kernel, which may forward it, once policy has had its say: a
/// workload's packets to the host or out of the cluster meet its egress rules (and are
/// recorded, so their replies pass its ingress rules); a packet the programs cannot police
/// (IPv4 options move the ports) is refused if a workload under policy is at either end.
#[inline(always)]
fn to_kernel<H: Shim>(h: &H, reason: Counter, from: Ingress, new_service_flow: bool) -> Outcome {
    let frame = h.headers(0);
    // SAFETY: the frame as `route` read it (no helper since); only read, while only map
    // lookups run, and nothing holds a `&mut` into the frame.
    let Ok(ip) = (unsafe { ref_at::<Ipv4Hdr>(frame, IP_AT) }) else {
        // Cannot be: `route` read these very bytes. Refused as it would refuse them.
        return Outcome::Pass(Counter::PassMalformed);
    };
    let from_workload = from.role == Role::Workload;
    if reason == Counter::PassIpOptions {
        if policy::under_policy(ip, from_workload) {
            return Outcome::Drop(Counter::DropPolicyBypass);
        }
        return Outcome::Pass(reason);
    }
    if from_workload && let Err(refused) = policy::admit(H::HOOK, ip, frame, true, false) {
        return Outcome::Drop(refused);
    }
    // A service's backend the kernel routes (no route in the maps): its replies come back
    // through the programs, which must know the connection to give them the service's address.
    if new_service_flow && let Err(refused) = services::record_held(H::HOOK) {
        return Outcome::Drop(refused);
    }
    Outcome::Pass(reason)
}
