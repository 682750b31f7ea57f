//! The kernel's routing table as a source of routes (`loader run --routes-from-kernel`), so
//! that a BGP daemon (BIRD, as Calico runs it) or an `ip route` script drives the dataplane.
//!
//! Which routes are taken is explicit: one table, the protocols named (as `ip route` names them:
//! `bird`, `static`, `boot`, or a number), optionally only inside given prefixes; only unicast
//! routes with one next hop, through an interface the route table declares. The default route
//! is never taken unless asked for, and neither are the host's own link routes (protocol
//! `kernel`) unless that protocol is named.
use std::net::Ipv4Addr;

use crate::{
    model::{
        Ipv4Prefix,
        route_table::{Config, Route, Target},
    },
    system::netinfo::KernelRoute,
};

/// Which kernel routes to mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRouteFilter {
    /// Routing table, as `ip route show table` takes it (`main`, `254`, a name from
    /// rt_tables).
    pub table: String,
    /// Protocols to take, as `ip route` prints them.
    pub protocols: Vec<String>,
    /// If not empty, only routes inside one of these.
    pub within: Vec<Ipv4Prefix>,
    /// Take 0.0.0.0/0 too.
    pub include_default: bool,
}

/// Why a kernel route was not taken (only the ones worth telling an operator about).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Several next hops: the dataplane has one per prefix.
    Multipath(String),
    /// Through an interface the route table does not declare.
    UndeclaredDevice { dst: String, dev: String },
}

/// The routes `filter` takes from `kernel`, as route-table routes through interfaces `config`
/// declares, and what was left out that an operator should hear of. Route `i` gets line
/// `i + 1` (its position in the kernel's list) for error reports.
pub fn select(
    kernel: &[KernelRoute],
    filter: &KernelRouteFilter,
    config: &Config,
) -> (Vec<Route>, Vec<Skipped>) {
    let mut routes = Vec::new();
    let mut skipped = Vec::new();
    for (i, route) in kernel.iter().enumerate() {
        let Some(prefix) = prefix_of(&route.dst) else {
            continue;
        };
        let unicast = route.kind.as_deref().is_none_or(|k| k == "unicast");
        let protocol = route.protocol.as_deref().unwrap_or("boot");
        let wanted = unicast
            && filter.protocols.iter().any(|p| p == protocol)
            && (prefix.prefix_len() > 0 || filter.include_default)
            && (filter.within.is_empty() || filter.within.iter().any(|w| w.covers(&prefix)));
        if !wanted {
            continue;
        }
        if route.nexthops.is_some() {
            skipped.push(Skipped::Multipath(route.dst.clone()));
            continue;
        }
        let Some(dev) = route.dev.clone() else {
            continue;
        };
        if config.interface(&dev).is_none() {
            skipped.push(Skipped::UndeclaredDevice {
                dst: route.dst.clone(),
                dev,
            });
            continue;
        }
        let target = match route.gateway {
            Some(via) => Target::Remote { via, dev },
            None => Target::Local { dev },
        };
        routes.push(Route {
            prefix,
            target,
            line: i + 1,
        });
    }
    (routes, skipped)
}

