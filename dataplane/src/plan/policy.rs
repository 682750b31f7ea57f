//! Compiling a [`Policy`] into the maps the programs read, so that the per-packet work is a
//! fixed number of lookups whatever the rule count:
//!
//! - Workloads' directions with the same rules share one *ruleset* (an id).
//! - Peer classes: a ruleset's distinct peer CIDRs, each a class. CIDRs are nested or
//!   disjoint, so the longest CIDR holding an address (an LPM lookup) tells every CIDR that
//!   holds it: its ancestors. An address in none of them matches no rule.
//! - Verdicts: for each class and protocol bucket (TCP, UDP, ICMP, other), the port axis is cut
//!   at every rule's range ends; each piece gets the combined verdict of the rules covering it
//!   (deny wins, then allow; pieces no rule covers get no entry: the default applies); equal
//!   neighbours merge, and each piece is cut into aligned power-of-two blocks, which an LPM trie
//!   holds as prefixes. Ports are looked up in full, so a lookup finds one block or none.
use std::collections::{BTreeMap, BTreeSet};

use dataplane_common::policy::{
    POLICY_PROTO_OTHER, PolicyEndpoint, PolicyEndpointKey, PolicyPeerKey, PolicyVerdictKey,
};

use crate::model::{
    Ipv4Prefix,
    policy::{Action, Direction, DirectionPolicy, Policy, Ports, Protocol, Rule},
};

/// An LPM entry: prefix length in bits, and key data.
pub type LpmEntry<K> = (u32, K);

/// The policy as map contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledPolicy {
    pub endpoints: BTreeMap<PolicyEndpointKey, PolicyEndpoint>,
    /// `POLICY_PEERS`: (32 + CIDR length, ruleset ++ address) -> class.
    pub peers: BTreeMap<LpmEntry<PolicyPeerKey>, u32>,
    /// `POLICY_VERDICTS`: (72 + block length, ruleset ++ class ++ bucket ++ port) -> verdict.
    pub verdicts: BTreeMap<LpmEntry<PolicyVerdictKey>, u32>,
    /// The ruleset ids used, `first..first + rulesets`.
    pub rulesets: u32,
}

/// The protocol buckets of the verdict key.
const BUCKETS: [u8; 4] = [6, 17, 1, POLICY_PROTO_OTHER];

/// Compiles `policy`, numbering its rulesets from `first_ruleset` (the loader uses fresh
/// numbers for every new version, so that a version is written whole before an endpoint
/// points at it).
pub fn compile(policy: &Policy, first_ruleset: u32) -> CompiledPolicy {
    let mut out = CompiledPolicy::default();
    let mut ids: BTreeMap<Vec<RuleShape>, u32> = BTreeMap::new();
    for (addr, workload) in &policy.workloads {
        for direction in Direction::BOTH {
            let dp = workload.direction(direction);
            let shape = shape(dp);
            let ruleset = match ids.get(&shape) {
                Some(id) => *id,
                None => {
                    let id = first_ruleset + out.rulesets;
                    out.rulesets += 1;
                    compile_ruleset(dp, id, &mut out);
                    ids.insert(shape, id);
                    id
                }
            };
            out.endpoints.insert(
                PolicyEndpointKey {
                    addr: addr.octets(),
                    direction: direction.code(),
                },
                PolicyEndpoint {
                    ruleset,
                    default_action: dp.default_action.code(),
                },
            );
        }
    }
    out
}

/// What makes two rule lists compile alike (not their lines or order).
type RuleShape = (Action, Ipv4Prefix, Protocol, Option<Ports>);

fn shape(dp: &DirectionPolicy) -> Vec<RuleShape> {
    let set: BTreeSet<RuleShape> = dp
        .rules
        .iter()
        .map(|r| (r.action, r.peer, r.protocol, r.ports))
        .collect();
    set.into_iter().collect()
}

