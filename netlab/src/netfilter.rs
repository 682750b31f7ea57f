//! The same policy for netfilter (the Calico-style baselines of the bench and of the policy
//! equivalence test), so that the kernel's policy engines can be compared with
//! ours on equal terms:
//!
//! - [`iptables`]: Calico's shape. A chain per workload and direction, rules matched one by
//!   one (denies first, then allows, then the default), reached from FORWARD after conntrack's
//!   ESTABLISHED/RELATED accept, as Calico's `cali-FORWARD` does. Loaded whole with
//!   `iptables-restore` (atomic per table).
//! - [`nftables`]: the best netfilter offers: per workload and direction one deny set and one
//!   allow set of `peer . protocol . port` intervals, so each chain is two set lookups however
//!   many rules. Loaded whole with `nft -f` (atomic).
//!
//! - [`iptables_ipset`]: Calico's chains with its way of scaling: what rules match is kept in
//!   ipsets (`hash:net,port`: peer, protocol and port), one set per chain and action, so a
//!   chain is one set match however many rules share its shape. Loaded with `ipset restore`
//!   and `iptables-restore`.
//! - [`nftables_linear`]: nftables without sets, one rule after another, as a hand-written
//!   ruleset or a naive translation of the iptables chains reads.
//!
//! Each replaces the filter table's FORWARD handling of the namespace they are loaded into;
//! everything not to or from a workload under policy is accepted.
use std::fmt::Write as _;

use dataplane::model::policy::{Action, Direction, DirectionPolicy, Policy, Protocol, Rule};

/// Calico-style iptables rules (iptables-restore input for the filter table).
pub fn iptables(policy: &Policy) -> String {
    let mut t = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:cali-FORWARD - [0:0]\n",
    );
    let chains: Vec<(String, String, &DirectionPolicy, Direction)> = policy
        .workloads
        .iter()
        .enumerate()
        .flat_map(|(i, (addr, w))| {
            [
                (
                    format!("cali-tw-{i}"),
                    format!("-d {addr}"),
                    &w.ingress,
                    Direction::Ingress,
                ),
                (
                    format!("cali-fw-{i}"),
                    format!("-s {addr}"),
                    &w.egress,
                    Direction::Egress,
                ),
            ]
        })
        .collect();
    for (name, ..) in &chains {
        let _ = writeln!(t, ":{name} - [0:0]");
    }
    t.push_str("-A FORWARD -j cali-FORWARD\n");
    t.push_str("-A cali-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    // From-workload chains first, then to-workload: a packet between two workloads under
    // policy must pass the sender's egress and the receiver's ingress.
    for direction in [Direction::Egress, Direction::Ingress] {
        for (name, matcher, _, d) in &chains {
            if *d == direction {
                let _ = writeln!(t, "-A cali-FORWARD {matcher} -j {name}");
            }
        }
    }
    t.push_str("-A cali-FORWARD -j ACCEPT\n");
    for (name, _, dp, direction) in &chains {
        let peer = match direction {
            Direction::Ingress => "-s",
            Direction::Egress => "-d",
        };
        for action in [Action::Deny, Action::Allow] {
            for rule in dp.rules.iter().filter(|r| r.action == action) {
                let target = if action == Action::Deny {
                    "DROP"
                } else {
                    "RETURN"
                };
                let _ = writeln!(
                    t,
                    "-A {name} {peer} {}{} -j {target}",
                    rule.peer,
                    iptables_l4(rule)
                );
            }
        }
        let default = if dp.default_action == Action::Deny {
            "DROP"
        } else {
            "RETURN"
        };
        let _ = writeln!(t, "-A {name} -j {default}");
    }
    t.push_str("COMMIT\n");
    t
}

/// The ipset name of chain `chain`'s rules of `action`.
fn ipset_name(chain: &str, action: Action) -> String {
    format!("{chain}-{action}")
}

/// Whether a rule fits a `hash:net,port` set: a protocol with ports, ports, and a peer
/// narrower than /0 (which `hash:net` cannot hold).
fn fits_ipset(rule: &Rule) -> bool {
    matches!(rule.protocol, Protocol::Tcp | Protocol::Udp)
        && rule.ports.is_some()
        && rule.peer.prefix_len() > 0
}

