//! Services for IPv4 flows (see `crate::services` for what a service does): the flow of a
//! packet, the service it is addressed to, and the backend it goes to.
use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use dataplane_common::{
    Counter, Hook,
    policy::FlowKey,
    services::{BackendKey, Endpoint, ServiceFlow, ServiceKey, ServiceValue},
};

use super::{Ipv4Hdr, L4_AT, MF_AND_OFFSET, frags, l4_ports};
use crate::{
    counters::count,
    maps::{BACKENDS, SERVICE_FLOWS, SERVICE_PENDING, SERVICE_REPLIES, SERVICES},
    parse::{Frame, IPPROTO_TCP, IPPROTO_UDP},
    services::recall,
};

/// A TCP or UDP packet's flow, read from its option-less IPv4 header `ip` (the frame's, in
/// `frame`); `None` for other protocols, fragments and packets too short for their ports.
#[inline(always)]
pub fn flow_of(ip: &Ipv4Hdr, frame: Frame) -> Option<FlowKey> {
    let (src, dst, proto) = (ip.src_addr, ip.dst_addr, ip.proto);
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || frags(ip) & MF_AND_OFFSET != 0 {
        return None;
    }
    let ports = l4_ports(frame, L4_AT, proto)?;
    Some(FlowKey {
        src,
        dst,
        sport: [ports[0], ports[1]],
        dport: [ports[2], ports[3]],
        proto,
        _pad: [0; 3],
    })
}

/// The service `flow` is addressed to, if any.
#[inline(always)]
pub fn service_of(flow: &FlowKey) -> Option<ServiceValue> {
    let key = ServiceKey {
        vip: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: `HashMap::get`'s caveat: an entry removed meanwhile may be reused for another
    // key. The value is copied at once; user space replaces a service's entry whole.
    unsafe { SERVICES.get(key) }.copied()
}

/// A new connection, recorded once policy has admitted its first packet: a packet that policy
/// refuses leaves no state behind. It waits for policy's word in [`SERVICE_PENDING`], one slot
/// per CPU ([`hold`], [`record_held`]): the path carries a flag, not these bytes, on a stack of
/// 512. (A program runs to its end on its CPU before another starts there, so a slot is never
/// taken by another packet in between.)
#[derive(Clone, Copy)]
pub struct NewFlow {
    flow: FlowKey,
    backend: Endpoint,
    generation: u32,
    now: u64,
}

/// Keeps `new` until [`record_held`]; false if the slot cannot be had.
#[inline(always)]
fn hold(new: NewFlow) -> bool {
    match SERVICE_PENDING.get_ptr_mut(0) {
        Some(slot) => {
            // SAFETY: the map's value for this CPU, valid while the program runs; nothing else
            // uses it until this program ends (see `NewFlow`).
            unsafe { *slot = new };
            true
        }
        None => false,
    }
}

/// Records the connection [`hold`] kept, both ways, counted in `hook`'s counters; the counter
/// slot of the refusal if a map would not take it.
#[inline(always)]
pub fn record_held(hook: Hook) -> Result<(), Counter> {
    let Some(slot) = SERVICE_PENDING.get_ptr(0) else {
        return Err(Counter::DropServiceNoBackend);
    };
    // SAFETY: as in `hold`: this CPU's value, written by this very run.
    let new = unsafe { *slot };
    let flow = &new.flow;
    let reply = FlowKey {
        src: new.backend.addr,
        dst: flow.src,
        sport: new.backend.port,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let to_front = ServiceFlow {
        endpoint: Endpoint {
            addr: flow.dst,
            port: flow.dport,
            _pad: [0; 2],
        },
        seen_ns: new.now,
        generation: new.generation,
        _pad: 0,
    };
    // The reply side first: a reply can never arrive before the flow is recorded that way.
    if SERVICE_REPLIES.insert(reply, to_front, 0).is_err() {
        return Err(Counter::DropServiceNoBackend);
    }
    let to_backend = ServiceFlow {
        endpoint: new.backend,
        ..to_front
    };
    if SERVICE_FLOWS.insert(*flow, to_backend, 0).is_err() {
        return Err(Counter::DropServiceNoBackend);
    }
    count(hook, Counter::ServiceNewFlow);
    Ok(())
}

/// The backend the client's `flow` to `service` goes to, and whether the connection is new
/// (then held for [`record_held`], once policy admits the packet): the one it got before
/// (counted in `hook`'s counters), or a new draw. `opens`: the packet opens a connection (a TCP
/// SYN): if the service's backends changed since the flow was recorded, it is a new connection
/// on a reused port (conntrack starts a new one too) and gets a new draw; a SYN sent again to
/// an unchanged service keeps its backend. `Err` with the counter slot of a refusal.
#[inline(always)]
pub fn backend_for(
    hook: Hook,
    flow: &FlowKey,
    service: &ServiceValue,
    opens: bool,
) -> Result<(Endpoint, bool), Counter> {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(known) = recall(&SERVICE_FLOWS, flow, now)
        && !(opens && known.generation != service.generation)
    {
        count(hook, Counter::ServiceEstablished);
        return Ok((known.endpoint, false));
    }
    if service.backends == 0 {
        return Err(Counter::DropServiceNoBackend);
    }
    // SAFETY: a helper without arguments.
    let index = unsafe { bpf_get_prandom_u32() } % service.backends;
    let key = BackendKey {
        service: service.id,
        index,
    };
    // SAFETY: as in `service_of`.
    let Some(backend) = (unsafe { BACKENDS.get(key) }).copied() else {
        return Err(Counter::DropServiceNoBackend);
    };
    let held = hold(NewFlow {
        flow: *flow,
        backend,
        generation: service.generation,
        now,
    });
    if !held {
        return Err(Counter::DropServiceNoBackend);
    }
    Ok((backend, true))
}

/// The service address a backend's reply `flow` must come from, if it is one.
#[inline(always)]
pub fn front_for_reply(flow: &FlowKey) -> Option<Endpoint> {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    recall(&SERVICE_REPLIES, flow, now).map(|front| front.endpoint)
}
