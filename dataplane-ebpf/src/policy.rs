//! Network policy: whether a packet to a local workload (ingress) or from a workload under
//! policy (egress) may pass. A fixed number of map lookups whatever the rule count (the loader
//! compiles the rules into two LPM tries, see `dataplane::plan::policy`):
//!
//! 1. the endpoint of each side under policy (hash, by address and direction);
//! 2. the flow, in both directions, among the flows that have seen a reply (`POLICY_FLOWS`),
//!    then among the admitted flows still waiting for one (`POLICY_NEWFLOWS`): a recorded
//!    flow and its replies pass, as Calico's chains accept ESTABLISHED first; the first reply
//!    moves a flow from the second map to the first. An ICMP error about a recorded flow
//!    (unreachable, time exceeded, parameter problem) passes as part of it;
//! 3. per side under policy: the peer's class (LPM on ruleset + peer address), then the
//!    verdict (LPM on ruleset + class + protocol + port); no entry means the side's default.
//!
//! An admitted new flow is recorded among the new ones. Two LRU maps, so that a workload that
//! floods new flows evicts only flows without replies, never another workload's connection.
//! Deny wins: egress is checked, then ingress.
use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use dataplane_common::{
    Counter, Hook,
    policy::{
        FlowKey, POLICY_DENY, POLICY_EGRESS, POLICY_FLOW_IDLE_NS, POLICY_INGRESS,
        POLICY_PROTO_OTHER, PolicyEndpoint, PolicyEndpointKey,
    },
};

use crate::{
    counters::{count, count_denied},
    maps::{POLICIES, POLICY_ACTIVE, POLICY_FLOWS, POLICY_NEWFLOWS, POLICY_PEERS, POLICY_VERDICTS},
    parse::{
        IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_MF_AND_OFFSET, Ipv4Hdr, ipv4_frags, l4_ports,
        ptr_at,
    },
};