/// Calico's chains with rules in ipsets: returns the `ipset restore` input and the
/// `iptables-restore` input. Rules with a protocol and ports go into one `hash:net,port` set
/// per chain and action, matched by one rule; the others (any protocol, ICMP, no ports) stay
/// a rule each, in the same order of precedence (denies, then allows, then the default).
pub fn iptables_ipset(policy: &Policy) -> (String, String) {
    let mut sets = String::new();
    let mut rules = iptables(policy);
    // The chains' own rules are rewritten: keep the dispatch, rebuild each workload chain.
    let mut kept: Vec<String> = rules
        .lines()
        .filter(|l| !l.starts_with("-A cali-tw-") && !l.starts_with("-A cali-fw-"))
        .filter(|l| *l != "COMMIT")
        .map(str::to_string)
        .collect();
    for (i, (_, w)) in policy.workloads.iter().enumerate() {
        for (chain, dp, direction) in [
            (format!("cali-tw-{i}"), &w.ingress, Direction::Ingress),
            (format!("cali-fw-{i}"), &w.egress, Direction::Egress),
        ] {
            let (peer_flag, set_dirs) = match direction {
                Direction::Ingress => ("-s", "src,dst"),
                Direction::Egress => ("-d", "dst,dst"),
            };
            for action in [Action::Deny, Action::Allow] {
                let target = if action == Action::Deny {
                    "DROP"
                } else {
                    "RETURN"
                };
                let in_set: Vec<&Rule> = dp
                    .rules
                    .iter()
                    .filter(|r| r.action == action && fits_ipset(r))
                    .collect();
                if !in_set.is_empty() {
                    let name = ipset_name(&chain, action);
                    // A port range is one entry per port.
                    let entries: usize = in_set
                        .iter()
                        .filter_map(|r| r.ports)
                        .map(|p| (p.last - p.first) as usize + 1)
                        .sum();
                    let _ = writeln!(
                        sets,
                        "create {name} hash:net,port family inet maxelem {}",
                        entries.max(65_536)
                    );
                    for r in in_set {
                        let ports = r.ports.expect("fits_ipset: ports");
                        let _ = writeln!(
                            sets,
                            "add {name} {},{}:{}-{}",
                            r.peer, r.protocol, ports.first, ports.last
                        );
                    }
                    kept.push(format!(
                        "-A {chain} -m set --match-set {name} {set_dirs} -j {target}"
                    ));
                }
                for r in dp
                    .rules
                    .iter()
                    .filter(|r| r.action == action && !fits_ipset(r))
                {
                    kept.push(format!(
                        "-A {chain} {peer_flag} {}{} -j {target}",
                        r.peer,
                        iptables_l4(r)
                    ));
                }
            }
            let default = if dp.default_action == Action::Deny {
                "DROP"
            } else {
                "RETURN"
            };
            kept.push(format!("-A {chain} -j {default}"));
        }
    }
    kept.push("COMMIT".into());
    rules = kept.join("\n") + "\n";
    (sets, rules)
}

fn iptables_l4(rule: &Rule) -> String {
    let mut s = match rule.protocol {
        Protocol::Any => String::new(),
        p => format!(" -p {p}"),
    };
    if let Some(ports) = rule.ports {
        let _ = write!(
            s,
            " -m {} --dport {}:{}",
            rule.protocol, ports.first, ports.last
        );
    }
    s
}

/// The nftables table name [`nftables`] uses.
pub const NFT_TABLE: &str = "dataplane_policy";

