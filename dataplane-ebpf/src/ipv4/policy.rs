//! Network policy for IPv4 packets (see `crate::policy` for how it works): the endpoints by
//! IPv4 address, the flows as IPv4 flow keys, and the rule tries' IPv4 keys.
use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::lpm_trie::Key};
use dataplane_common::{
    Counter, Hook,
    policy::{
        FlowKey, POLICY_DENY, POLICY_EGRESS, POLICY_INGRESS, POLICY_PROTO_OTHER, PolicyEndpoint,
        PolicyEndpointKey,
    },
};

use super::{IPPROTO_ICMP, Ipv4Hdr, L4_AT, MF_AND_OFFSET, frags, l4_ports};
use crate::{
    counters::{count, count_denied_v4},
    maps::{POLICIES, POLICY_FLOWS, POLICY_NEWFLOWS, POLICY_PEERS, POLICY_VERDICTS},
    parse::{Frame, IPPROTO_TCP, IPPROTO_UDP, ref_at},
    policy::{in_use, known},
};

/// Admits the packet whose IPv4 header is `ip` (option-less: the caller has checked; the
/// frame's, in `frame`), or returns the counter slot of the refusal. `from_workload`: it
/// came from a workload's interface (its source checked), whose egress policy applies;
/// `to_local_workload`: its destination is a workload on this host, whose ingress policy
/// applies. A frame from the underlay meets no egress rules here: they are the sending
/// workload's, enforced on its own host. `hook` is whose counters count.
#[inline(always)]
pub fn admit(
    hook: Hook,
    ip: &Ipv4Hdr,
    frame: Frame,
    from_workload: bool,
    to_local_workload: bool,
) -> Result<(), Counter> {
    if !in_use() {
        return Ok(());
    }
    let (src, dst, proto) = (ip.src_addr, ip.dst_addr, ip.proto);
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
    if frags(ip) & MF_AND_OFFSET != 0 {
        return Err(Counter::DropPolicyUncheckable);
    }
    let Some(ports) = l4_ports(frame, L4_AT, proto) else {
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
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if part_of_a_recorded_flow(&flow, now)
        || (proto == IPPROTO_ICMP && error_about_a_recorded_flow(frame, L4_AT, dst, now))
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
        count_denied_v4(src, POLICY_EGRESS);
        return Err(Counter::DropPolicyEgress);
    }
    if ingress.default_action != 0 && verdict(&ingress, src, bucket, port) == POLICY_DENY {
        count_denied_v4(dst, POLICY_INGRESS);
        return Err(Counter::DropPolicyIngress);
    }
    // A full map evicts its least recently used new flow (LRU): that flow's next packets meet
    // the policy again. Flows with replies live in the other map, out of a flood's reach.
    let _ = POLICY_NEWFLOWS.insert(flow, now, 0);
    count(hook, Counter::PolicyNewFlow);
    Ok(())
}

/// True if the packet whose IPv4 header is `ip` is to or from a workload under policy: from
/// one, when it came from a workload interface (`from_workload`); to one, always.
#[inline(always)]
pub fn under_policy(ip: &Ipv4Hdr, from_workload: bool) -> bool {
    if !in_use() {
        return false;
    }
    let (src, dst) = (ip.src_addr, ip.dst_addr);
    (from_workload && endpoint(src, POLICY_EGRESS).default_action != 0)
        || endpoint(dst, POLICY_INGRESS).default_action != 0
}

const NOT_UNDER_POLICY: PolicyEndpoint = PolicyEndpoint {
    ruleset: 0,
    default_action: 0,
};

#[inline(always)]
fn endpoint(addr: [u8; 4], direction: u32) -> PolicyEndpoint {
    // SAFETY: `HashMap::get`'s caveat: an entry removed meanwhile may be reused for another
    // key. The value is copied at once; user space replaces an endpoint's entry whole.
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

/// True if the ICMP message at `l4_at` in `frame`, sent to `dst`, is an error about a packet
/// `dst` sent in a recorded flow (the quoted packet's source must be `dst`, so an error cannot
/// be made to speak for somebody else's flow). Such an error passes without recording anything.
#[inline(always)]
fn error_about_a_recorded_flow(frame: Frame, l4_at: usize, dst: [u8; 4], now: u64) -> bool {
    // SAFETY: a current frame (every `Frame` is: see `parse::Frame`); both references are only
    // read, while only map lookups run, and a `&mut` into the frame, if any is held, is to
    // other bytes (`ref_mut_at`).
    let Ok(icmp_type) = (unsafe { ref_at::<u8>(frame, l4_at) }) else {
        return false;
    };
    let icmp_type = *icmp_type;
    if icmp_type != ICMP_DEST_UNREACHABLE
        && icmp_type != ICMP_TIME_EXCEEDED
        && icmp_type != ICMP_PARAMETER_PROBLEM
    {
        return false;
    }
    let quoted = l4_at + ICMP_HEADER_LEN;
    // SAFETY: as above.
    let Ok(inner) = (unsafe { ref_at::<Ipv4Hdr>(frame, quoted) }) else {
        return false;
    };
    let (vihl, src, inner_dst, proto) = (inner.vihl, inner.src_addr, inner.dst_addr, inner.proto);
    // Quoted headers with options are rare and not related here (their ports move).
    if vihl != 0x45 || src != dst {
        return false;
    }
    let Some(ports) = l4_ports(frame, quoted + Ipv4Hdr::LEN, proto) else {
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
