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
//! Both replace the filter table's FORWARD handling of the namespace they are loaded into;
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