/// The policy as one nftables table with interval sets (`nft -f` input). Replaces any
/// earlier version of the table.
pub fn nftables(policy: &Policy) -> String {
    let mut t = format!(
        "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n"
    );
    let mut jumps = Vec::new();
    for (i, (addr, w)) in policy.workloads.iter().enumerate() {
        for direction in [Direction::Egress, Direction::Ingress] {
            let dp = w.direction(direction);
            let (name, jump, peer) = match direction {
                Direction::Ingress => (
                    format!("to_{i}"),
                    format!("ip daddr {addr} jump to_{i}"),
                    "ip saddr",
                ),
                Direction::Egress => (
                    format!("from_{i}"),
                    format!("ip saddr {addr} jump from_{i}"),
                    "ip daddr",
                ),
            };
            jumps.push(jump);
            for action in [Action::Deny, Action::Allow] {
                let _ = writeln!(
                    t,
                    "  set {name}_{action} {{\n    type ipv4_addr . inet_proto . inet_service\n    flags interval"
                );
                let elements: Vec<String> = dp
                    .rules
                    .iter()
                    .filter(|r| r.action == action)
                    .map(nft_element)
                    .collect();
                if !elements.is_empty() {
                    let _ = writeln!(t, "    elements = {{ {} }}", elements.join(", "));
                }
                t.push_str("  }\n");
            }
            let default = if dp.default_action == Action::Deny {
                "drop"
            } else {
                "return"
            };
            let key = format!("{peer} . meta l4proto . th dport");
            let _ = writeln!(
                t,
                "  chain {name} {{\n    {key} @{name}_deny drop\n    {key} @{name}_allow return\n    {default}\n  }}"
            );
        }
    }
    t.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n    ct state established,related accept\n");
    for jump in jumps {
        let _ = writeln!(t, "    {jump}");
    }
    t.push_str("  }\n}\n");
    t
}

/// The nftables table name [`nftables_linear`] uses.
pub const NFT_LINEAR_TABLE: &str = "dataplane_policy_linear";

/// The policy as one nftables table of plain rules, one per policy rule, no sets (`nft -f`
/// input): denies, then allows, then the default, per workload and direction.
pub fn nftables_linear(policy: &Policy) -> String {
    let table = NFT_LINEAR_TABLE;
    let mut t = format!("table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n");
    let mut jumps = Vec::new();
    for (i, (addr, w)) in policy.workloads.iter().enumerate() {
        for direction in [Direction::Egress, Direction::Ingress] {
            let dp = w.direction(direction);
            let (name, peer) = match direction {
                Direction::Ingress => (format!("to_{i}"), "ip saddr"),
                Direction::Egress => (format!("from_{i}"), "ip daddr"),
            };
            jumps.push(match direction {
                Direction::Ingress => format!("ip daddr {addr} jump {name}"),
                Direction::Egress => format!("ip saddr {addr} jump {name}"),
            });
            let _ = writeln!(t, "  chain {name} {{");
            for action in [Action::Deny, Action::Allow] {
                let verdict = if action == Action::Deny {
                    "drop"
                } else {
                    "return"
                };
                for r in dp.rules.iter().filter(|r| r.action == action) {
                    let l4 = match (r.protocol, r.ports) {
                        (Protocol::Any, _) => String::new(),
                        (p, Some(ports)) if ports.first == ports.last => {
                            format!(" {p} dport {}", ports.first)
                        }
                        (p, Some(ports)) => format!(" {p} dport {}-{}", ports.first, ports.last),
                        (p, None) => format!(" meta l4proto {p}"),
                    };
                    let _ = writeln!(t, "    {peer} {}{l4} {verdict}", r.peer);
                }
            }
            let default = if dp.default_action == Action::Deny {
                "drop"
            } else {
                "return"
            };
            let _ = writeln!(t, "    {default}\n  }}");
        }
    }
    t.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n    ct state established,related accept\n");
    for jump in jumps {
        let _ = writeln!(t, "    {jump}");
    }
    t.push_str("  }\n}\n");
    t
}