fn compile_ruleset(dp: &DirectionPolicy, ruleset: u32, out: &mut CompiledPolicy) {
    let r = ruleset.to_be_bytes();
    let mut by_peer: BTreeMap<Ipv4Prefix, Vec<&Rule>> = BTreeMap::new();
    for rule in &dp.rules {
        by_peer.entry(rule.peer).or_default().push(rule);
    }
    for (index, cidr) in by_peer.keys().enumerate() {
        let class = index as u32 + 1;
        let a = cidr.addr().octets();
        out.peers.insert(
            (
                32 + cidr.prefix_len() as u32,
                [r[0], r[1], r[2], r[3], a[0], a[1], a[2], a[3]],
            ),
            class,
        );
        let c = class.to_be_bytes();
        // The rules that hold every address of this class: those whose CIDR holds this one,
        // found among its at most 33 enclosing prefixes.
        let applicable: Vec<&Rule> = (0..=cidr.prefix_len())
            .filter_map(|len| Ipv4Prefix::new(mask(cidr.addr(), len), len).ok())
            .filter_map(|enclosing| by_peer.get(&enclosing))
            .flatten()
            .copied()
            .collect();
        for bucket in BUCKETS {
            let in_bucket: Vec<(Action, Ports)> = applicable
                .iter()
                .filter(|rule| rule.protocol.number().is_none_or(|p| p == bucket))
                .map(|rule| (rule.action, rule.ports.unwrap_or(Ports::ALL)))
                .collect();
            let has_ports = bucket == 6 || bucket == 17;
            let pieces = if has_ports {
                port_pieces(&in_bucket)
            } else {
                // No ports here (rules with ports are TCP or UDP only): one piece, whole axis.
                combine(in_bucket.iter().map(|(a, _)| *a))
                    .map(|action| vec![(Ports::ALL, action)])
                    .unwrap_or_default()
            };
            for (ports, action) in pieces {
                for (start, len) in aligned_blocks(ports) {
                    let p = start.to_be_bytes();
                    out.verdicts.insert(
                        (
                            72 + len,
                            [
                                r[0], r[1], r[2], r[3], c[0], c[1], c[2], c[3], bucket, p[0], p[1],
                                0,
                            ],
                        ),
                        action.code(),
                    );
                }
            }
        }
    }
}

/// `addr` with only its first `len` bits kept.
fn mask(addr: std::net::Ipv4Addr, len: u8) -> std::net::Ipv4Addr {
    let bits = u32::from(addr);
    std::net::Ipv4Addr::from(if len == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - len))
    })
}

/// Deny wins, then allow; None when no rule applies.
fn combine(actions: impl Iterator<Item = Action>) -> Option<Action> {
    actions.max_by_key(|a| match a {
        Action::Allow => 0,
        Action::Deny => 1,
    })
}

/// The port axis cut at every range end, each piece with its combined verdict; pieces no
/// rule covers are left out, equal neighbours merged.
fn port_pieces(rules: &[(Action, Ports)]) -> Vec<(Ports, Action)> {
    let mut cuts: BTreeSet<u32> = BTreeSet::from([0, 1 << 16]);
    for (_, p) in rules {
        cuts.insert(p.first as u32);
        cuts.insert(p.last as u32 + 1);
    }
    let cuts: Vec<u32> = cuts.into_iter().collect();
    let mut pieces: Vec<(Ports, Action)> = Vec::new();
    for w in cuts.windows(2) {
        let (first, last) = (w[0] as u16, (w[1] - 1) as u16);
        let covering = rules
            .iter()
            .filter(|(_, p)| p.contains(first))
            .map(|(a, _)| *a);
        let Some(action) = combine(covering) else {
            continue;
        };
        match pieces.last_mut() {
            Some((prev, a)) if *a == action && prev.last as u32 + 1 == first as u32 => {
                prev.last = last;
            }
            _ => pieces.push((Ports { first, last }, action)),
        }
    }
    pieces
}

