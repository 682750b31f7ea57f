//! Network policy: whether a packet routed to a local workload (ingress) or from a workload
//! under policy (egress) may pass. A fixed number of map lookups whatever the rule count (the
//! loader compiles the rules into two LPM tries, see `dataplane::policy`):
//!
//! 1. the endpoint of each side under policy (hash, by address and direction);
//! 2. the flow, then its reverse, in `POLICY_FLOWS` (LRU hash): a recorded flow and its
//!    replies pass, as Calico's chains accept ESTABLISHED first;
//! 3. per side under policy: the peer's class (LPM on ruleset + peer address), then the
//!    verdict (LPM on ruleset + class + protocol + port); no entry means the side's default.
//!
//! An admitted new flow is recorded. Deny wins: egress is checked, then ingress.
use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use dataplane_common::{
    Counter, Hook, NextHop, NextHopKind,
    policy::{
        FlowKey, POLICY_DENY, POLICY_EGRESS, POLICY_FLOW_IDLE_NS, POLICY_INGRESS,
        POLICY_PROTO_OTHER, PolicyEndpoint, PolicyEndpointKey,
    },
};

use crate::{
    counters::{count, count_denied},
    maps::{POLICIES, POLICY_FLOWS, POLICY_PEERS, POLICY_VERDICTS},
    parse::{
        IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_MF_AND_OFFSET, Ipv4Hdr, ipv4_frags, l4_ports,
    },
};

/// Admits the packet whose IPv4 header is at `ip` (option-less: the router has checked; the
/// frame ends at `data_end`) and routed to `nh`, or returns the counter slot of the refusal.
/// `hook` is whose counters count.
#[inline(always)]
pub fn admit(hook: Hook, ip: *const Ipv4Hdr, data_end: usize, nh: &NextHop) -> Result<(), Counter> {
    let (src, dst, proto) = unsafe { ((*ip).src_addr, (*ip).dst_addr, (*ip).proto) };
    // Endpoints copied out, a zero default action meaning "not under policy": an `Option` of
    // a struct leaves its payload undefined when `None`, which LLVM may spill and the verifier
    // refuses, and two map pointers may get OR-ed by the optimiser, which it refuses too.
    let egress = endpoint(src, POLICY_EGRESS);
    let ingress = if nh.is(NextHopKind::Local) {
        endpoint(dst, POLICY_INGRESS)
    } else {
        NOT_UNDER_POLICY
    };
    if egress.default_action == 0 && ingress.default_action == 0 {
        return Ok(());
    }
    // Fragments other than the first carry no ports; MF set on the first is fine, but then
    // its later fragments would be refused, so all fragments are.
    if ipv4_frags(ip) & IPV4_MF_AND_OFFSET != 0 {
        return Err(Counter::DropPolicyUncheckable);
    }
    let Some(ports) = l4_ports(ip as usize + Ipv4Hdr::LEN, data_end, proto) else {
        return Err(Counter::DropPolicyUncheckable);
    };
    let (sport, dport) = ([ports[0], ports[1]], [ports[2], ports[3]]);
    let flow = FlowKey {
        src,
        dst,
        sport,
        dport,
        proto,
        _pad: [0; 3],
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if known_flow(&flow, now) || known_flow(&reverse(&flow), now) {
        count(hook, Counter::PolicyEstablished);
        return Ok(());
    }
    let bucket = match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP => proto,
        _ => POLICY_PROTO_OTHER,
    };
    let port = match proto {
        IPPROTO_TCP | IPPROTO_UDP => dport,
        _ => [0, 0],
    };
    if egress.default_action != 0 && verdict(&egress, dst, bucket, port) == POLICY_DENY {
        count_denied(src, POLICY_EGRESS);
        return Err(Counter::DropPolicyEgress);
    }
    if ingress.default_action != 0 && verdict(&ingress, src, bucket, port) == POLICY_DENY {
        count_denied(dst, POLICY_INGRESS);
        return Err(Counter::DropPolicyIngress);
    }
    // A full map evicts its least recently used flow (LRU): that flow's next packets meet
    // the policy again.
    let _ = POLICY_FLOWS.insert(flow, now, 0);
    count(hook, Counter::PolicyNewFlow);
    Ok(())
}

const NOT_UNDER_POLICY: PolicyEndpoint = PolicyEndpoint {
    ruleset: 0,
    default_action: 0,
};

#[inline(always)]
fn endpoint(addr: [u8; 4], direction: u32) -> PolicyEndpoint {
    match unsafe { POLICIES.get(PolicyEndpointKey { addr, direction }) } {
        Some(ep) => *ep,
        None => NOT_UNDER_POLICY,
    }
}

#[inline(always)]
fn reverse(flow: &FlowKey) -> FlowKey {
    FlowKey {
        src: flow.dst,
        dst: flow.src,
        sport: flow.dport,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

/// True if `flow` was admitted and seen within the idle time; refreshes its time at most
/// once a second (a write per packet would bounce the entry between CPUs).
#[inline(always)]
fn known_flow(flow: &FlowKey, now: u64) -> bool {
    let Some(seen) = POLICY_FLOWS.get_ptr_mut(flow) else {
        return false;
    };
    let last = unsafe { *seen };
    if now.wrapping_sub(last) > POLICY_FLOW_IDLE_NS {
        return false;
    }
    if now.wrapping_sub(last) > 1_000_000_000 {
        unsafe { *seen = now };
    }
    true
}

/// The verdict of endpoint `ep`'s rules for a packet with `peer` on the other side.
#[inline(always)]
fn verdict(ep: &PolicyEndpoint, peer: [u8; 4], bucket: u8, port: [u8; 2]) -> u32 {
    let r = ep.ruleset.to_be_bytes();
    let peer_key = [r[0], r[1], r[2], r[3], peer[0], peer[1], peer[2], peer[3]];
    let Some(class) = POLICY_PEERS.get(Key::new(64, peer_key)) else {
        return ep.default_action;
    };
    let c = class.to_be_bytes();
    let key = [
        r[0], r[1], r[2], r[3], c[0], c[1], c[2], c[3], bucket, port[0], port[1], 0,
    ];
    match POLICY_VERDICTS.get(Key::new(88, key)) {
        Some(v) => *v,
        None => ep.default_action,
    }
}