/// `peer . protocol . ports`, intervals where the rule leaves a field open. Protocols
/// without ports match any `th dport` (which then reads whatever their header holds there).
fn nft_element(rule: &Rule) -> String {
    let proto = match rule.protocol.number() {
        Some(p) => p.to_string(),
        None => "0-255".into(),
    };
    let ports = match rule.ports {
        Some(p) if p.first == p.last => p.first.to_string(),
        Some(p) => format!("{}-{}", p.first, p.last),
        None => "0-65535".into(),
    };
    format!("{} . {proto} . {ports}", rule.peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::model::policy::parse;

    const POLICY: &str = "\
workload 198.18.1.2 ingress deny egress allow
allow ingress 198.18.1.2 peer 198.18.2.0/24 proto tcp port 8000-8009
deny ingress 198.18.1.2 peer 198.18.2.2/32 proto tcp port 8005
allow ingress 198.18.1.2 proto icmp
";

    #[test]
    fn iptables_has_calicos_shape_denies_first() {
        let text = iptables(&parse(POLICY).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| *l == needle)
                .unwrap_or_else(|| panic!("missing {needle}:\n{text}"))
        };
        let established =
            at("-A cali-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
        let to = at("-A cali-FORWARD -d 198.18.1.2 -j cali-tw-0");
        assert!(established < to);
        let deny = at("-A cali-tw-0 -s 198.18.2.2/32 -p tcp -m tcp --dport 8005:8005 -j DROP");
        let allow = at("-A cali-tw-0 -s 198.18.2.0/24 -p tcp -m tcp --dport 8000:8009 -j RETURN");
        let icmp = at("-A cali-tw-0 -s 0.0.0.0/0 -p icmp -j RETURN");
        let default = at("-A cali-tw-0 -j DROP");
        assert!(deny < allow && allow < default && icmp < default);
        at("-A cali-fw-0 -j RETURN");
        assert_eq!(lines.last(), Some(&"COMMIT"));
    }

    #[test]
    fn ipset_rendering_puts_port_rules_in_sets_and_keeps_the_rest() {
        let (sets, rules) = iptables_ipset(&parse(POLICY).unwrap());
        assert_eq!(
            sets,
            "create cali-tw-0-deny hash:net,port family inet maxelem 65536\n\
             add cali-tw-0-deny 198.18.2.2/32,tcp:8005-8005\n\
             create cali-tw-0-allow hash:net,port family inet maxelem 65536\n\
             add cali-tw-0-allow 198.18.2.0/24,tcp:8000-8009\n"
        );
        let lines: Vec<&str> = rules.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| *l == needle)
                .unwrap_or_else(|| panic!("missing {needle}:\n{rules}"))
        };
        let deny = at("-A cali-tw-0 -m set --match-set cali-tw-0-deny src,dst -j DROP");
        let allow = at("-A cali-tw-0 -m set --match-set cali-tw-0-allow src,dst -j RETURN");
        let icmp = at("-A cali-tw-0 -s 0.0.0.0/0 -p icmp -j RETURN");
        let default = at("-A cali-tw-0 -j DROP");
        assert!(deny < allow && allow < icmp && icmp < default);
        at("-A cali-FORWARD -d 198.18.1.2 -j cali-tw-0");
        assert_eq!(lines.last(), Some(&"COMMIT"));
    }

    #[test]
    fn linear_nftables_has_a_rule_per_policy_rule() {
        let text = nftables_linear(&parse(POLICY).unwrap());
        let deny = text
            .find("ip saddr 198.18.2.2/32 tcp dport 8005 drop")
            .expect(&text);
        let allow = text
            .find("ip saddr 198.18.2.0/24 tcp dport 8000-8009 return")
            .expect(&text);
        let icmp = text
            .find("ip saddr 0.0.0.0/0 meta l4proto icmp return")
            .expect(&text);
        assert!(deny < allow && allow < icmp);
        assert!(!text.contains(" set "), "{text}");
        assert!(text.contains("ip daddr 198.18.1.2 jump to_0"));
    }

    #[test]
    fn nftables_puts_rules_in_interval_sets() {
        let text = nftables(&parse(POLICY).unwrap());
        assert!(
            text.contains("elements = { 198.18.2.2/32 . 6 . 8005 }"),
            "{text}"
        );
        assert!(
            text.contains("elements = { 198.18.2.0/24 . 6 . 8000-8009, 0.0.0.0/0 . 1 . 0-65535 }"),
            "{text}"
        );
        assert!(text.contains("ip saddr . meta l4proto . th dport @to_0_deny drop"));
        assert!(text.contains("ip daddr 198.18.1.2 jump to_0"));
        assert!(
            text.starts_with("table inet dataplane_policy\ndelete table inet dataplane_policy\n")
        );
    }
}