/// `default`, `A.B.C.D` or `A.B.C.D/N` as a prefix (None for what is not IPv4 or has host
/// bits, which the kernel never reports).
fn prefix_of(dst: &str) -> Option<Ipv4Prefix> {
    if dst == "default" {
        return Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 0).ok();
    }
    let (addr, len) = match dst.split_once('/') {
        Some((a, l)) => (a, l.parse().ok()?),
        None => (dst, 32),
    };
    Ipv4Prefix::new(addr.parse().ok()?, len).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"[
        {"dst":"default","gateway":"198.19.0.1","dev":"eth0","protocol":"static","flags":[]},
        {"dst":"198.19.0.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"198.19.0.1","flags":[]},
        {"dst":"198.18.2.0/24","gateway":"198.19.0.2","dev":"eth0","protocol":"bird","flags":[]},
        {"dst":"198.18.3.0/24","gateway":"198.19.0.3","dev":"eth0","protocol":"static","flags":[]},
        {"dst":"198.18.1.2","dev":"cali1","protocol":"static","scope":"link","flags":[]},
        {"dst":"203.0.113.0/24","gateway":"198.19.0.2","dev":"eth0","protocol":"static","flags":[]},
        {"dst":"198.18.4.0/24","type":"blackhole","protocol":"static","flags":[]},
        {"dst":"198.18.5.0/24","protocol":"static","flags":[],"nexthops":[{"gateway":"198.19.0.2","dev":"eth0"},{"gateway":"198.19.0.3","dev":"eth0"}]},
        {"dst":"198.18.6.0/24","gateway":"10.9.0.1","dev":"ens9","protocol":"static","flags":[]},
        {"dst":"198.18.7.0/24","gateway":"198.19.0.2","dev":"eth0","flags":[]}
    ]"#;

    fn config() -> Config {
        crate::model::route_table::parse("interface eth0\ninterface cali1\n").unwrap()
    }

    fn filter(protocols: &[&str]) -> KernelRouteFilter {
        KernelRouteFilter {
            table: "main".into(),
            protocols: protocols.iter().map(|p| p.to_string()).collect(),
            within: vec!["198.18.0.0/16".parse().unwrap()],
            include_default: false,
        }
    }

    fn taken(filter: &KernelRouteFilter) -> Vec<String> {
        let kernel: Vec<KernelRoute> = serde_json::from_str(TABLE).unwrap();
        select(&kernel, filter, &config())
            .0
            .iter()
            .map(|r| format!("{} {:?}", r.prefix, r.target))
            .collect()
    }

    #[test]
    fn takes_the_named_protocols_inside_the_prefixes_only() {
        assert_eq!(
            taken(&filter(&["static"])),
            vec![
                "198.18.3.0/24 Remote { via: 198.19.0.3, dev: \"eth0\" }",
                "198.18.1.2/32 Local { dev: \"cali1\" }",
            ]
        );
        assert_eq!(
            taken(&filter(&["bird"])),
            vec!["198.18.2.0/24 Remote { via: 198.19.0.2, dev: \"eth0\" }"]
        );
    }

    #[test]
    fn routes_without_a_protocol_are_boot_as_ip_route_add_makes_them() {
        assert_eq!(
            taken(&filter(&["boot"])),
            vec!["198.18.7.0/24 Remote { via: 198.19.0.2, dev: \"eth0\" }"]
        );
    }

    #[test]
    fn the_default_route_and_link_routes_only_when_asked_for() {
        let mut f = filter(&["static", "kernel"]);
        f.within.clear();
        let all = taken(&f);
        assert!(all.iter().any(|r| r.starts_with("198.19.0.0/24 Local")));
        assert!(!all.iter().any(|r| r.starts_with("0.0.0.0/0")));
        f.include_default = true;
        assert!(taken(&f).iter().any(|r| r.starts_with("0.0.0.0/0 Remote")));
        // Named only `static`: no link route even without a prefix filter.
        f.protocols = vec!["static".into()];
        assert!(!taken(&f).iter().any(|r| r.starts_with("198.19.0.0/24")));
    }

    #[test]
    fn reports_multipath_and_undeclared_devices_and_skips_blackholes() {
        let kernel: Vec<KernelRoute> = serde_json::from_str(TABLE).unwrap();
        let (routes, skipped) = select(&kernel, &filter(&["static"]), &config());
        assert!(
            !routes
                .iter()
                .any(|r| r.prefix.to_string() == "198.18.4.0/24")
        );
        assert_eq!(
            skipped,
            vec![
                Skipped::Multipath("198.18.5.0/24".into()),
                Skipped::UndeclaredDevice {
                    dst: "198.18.6.0/24".into(),
                    dev: "ens9".into()
                },
            ]
        );
    }

    #[test]
    fn kernel_destinations_become_prefixes() {
        assert_eq!(prefix_of("default").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(
            prefix_of("198.18.1.2").unwrap().to_string(),
            "198.18.1.2/32"
        );
        assert_eq!(
            prefix_of("198.18.0.0/16").unwrap().to_string(),
            "198.18.0.0/16"
        );
        assert!(prefix_of("fe80::/64").is_none());
    }
}