/// Admits the packet whose IPv4 header is at `ip` (option-less: the caller has checked; the
/// frame ends at `data_end`), or returns the counter slot of the refusal. `from_workload`: it
/// came from a workload's interface (its source checked), whose egress policy applies;
/// `to_local_workload`: its destination is a workload on this host, whose ingress policy
/// applies. A frame from the underlay meets no egress rules here: they are the sending
/// workload's, enforced on its own host. `hook` is whose counters count.
#[inline(always)]
pub fn admit(
    hook: Hook,
    ip: *const Ipv4Hdr,
    data_end: usize,
    from_workload: bool,
    to_local_workload: bool,
) -> Result<(), Counter> {
    if !in_use() {
        return Ok(());
    }
    let (src, dst, proto) = unsafe { ((*ip).src_addr, (*ip).dst_addr, (*ip).proto) };
    // Endpoints copied out, a zero default action meaning "not under policy": an `Option` of
    // a struct leaves its payload undefined when `None`, which LLVM may spill and the verifier
    // refuses, and two map pointers may get OR-ed by the optimiser, which it refuses too.
    let egress = if from_workload {
        endpoint(src, POLICY_EGRESS)
    } else {
        NOT_UNDER_POLICY
    };
    let ingress = if to_local_workload {
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
    let l4 = ip as usize + Ipv4Hdr::LEN;
    let Some(ports) = l4_ports(l4, data_end, proto) else {
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
    if part_of_a_recorded_flow(&flow, now)
        || (proto == IPPROTO_ICMP && error_about_a_recorded_flow(l4, data_end, dst, now))
    {
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
    // A full map evicts its least recently used new flow (LRU): that flow's next packets meet
    // the policy again. Flows with replies live in the other map, out of a flood's reach.
    let _ = POLICY_NEWFLOWS.insert(flow, now, 0);
    count(hook, Counter::PolicyNewFlow);
    Ok(())
}

/// True if the packet whose IPv4 header is at `ip` is to or from a workload under policy:
/// from one, when it came from a workload interface (`from_workload`); to one, always.
#[inline(always)]
pub fn under_policy(ip: *const Ipv4Hdr, from_workload: bool) -> bool {
    if !in_use() {
        return false;
    }
    let (src, dst) = unsafe { ((*ip).src_addr, (*ip).dst_addr) };
    (from_workload && endpoint(src, POLICY_EGRESS).default_action != 0)
        || endpoint(dst, POLICY_INGRESS).default_action != 0
}

/// False when no workload on this host is under policy: one array read (which the verifier
/// turns into a load) instead of two endpoint hash lookups per packet.
#[inline(always)]
fn in_use() -> bool {
    matches!(POLICY_ACTIVE.get(0), Some(endpoints) if *endpoints != 0)
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

/// Where a packet stands in the flow tables.
#[derive(PartialEq, Eq)]
enum Recorded {
    No,
    /// Part of a flow with replies (either direction), or sent again in a flow waiting for one.
    Yes,
    /// The first reply to a flow waiting for one.
    FirstReply,
}

/// Where `flow` stands in the flow tables.
#[inline(always)]
fn recorded(flow: &FlowKey, now: u64) -> Recorded {
    let back = reverse(flow);
    if known(&POLICY_FLOWS, flow, now)
        || known(&POLICY_FLOWS, &back, now)
        || known(&POLICY_NEWFLOWS, flow, now)
    {
        Recorded::Yes
    } else if known(&POLICY_NEWFLOWS, &back, now) {
        Recorded::FirstReply
    } else {
        Recorded::No
    }
}

/// True if `flow` is a recorded flow or a reply to one. A first reply to a flow still waiting
/// for one moves it among the flows with replies.
#[inline(always)]
fn part_of_a_recorded_flow(flow: &FlowKey, now: u64) -> bool {
    match recorded(flow, now) {
        Recorded::Yes => true,
        Recorded::FirstReply => {
            let back = reverse(flow);
            let _ = POLICY_FLOWS.insert(back, now, 0);
            let _ = POLICY_NEWFLOWS.remove(back);
            true
        }
        Recorded::No => false,
    }
}

/// ICMP types that carry the head of the packet they are about.
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;
/// The ICMP header before the quoted packet.
const ICMP_HEADER_LEN: usize = 8;

/// True if the ICMP message at `l4`, sent to `dst`, is an error about a packet `dst` sent in
/// a recorded flow (the quoted packet's source must be `dst`, so an error cannot be made to
/// speak for somebody else's flow). Such an error passes without recording anything.
#[inline(always)]
fn error_about_a_recorded_flow(l4: usize, data_end: usize, dst: [u8; 4], now: u64) -> bool {
    let Some(icmp_type) = ptr_at::<u8>(l4, data_end, 0) else {
        return false;
    };
    let icmp_type = unsafe { *icmp_type };
    if icmp_type != ICMP_DEST_UNREACHABLE
        && icmp_type != ICMP_TIME_EXCEEDED
        && icmp_type != ICMP_PARAMETER_PROBLEM
    {
        return false;
    }
    let quoted = l4 + ICMP_HEADER_LEN;
    let Some(inner) = ptr_at::<Ipv4Hdr>(quoted, data_end, 0) else {
        return false;
    };
    let (vihl, src, inner_dst, proto) = unsafe {
        (
            (*inner).vihl,
            (*inner).src_addr,
            (*inner).dst_addr,
            (*inner).proto,
        )
    };
    // Quoted headers with options are rare and not related here (their ports move).
    if vihl != 0x45 || src != dst {
        return false;
    }
    let Some(ports) = l4_ports(quoted + Ipv4Hdr::LEN, data_end, proto) else {
        return false;
    };
    let flow = FlowKey {
        src,
        dst: inner_dst,
        sport: [ports[0], ports[1]],
        dport: [ports[2], ports[3]],
        proto,
        _pad: [0; 3],
    };
    recorded(&flow, now) != Recorded::No
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

/// True if `flow` is in `flows` and was seen within the idle time; refreshes its time at most
/// once a second (a write per packet would bounce the entry between CPUs).
#[inline(always)]
fn known(flows: &aya_ebpf::maps::LruHashMap<FlowKey, u64>, flow: &FlowKey, now: u64) -> bool {
    let Some(seen) = flows.get_ptr_mut(flow) else {
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
