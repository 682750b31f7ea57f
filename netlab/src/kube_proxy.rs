//! The same services as kube-proxy programs them into the kernel, so that the eBPF services
//! are compared with what clusters run (the services equivalence test, the bench's service
//! sweep):
//!
//! - [`iptables`]: kube-proxy's iptables mode. `KUBE-SERVICES` holds one rule per service
//!   (destination, protocol, port), matched one after another, jumping to the service's
//!   `KUBE-SVC-*` chain; that chain picks an endpoint with `statistic --mode random` rules (the
//!   i-th of n taken with probability 1/(n-i), the last always) and jumps to its `KUBE-SEP-*`
//!   chain, which DNATs to the endpoint (and marks a pod's connection to itself for
//!   masquerade, the hairpin case). Reached from PREROUTING and OUTPUT of the nat table; the
//!   replies are translated back by conntrack. Loaded whole with `iptables-restore`.
//! - [`nftables`]: kube-proxy's nftables mode. One `service-ips` verdict map keyed by
//!   `daddr . l4proto . dport` (a single lookup however many services), each service a chain
//!   with a `numgen random mod n` verdict map over its endpoint chains, each of which DNATs.
//!   Loaded whole with `nft -f` (atomic).
//!
//! Chain names carry a hash of the service (and endpoint), as kube-proxy's do.
use std::{fmt::Write as _, net::SocketAddrV4};

use dataplane::model::services::{Service, Services};

/// The mark kube-proxy sets on connections to masquerade.
const MASQ_MARK: &str = "0x4000";

