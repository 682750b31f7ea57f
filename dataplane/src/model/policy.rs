//! Network policy: the model, its file format, and the reference semantics that the eBPF
//! maps (`crate::plan::policy`) and the netfilter renderings must agree with.
//!
//! ```text
//! # workload ADDR ingress allow|deny egress allow|deny
//! #     puts a workload under policy, with the action for traffic no rule matches
//! # allow|deny ingress|egress ADDR [peer CIDR] [proto tcp|udp|icmp|any] [port N|N-M]
//! #     a rule: ingress is traffic to the workload (peer = source), egress from it (peer =
//! #     destination); peer defaults to 0.0.0.0/0, proto to any; ports need tcp or udp
//! ```
//!
//! Order-free: a matching deny wins over any allow; otherwise a matching allow admits;
//! otherwise the direction's default applies. Workloads not named by a `workload` line are not
//! under policy (everything passes), and a rule for one is an error.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, path::Path};

use dataplane_common::policy::{POLICY_ALLOW, POLICY_DENY, POLICY_EGRESS, POLICY_INGRESS};

use super::{FileError, Ipv4Prefix, LineError, all_or_errors, load_file, statements};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic to the workload; the peer is the source.
    Ingress,
    /// Traffic from the workload; the peer is the destination.
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The map encoding (`POLICY_INGRESS`, `POLICY_EGRESS` of `dataplane_common::policy`).
    pub fn code(self) -> u32 {
        match self {
            Direction::Ingress => POLICY_INGRESS,
            Direction::Egress => POLICY_EGRESS,
        }
    }

    /// The direction a map key's code stands for.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::BOTH.into_iter().find(|d| d.code() == code)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn code(self) -> u32 {
        match self {
            Action::Allow => POLICY_ALLOW,
            Action::Deny => POLICY_DENY,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
    Icmp,
}

impl Protocol {
    /// The IP protocol number (None for any).
    pub fn number(self) -> Option<u8> {
        match self {
            Protocol::Any => None,
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(1),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Any => "any",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        })
    }
}

/// An inclusive range of destination ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    pub const ALL: Ports = Ports {
        first: 0,
        last: u16::MAX,
    };

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub action: Action,
    pub peer: Ipv4Prefix,
    pub protocol: Protocol,
    /// Only with TCP or UDP.
    pub ports: Option<Ports>,
    pub line: usize,
}

impl Rule {
    /// True if the rule matches a packet with `peer` on the other side, IP protocol `proto`
    /// and destination port `port` (ignored for protocols without ports).
    pub fn matches(&self, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
        self.peer.contains(peer)
            && self.protocol.number().is_none_or(|p| p == proto)
            && self.ports.is_none_or(|ports| ports.contains(port))
    }
}

/// One workload's policy in one direction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DirectionPolicy {
    pub default_action: Action,
    pub rules: Vec<Rule>,
}

impl DirectionPolicy {
    /// The reference semantics: deny wins, then allow, then the default.
    pub fn verdict(&self, peer: Ipv4Addr, proto: u8, port: u16) -> Action {
        let matching = || self.rules.iter().filter(|r| r.matches(peer, proto, port));
        if matching().any(|r| r.action == Action::Deny) {
            Action::Deny
        } else if matching().any(|r| r.action == Action::Allow) {
            Action::Allow
        } else {
            self.default_action
        }
    }
}

/// A workload under policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadPolicy {
    pub ingress: DirectionPolicy,
    pub egress: DirectionPolicy,
    pub line: usize,
}