/// `ports` as aligned power-of-two blocks: (first port, prefix length in bits of 16).
fn aligned_blocks(ports: Ports) -> Vec<(u16, u32)> {
    let mut blocks = Vec::new();
    let mut start = ports.first as u32;
    let end = ports.last as u32 + 1;
    while start < end {
        // The largest block aligned at `start` that fits before `end`.
        let mut size = if start == 0 {
            1 << 16
        } else {
            1 << start.trailing_zeros()
        };
        while start + size > end {
            size >>= 1;
        }
        blocks.push((start as u16, 16 - size.trailing_zeros()));
        start += size;
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::policy::{Direction, parse};
    use std::net::Ipv4Addr;

    /// What the programs do with the compiled maps: class by longest prefix, then verdict by
    /// longest prefix, else the default.
    fn lookup(
        c: &CompiledPolicy,
        addr: Ipv4Addr,
        d: Direction,
        peer: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Option<Action> {
        let ep = c.endpoints.get(&PolicyEndpointKey {
            addr: addr.octets(),
            direction: d.code(),
        })?;
        let r = ep.ruleset.to_be_bytes();
        let p = peer.octets();
        let peer_key = [r[0], r[1], r[2], r[3], p[0], p[1], p[2], p[3]];
        let default = if ep.default_action == Action::Allow.code() {
            Action::Allow
        } else {
            Action::Deny
        };
        let Some(class) = longest(&c.peers, &peer_key, 64) else {
            return Some(default);
        };
        let bucket = if [1, 6, 17].contains(&proto) {
            proto
        } else {
            POLICY_PROTO_OTHER
        };
        let port = if proto == 6 || proto == 17 { port } else { 0 };
        let (k, q) = (class.to_be_bytes(), port.to_be_bytes());
        let key = [
            r[0], r[1], r[2], r[3], k[0], k[1], k[2], k[3], bucket, q[0], q[1], 0,
        ];
        Some(match longest(&c.verdicts, &key, 88) {
            Some(v) if v == Action::Allow.code() => Action::Allow,
            Some(_) => Action::Deny,
            None => default,
        })
    }

    fn longest<const N: usize>(
        entries: &BTreeMap<(u32, [u8; N]), u32>,
        key: &[u8; N],
        bits: u32,
    ) -> Option<u32> {
        let bit = |k: &[u8; N], i: u32| k[(i / 8) as usize] >> (7 - i % 8) & 1;
        entries
            .iter()
            .filter(|((len, data), _)| {
                *len <= bits && (0..*len).all(|i| bit(data, i) == bit(key, i))
            })
            .max_by_key(|((len, _), _)| *len)
            .map(|(_, v)| *v)
    }

    /// A small deterministic generator (xorshift): the same flows every run.
    struct Flows(u64);
    impl Flows {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[(self.next() % from.len() as u64) as usize]
        }
    }

    const POLICY: &str = "\
workload 10.0.1.2 ingress deny egress allow
allow ingress 10.0.1.2 peer 10.0.0.0/8 proto tcp port 80
allow ingress 10.0.1.2 peer 10.2.0.0/16 proto tcp port 1000-2000
deny ingress 10.0.1.2 peer 10.2.3.0/24 proto tcp port 1500-1600
allow ingress 10.0.1.2 peer 10.2.3.4/32
deny ingress 10.0.1.2 peer 10.2.3.4/32 proto udp port 53
allow ingress 10.0.1.2 proto icmp
deny egress 10.0.1.2 peer 192.168.0.0/16
allow egress 10.0.1.2 peer 192.168.7.0/24 proto udp port 0-1023
workload 10.0.1.3 ingress deny egress deny
allow ingress 10.0.1.3 peer 10.0.0.0/8 proto tcp port 80
allow ingress 10.0.1.3 peer 10.2.0.0/16 proto tcp port 1000-2000
deny ingress 10.0.1.3 peer 10.2.3.0/24 proto tcp port 1500-1600
allow ingress 10.0.1.3 peer 10.2.3.4/32
deny ingress 10.0.1.3 peer 10.2.3.4/32 proto udp port 53
allow ingress 10.0.1.3 proto icmp
allow egress 10.0.1.3 peer 0.0.0.0/0 proto udp port 65535
";

    #[test]
    fn compiled_maps_give_the_reference_verdict_for_every_probed_flow() {
        let policy = parse(POLICY).unwrap();
        let compiled = compile(&policy, 7);
        let peers: Vec<Ipv4Addr> = [
            "10.0.0.1",
            "10.2.0.9",
            "10.2.3.1",
            "10.2.3.4",
            "10.2.3.5",
            "192.168.1.1",
            "192.168.7.7",
            "172.16.0.1",
            "0.0.0.0",
            "255.255.255.255",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let ports = [
            0, 1, 52, 53, 54, 79, 80, 81, 999, 1000, 1499, 1500, 1600, 1601, 2000, 2001, 1023,
            1024, 65534, 65535,
        ];
        let protos = [1, 6, 17, 47];
        let mut flows = Flows(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        for (addr, w) in &policy.workloads {
            for d in Direction::BOTH {
                for _ in 0..3000 {
                    let (peer, proto, port) =
                        (flows.pick(&peers), flows.pick(&protos), flows.pick(&ports));
                    let want = w.direction(d).verdict(
                        peer,
                        proto,
                        if proto == 6 || proto == 17 { port } else { 0 },
                    );
                    assert_eq!(
                        lookup(&compiled, *addr, d, peer, proto, port),
                        Some(want),
                        "{addr} {d} peer {peer} proto {proto} port {port}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 12_000);
    }

    #[test]
    fn identical_rules_share_a_ruleset_and_ids_start_where_asked() {
        let compiled = compile(&parse(POLICY).unwrap(), 7);
        let ruleset = |a: &str, d: Direction| {
            compiled.endpoints[&PolicyEndpointKey {
                addr: a.parse::<Ipv4Addr>().unwrap().octets(),
                direction: d.code(),
            }]
                .ruleset
        };
        assert_eq!(
            ruleset("10.0.1.2", Direction::Ingress),
            ruleset("10.0.1.3", Direction::Ingress)
        );
        assert_ne!(
            ruleset("10.0.1.2", Direction::Egress),
            ruleset("10.0.1.3", Direction::Egress)
        );
        assert_eq!(compiled.rulesets, 3);
        assert!(
            compiled
                .endpoints
                .values()
                .all(|e| (7..10).contains(&e.ruleset))
        );
    }

    #[test]
    fn port_ranges_become_aligned_blocks() {
        assert_eq!(
            aligned_blocks(Ports {
                first: 80,
                last: 80
            }),
            vec![(80, 16)]
        );
        assert_eq!(aligned_blocks(Ports::ALL), vec![(0, 0)]);
        assert_eq!(
            aligned_blocks(Ports {
                first: 1000,
                last: 1023
            }),
            vec![(1000, 13), (1008, 12)]
        );
        let blocks = aligned_blocks(Ports {
            first: 1,
            last: 65534,
        });
        assert_eq!(blocks.len(), 30);
        let covered: u32 = blocks.iter().map(|(_, len)| 1u32 << (16 - len)).sum();
        assert_eq!(covered, 65534);
    }

    #[test]
    fn the_lookup_cost_does_not_depend_on_the_rule_count() {
        // 10 000 rules that do not overlap: one class each, one verdict entry each.
        let mut text = String::from("workload 10.0.0.1 ingress allow egress allow\n");
        for i in 0..10_000u32 {
            text.push_str(&format!(
                "deny ingress 10.0.0.1 peer 203.{}.{}.0/24 proto tcp port {}\n",
                i / 256 % 256,
                i % 256,
                1 + i % 60_000
            ));
        }
        let policy = parse(&text).unwrap();
        let compiled = compile(&policy, 1);
        assert_eq!(compiled.peers.len(), 10_000);
        assert_eq!(compiled.verdicts.len(), 10_000);
        let addr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            lookup(
                &compiled,
                addr,
                Direction::Ingress,
                "203.0.5.9".parse().unwrap(),
                6,
                6
            ),
            Some(Action::Deny)
        );
        assert_eq!(
            lookup(
                &compiled,
                addr,
                Direction::Ingress,
                "203.0.5.9".parse().unwrap(),
                6,
                7
            ),
            Some(Action::Allow)
        );
    }
}