/// A short, stable name part for `what` (FNV-1a, 16 hex digits; kube-proxy uses a hash the
/// same way to keep chain names within iptables' 28 characters).
fn hash_name(what: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in what.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

fn service_id(service: &Service) -> String {
    format!(
        "{}/{}/{}",
        service.name,
        service.transport.name(),
        service.front
    )
}

fn svc_chain(service: &Service) -> String {
    format!("KUBE-SVC-{}", hash_name(&service_id(service)))
}

fn sep_chain(service: &Service, endpoint: &SocketAddrV4) -> String {
    format!(
        "KUBE-SEP-{}",
        hash_name(&format!("{}/{endpoint}", service_id(service)))
    )
}

/// kube-proxy's iptables mode for `services` (the nat table, whole).
pub fn iptables(services: &Services) -> String {
    let mut chains = String::from(
        ":KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    let mut rules = String::new();
    for hook in ["PREROUTING", "OUTPUT"] {
        let _ = writeln!(
            rules,
            "-A {hook} -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        );
    }
    let _ = writeln!(
        rules,
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"
    );
    let _ = writeln!(rules, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");
    let _ = writeln!(
        rules,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    );
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    let _ = writeln!(rules, "-A KUBE-POSTROUTING -j MASQUERADE --random-fully");
    for service in services.services.values() {
        service_portal(&mut rules, service);
    }
    for service in services.services.values() {
        service_chains(&mut chains, &mut rules, service);
    }
    format!("*nat\n{chains}{rules}COMMIT\n")
}

/// What kube-proxy's partial sync (`MinimizeIPTablesRestore`, on by default since 1.27)
/// restores when the endpoints of `changed` change: `KUBE-SERVICES` whole (it always is), and
/// the changed service's chains; for `iptables-restore --noflush`, which leaves every other
/// chain as it is.
pub fn iptables_endpoints_changed(services: &Services, changed: &Service) -> String {
    let mut chains = String::from(":KUBE-SERVICES - [0:0]\n");
    let mut rules = String::new();
    for service in services.services.values() {
        service_portal(&mut rules, service);
    }
    service_chains(&mut chains, &mut rules, changed);
    format!("*nat\n{chains}{rules}COMMIT\n")
}

/// The service's rule in `KUBE-SERVICES`.
fn service_portal(rules: &mut String, service: &Service) {
    let proto = service.transport.name();
    let _ = writeln!(
        rules,
        "-A KUBE-SERVICES -d {}/32 -p {proto} -m comment --comment \"{} cluster IP\" -m {proto} --dport {} -j {}",
        service.front.ip(),
        service.name,
        service.front.port(),
        svc_chain(service)
    );
}

/// The service's `KUBE-SVC-*` chain and its endpoints' `KUBE-SEP-*` chains.
fn service_chains(chains: &mut String, rules: &mut String, service: &Service) {
    let (svc, proto) = (svc_chain(service), service.transport.name());
    let _ = writeln!(chains, ":{svc} - [0:0]");
    let n = service.backends.len();
    for (i, endpoint) in service.backends.iter().enumerate() {
        let sep = sep_chain(service, endpoint);
        let _ = writeln!(chains, ":{sep} - [0:0]");
        let pick = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.11}",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            rules,
            "-A {svc} -m comment --comment \"{} -> {endpoint}\"{pick} -j {sep}",
            service.name
        );
        let _ = writeln!(
            rules,
            "-A {sep} -s {}/32 -m comment --comment {} -j KUBE-MARK-MASQ",
            endpoint.ip(),
            service.name
        );
        let _ = writeln!(
            rules,
            "-A {sep} -p {proto} -m comment --comment {} -m {proto} -j DNAT --to-destination {endpoint}",
            service.name
        );
    }
}

/// kube-proxy's nftables mode for `services` (its own table, whole; loading it again
/// replaces it).
pub fn nftables(services: &Services) -> String {
    let mut out =
        String::from("table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {\n");
    out.push_str(
        "  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }\n\
         \x20 chain nat-output { type nat hook output priority -100; policy accept; jump services; }\n\
         \x20 chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; jump masquerading; }\n",
    );
    let _ = writeln!(
        out,
        "  chain mark-for-masquerade {{ meta mark set meta mark or {MASQ_MARK}; }}"
    );
    let _ = writeln!(
        out,
        "  chain masquerading {{ meta mark & {MASQ_MARK} == 0 return; meta mark set meta mark xor {MASQ_MARK}; masquerade fully-random; }}"
    );
    let mut elements = Vec::new();
    for service in services.services.values() {
        for (endpoint_chain, rules) in nft_endpoint_chains(service) {
            let _ = writeln!(out, "  chain {endpoint_chain} {{ {rules} }}");
        }
        let _ = writeln!(
            out,
            "  chain {} {{ {} }}",
            nft_service_chain(service),
            nft_pick(service)
        );
        elements.push(format!(
            "{} . {} . {} : goto {}",
            service.front.ip(),
            service.transport.name(),
            service.front.port(),
            nft_service_chain(service)
        ));
    }
    out.push_str("  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict;");
    if !elements.is_empty() {
        let _ = write!(out, " elements = {{ {} }};", elements.join(", "));
    }
    out.push_str(" }\n");
    out.push_str("  chain services { ip daddr . meta l4proto . th dport vmap @service-ips; }\n}\n");
    out
}

/// What kube-proxy's nftables mode sends when the endpoints of `changed` change: one
/// transaction that (re)writes the service's endpoint chains and its `numgen` pick, and
/// touches nothing else.
pub fn nftables_endpoints_changed(changed: &Service) -> String {
    let mut out = String::new();
    for (chain, rules) in nft_endpoint_chains(changed) {
        let _ = writeln!(out, "add chain ip kube-proxy {chain}");
        let _ = writeln!(out, "flush chain ip kube-proxy {chain}");
        for rule in rules.split("; ").filter(|r| !r.is_empty()) {
            let _ = writeln!(
                out,
                "add rule ip kube-proxy {chain} {}",
                rule.trim_end_matches(';')
            );
        }
    }
    let chain = nft_service_chain(changed);
    let _ = writeln!(out, "flush chain ip kube-proxy {chain}");
    let _ = writeln!(
        out,
        "add rule ip kube-proxy {chain} {}",
        nft_pick(changed).trim_end_matches(';')
    );
    out
}

fn nft_service_chain(service: &Service) -> String {
    format!("service-{}", hash_name(&service_id(service)))
}

/// The service's endpoint chains: name, and rules (`; `-separated, each ending in `;`).
fn nft_endpoint_chains(service: &Service) -> Vec<(String, String)> {
    service
        .backends
        .iter()
        .map(|endpoint| {
            (
                nft_endpoint_chain(service, endpoint),
                format!(
                    "ip saddr {} jump mark-for-masquerade; meta l4proto {} dnat to {endpoint};",
                    endpoint.ip(),
                    service.transport.name()
                ),
            )
        })
        .collect()
}

fn nft_endpoint_chain(service: &Service, endpoint: &SocketAddrV4) -> String {
    format!(
        "endpoint-{}",
        hash_name(&format!("{}/{endpoint}", service_id(service)))
    )
}

/// The service chain's rule: a random endpoint chain.
fn nft_pick(service: &Service) -> String {
    let picks: Vec<String> = service
        .backends
        .iter()
        .enumerate()
        .map(|(i, endpoint)| format!("{i} : goto {}", nft_endpoint_chain(service, endpoint)))
        .collect();
    format!(
        "numgen random mod {} vmap {{ {} }};",
        service.backends.len(),
        picks.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::model::services::parse;

    const FILE: &str = "service web 10.96.0.10:80 tcp 198.18.1.3:8080 198.18.2.2:8080 198.18.2.3:8080\n\
                        service dns 10.96.0.11:53 udp 198.18.2.3:5353\n";

    #[test]
    fn iptables_picks_each_endpoint_with_the_probability_kube_proxy_gives_it() {
        let text = iptables(&parse(FILE).unwrap());
        let picks: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SVC-") && l.contains("web ->"))
            .collect();
        assert_eq!(picks.len(), 3);
        assert!(picks[0].contains("--probability 0.33333333333"));
        assert!(picks[1].contains("--probability 0.50000000000"));
        assert!(!picks[2].contains("statistic"), "the last is always taken");
        assert!(text.contains("-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp"));
        assert!(text.contains("-m tcp --dport 80 -j KUBE-SVC-"));
        assert!(text.contains("-j DNAT --to-destination 198.18.2.3:5353"));
        assert!(text.starts_with("*nat\n") && text.ends_with("COMMIT\n"));
        for chain in text.lines().filter(|l| l.starts_with(':')) {
            let name = chain[1..].split(' ').next().unwrap();
            assert!(name.len() <= 28, "{name}: longer than iptables allows");
        }
    }

    #[test]
    fn nftables_keeps_services_in_one_map_and_endpoints_behind_numgen() {
        let text = nftables(&parse(FILE).unwrap());
        assert!(text.contains("10.96.0.10 . tcp . 80 : goto service-"));
        assert!(text.contains("10.96.0.11 . udp . 53 : goto service-"));
        assert!(text.contains("numgen random mod 3 vmap { 0 : goto endpoint-"));
        assert!(text.contains("meta l4proto udp dnat to 198.18.2.3:5353"));
        assert!(text.contains("ip daddr . meta l4proto . th dport vmap @service-ips"));
    }

    #[test]
    fn no_services_render_to_loadable_empty_tables() {
        let none = Services::default();
        assert!(iptables(&none).contains(":KUBE-SERVICES - [0:0]"));
        assert!(!nftables(&none).contains("elements"));
    }
}