impl WorkloadPolicy {
    pub fn direction(&self, d: Direction) -> &DirectionPolicy {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    fn direction_mut(&mut self, d: Direction) -> &mut DirectionPolicy {
        match d {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }
}

/// The whole policy of a host, by workload address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub workloads: BTreeMap<Ipv4Addr, WorkloadPolicy>,
}

impl Policy {
    /// Whether a packet from `src` to `dst` passes, by the reference semantics (no flow state):
    /// the source's egress policy and the destination's ingress policy must both admit it.
    pub fn admits(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> bool {
        let egress = self
            .workloads
            .get(&src)
            .is_none_or(|w| w.egress.verdict(dst, proto, port) == Action::Allow);
        let ingress = self
            .workloads
            .get(&dst)
            .is_none_or(|w| w.ingress.verdict(src, proto, port) == Action::Allow);
        egress && ingress
    }

    /// Rules over all workloads and directions.
    pub fn rule_count(&self) -> usize {
        self.workloads
            .values()
            .map(|w| w.ingress.rules.len() + w.egress.rules.len())
            .sum()
    }
}

/// Reads and parses a policy file.
pub fn load(path: &Path) -> Result<Policy, FileError> {
    load_file(path, parse)
}

/// Parses a policy; reports every bad line.
pub fn parse(text: &str) -> Result<Policy, Vec<LineError>> {
    let mut policy = Policy::default();
    let mut errors = Vec::new();
    let mut rules: Vec<(Ipv4Addr, Direction, Rule)> = Vec::new();
    for (line, words) in statements(text) {
        let first = words[0];
        let result = match first {
            "workload" => parse_workload(&words, line).and_then(|(addr, w)| {
                match policy.workloads.insert(addr, w) {
                    None => Ok(()),
                    Some(earlier) => Err(format!(
                        "workload {addr} is already declared on line {}",
                        earlier.line
                    )),
                }
            }),
            "allow" | "deny" => parse_rule(&words, line).map(|r| rules.push(r)),
            other => Err(format!(
                "unknown statement `{other}` (expected `workload`, `allow` or `deny`)"
            )),
        };
        if let Err(message) = result {
            errors.push(LineError { line, message });
        }
    }
    for (addr, direction, rule) in rules {
        match policy.workloads.get_mut(&addr) {
            Some(w) => w.direction_mut(direction).rules.push(rule),
            None => errors.push(LineError {
                line: rule.line,
                message: format!(
                    "workload {addr} is not declared (add `workload {addr} ingress deny egress allow` or similar)"
                ),
            }),
        }
    }
    all_or_errors(policy, errors)
}

fn parse_action(word: &str) -> Result<Action, String> {
    match word {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        other => Err(format!("`{other}` is not an action (allow or deny)")),
    }
}

fn parse_addr(word: &str) -> Result<Ipv4Addr, String> {
    word.parse()
        .map_err(|_| format!("`{word}` is not an IPv4 address"))
}

/// `workload ADDR ingress ACTION egress ACTION` (the two directions in either order).
fn parse_workload(words: &[&str], line: usize) -> Result<(Ipv4Addr, WorkloadPolicy), String> {
    let usage = "expected `workload ADDR ingress allow|deny egress allow|deny`";
    if words.len() != 6 {
        return Err(usage.into());
    }
    let addr = parse_addr(words[1])?;
    let mut ingress = None;
    let mut egress = None;
    for pair in words[2..].chunks(2) {
        let action = parse_action(pair[1])?;
        let slot = match pair[0] {
            "ingress" => &mut ingress,
            "egress" => &mut egress,
            other => return Err(format!("`{other}`: {usage}")),
        };
        if slot.replace(action).is_some() {
            return Err(format!("`{}` given twice: {usage}", pair[0]));
        }
    }
    let (Some(ingress), Some(egress)) = (ingress, egress) else {
        return Err(usage.into());
    };
    let policy = |default_action| DirectionPolicy {
        default_action,
        rules: Vec::new(),
    };
    Ok((
        addr,
        WorkloadPolicy {
            ingress: policy(ingress),
            egress: policy(egress),
            line,
        },
    ))
}

/// `allow|deny ingress|egress ADDR [peer CIDR] [proto P] [port N|N-M]`.
fn parse_rule(words: &[&str], line: usize) -> Result<(Ipv4Addr, Direction, Rule), String> {
    let usage = "expected `allow|deny ingress|egress ADDR [peer CIDR] [proto tcp|udp|icmp|any] [port N|N-M]`";
    if words.len() < 3 {
        return Err(usage.into());
    }
    let action = parse_action(words[0])?;
    let direction = match words[1] {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        other => return Err(format!("`{other}` is not a direction (ingress or egress)")),
    };
    let addr = parse_addr(words[2])?;
    let mut rule = Rule {
        action,
        peer: Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 0).expect("0.0.0.0/0"),
        protocol: Protocol::Any,
        ports: None,
        line,
    };
    let mut seen = Vec::new();
    for pair in words[3..].chunks(2) {
        let [key, value] = pair else {
            return Err(format!("`{}` needs a value: {usage}", pair[0]));
        };
        if seen.contains(key) {
            return Err(format!("`{key}` given twice"));
        }
        seen.push(*key);
        match *key {
            "peer" => rule.peer = value.parse()?,
            "proto" => {
                rule.protocol = match *value {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    "icmp" => Protocol::Icmp,
                    "any" => Protocol::Any,
                    other => {
                        return Err(format!("`{other}` is not a protocol (tcp, udp, icmp, any)"));
                    }
                }
            }
            "port" => rule.ports = Some(parse_ports(value)?),
            other => return Err(format!("unknown field `{other}`: {usage}")),
        }
    }
    if rule.ports.is_some() && !matches!(rule.protocol, Protocol::Tcp | Protocol::Udp) {
        return Err("a port needs `proto tcp` or `proto udp`".into());
    }
    Ok((addr, direction, rule))
}

fn parse_ports(word: &str) -> Result<Ports, String> {
    let number = |w: &str| {
        w.parse::<u16>()
            .map_err(|_| format!("`{w}` is not a port (0-65535)"))
    };
    let (first, last) = match word.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let p = number(word)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!("port range {first}-{last} is empty"));
    }
    Ok(Ports { first, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
# web server: HTTP from the other host's workloads, nothing else in; anything out but SMTP
workload 198.18.1.2 ingress deny egress allow
allow ingress 198.18.1.2 peer 198.18.2.0/24 proto tcp port 80
allow ingress 198.18.1.2 proto icmp
deny egress 198.18.1.2 proto tcp port 25
";

    #[test]
    fn parses_workloads_and_rules() {
        let p = parse(EXAMPLE).unwrap();
        let w = &p.workloads[&"198.18.1.2".parse().unwrap()];
        assert_eq!(w.ingress.default_action, Action::Deny);
        assert_eq!(w.egress.default_action, Action::Allow);
        assert_eq!(w.ingress.rules.len(), 2);
        assert_eq!(
            w.ingress.rules[0].ports,
            Some(Ports {
                first: 80,
                last: 80
            })
        );
        assert_eq!(w.egress.rules[0].action, Action::Deny);
        assert_eq!(p.rule_count(), 3);
    }

    #[test]
    fn reference_semantics_deny_wins_then_allow_then_default() {
        let p = parse(
            "workload 10.0.0.1 ingress deny egress allow\n\
             allow ingress 10.0.0.1 peer 10.1.0.0/16\n\
             deny ingress 10.0.0.1 peer 10.1.2.0/24 proto tcp port 22\n",
        )
        .unwrap();
        let w = &p.workloads[&"10.0.0.1".parse().unwrap()].ingress;
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(w.verdict(ip("10.1.2.3"), 6, 22), Action::Deny);
        assert_eq!(w.verdict(ip("10.1.2.3"), 6, 23), Action::Allow);
        assert_eq!(w.verdict(ip("10.1.2.3"), 17, 22), Action::Allow);
        assert_eq!(w.verdict(ip("10.2.0.1"), 6, 80), Action::Deny);
        assert!(p.admits(ip("10.1.0.9"), ip("10.0.0.1"), 1, 0));
        assert!(!p.admits(ip("10.9.0.9"), ip("10.0.0.1"), 1, 0));
        assert!(
            p.admits(ip("10.0.0.1"), ip("10.9.0.9"), 6, 443),
            "egress default allow"
        );
        assert!(
            p.admits(ip("10.9.0.8"), ip("10.9.0.9"), 6, 443),
            "neither under policy"
        );
    }

    #[test]
    fn reports_every_bad_line() {
        let errors = parse(
            "workload 10.0.0.1 ingress deny\n\
             allow ingress 10.0.0.2 proto tcp\n\
             allow sideways 10.0.0.1\n\
             deny egress 10.0.0.1 proto icmp port 7\n\
             allow ingress 10.0.0.1 port 90-80 proto udp\n\
             allow ingress 10.0.0.1 peer 10.0.0.1/8\n\
             permit ingress 10.0.0.1\n\
             workload 10.0.0.3 ingress allow egress allow\n\
             workload 10.0.0.3 ingress deny egress deny\n",
        )
        .unwrap_err();
        let lines: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(lines[0].0, 1);
        assert!(lines[0].1.contains("expected `workload ADDR"));
        assert_eq!(lines[1].0, 2);
        assert!(lines[1].1.contains("10.0.0.2 is not declared"));
        assert_eq!(lines[2].0, 3);
        assert!(lines[2].1.contains("not a direction"));
        assert_eq!(lines[3].0, 4);
        assert!(lines[3].1.contains("a port needs"));
        assert_eq!(lines[4].0, 5);
        assert!(lines[4].1.contains("empty"));
        assert_eq!(lines[5].0, 6);
        assert!(lines[5].1.contains("host bits"));
        assert_eq!(lines[6].0, 7);
        assert!(lines[6].1.contains("unknown statement"));
        assert_eq!(lines[7].0, 9);
        assert!(lines[7].1.contains("already declared on line 8"));
        assert_eq!(lines.len(), 8);
    }
}
