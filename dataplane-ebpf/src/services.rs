//! Services: a workload's connection to a virtual address and port goes to one of the
//! service's backends, every packet of it to the same one, and the backend's replies seem to
//! come from the address the client asked for. Only on the client's host, on what its
//! workloads send (the programs see every such packet first) and on what is delivered to them.
//!
//! A new connection draws its backend at random (`bpf_get_prandom_u32`, uniform over the
//! backends, as kube-proxy's `statistic --mode random` chains and `numgen random` maps do) and
//! is recorded both ways: the client's flow to the backend it got (`SERVICE_FLOWS`), and the
//! backend's reply flow to the service address to put back (`SERVICE_REPLIES`). A recorded
//! connection keeps its backend while it is active, even if the backend leaves the service
//! (as conntrack keeps a TCP connection under kube-proxy); idle for
//! [`SERVICE_FLOW_IDLE_NS`] it is forgotten, and a TCP SYN that reuses its addresses and
//! ports after the service's backends changed opens a new one. TCP and UDP only; a fragment
//! is not translated.
use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use dataplane_common::{
    Counter, Hook,
    policy::FlowKey,
    services::{BackendKey, Endpoint, SERVICE_FLOW_IDLE_NS, ServiceFlow, ServiceKey, ServiceValue},
};

use crate::{
    counters::count,
    maps::{BACKENDS, SERVICE_FLOWS, SERVICE_REPLIES, SERVICES, SERVICES_ACTIVE},
    parse::{IPPROTO_TCP, IPPROTO_UDP, IPV4_MF_AND_OFFSET, Ipv4Hdr, ipv4_frags, l4_ports, ptr_at},
};

/// A TCP or UDP packet's flow, read from its option-less IPv4 header at `ip`; `None` for
/// other protocols, fragments and packets too short for their ports.
#[inline(always)]
pub fn flow_of(ip: *const Ipv4Hdr, data_end: usize) -> Option<FlowKey> {
    let (src, dst, proto) = unsafe { ((*ip).src_addr, (*ip).dst_addr, (*ip).proto) };
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || ipv4_frags(ip) & IPV4_MF_AND_OFFSET != 0 {
        return None;
    }
    let ports = l4_ports(ip as usize + Ipv4Hdr::LEN, data_end, proto)?;
    Some(FlowKey {
        src,
        dst,
        sport: [ports[0], ports[1]],
        dport: [ports[2], ports[3]],
        proto,
        _pad: [0; 3],
    })
}

/// False when this host has no service: one array read instead of a hash lookup per packet.
#[inline(always)]
pub fn in_use() -> bool {
    matches!(SERVICES_ACTIVE.get(0), Some(services) if *services != 0)
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
    unsafe { SERVICES.get(key) }.copied()
}

/// The backend the client's `flow` to `service` goes to: the one it got before, or a new draw
/// (recorded both ways), counted in `hook`'s counters. `opens`: the packet opens a connection
/// (a TCP SYN): if the service's backends changed since the flow was recorded, it is a new
/// connection on a reused port (conntrack starts a new one too) and gets a new draw; a SYN
/// sent again to an unchanged service keeps its backend. `Err` with the counter slot of a
/// refusal.
#[inline(always)]
pub fn backend_for(
    hook: Hook,
    flow: &FlowKey,
    service: &ServiceValue,
    opens: bool,
) -> Result<Endpoint, Counter> {
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(known) = recall(&SERVICE_FLOWS, flow, now)
        && !(opens && known.generation != service.generation)
    {
        count(hook, Counter::ServiceEstablished);
        return Ok(known.endpoint);
    }
    if service.backends == 0 {
        return Err(Counter::DropServiceNoBackend);
    }
    let index = unsafe { bpf_get_prandom_u32() } % service.backends;
    let key = BackendKey {
        service: service.id,
        index,
    };
    let Some(backend) = (unsafe { BACKENDS.get(key) }).copied() else {
        return Err(Counter::DropServiceNoBackend);
    };
    let front = Endpoint {
        addr: flow.dst,
        port: flow.dport,
        _pad: [0; 2],
    };
    let reply = FlowKey {
        src: backend.addr,
        dst: flow.src,
        sport: backend.port,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    };
    // The reply side first: a reply can never arrive before the flow is recorded that way.
    let to_front = ServiceFlow {
        endpoint: front,
        seen_ns: now,
        generation: service.generation,
        _pad: 0,
    };
    let to_backend = ServiceFlow {
        endpoint: backend,
        seen_ns: now,
        ..to_front
    };
    let recorded = SERVICE_REPLIES.insert(reply, to_front, 0).is_ok()
        && SERVICE_FLOWS.insert(*flow, to_backend, 0).is_ok();
    if !recorded {
        return Err(Counter::DropServiceNoBackend);
    }
    count(hook, Counter::ServiceNewFlow);
    Ok(backend)
}

/// The service address a backend's reply `flow` must come from, if it is one.
#[inline(always)]
pub fn front_for_reply(flow: &FlowKey) -> Option<Endpoint> {
    let now = unsafe { bpf_ktime_get_ns() };
    recall(&SERVICE_REPLIES, flow, now).map(|front| front.endpoint)
}

/// What `flows` recorded for `flow`, if seen within the idle time; refreshes its time at most
/// once a second (a write per packet would bounce the entry between CPUs).
#[inline(always)]
fn recall(
    flows: &aya_ebpf::maps::LruHashMap<FlowKey, ServiceFlow>,
    flow: &FlowKey,
    now: u64,
) -> Option<ServiceFlow> {
    let entry = flows.get_ptr_mut(flow)?;
    let seen = unsafe { (*entry).seen_ns };
    if now.wrapping_sub(seen) > SERVICE_FLOW_IDLE_NS {
        return None;
    }
    if now.wrapping_sub(seen) > 1_000_000_000 {
        unsafe { (*entry).seen_ns = now };
    }
    Some(unsafe { *entry })
}

/// True if the TCP segment whose header starts at `l4` (in a frame ending at `data_end`)
/// opens a connection: SYN without ACK. False for UDP, and for a header cut short.
#[inline(always)]
pub fn opens_a_connection(proto: u8, l4: usize, data_end: usize) -> bool {
    const TCP_FLAGS_AT: usize = 13;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    if proto != IPPROTO_TCP {
        return false;
    }
    match ptr_at::<u8>(l4, data_end, TCP_FLAGS_AT) {
        Some(flags) => unsafe { *flags & (SYN | ACK) == SYN },
        None => false,
    }
}
