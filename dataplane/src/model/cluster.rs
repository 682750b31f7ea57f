//! Cluster mode's records, as hosts share them through etcd (the store itself is the loader's
//! business): each host publishes one record under `<prefix>/subnets/<A.B.C.D-LEN>` (Flannel's
//! key shape), bound to a lease it keeps alive, and turns the other hosts' records into routes.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{
    Ipv4Prefix,
    mac::{format_mac, parse_mac},
    route_table::{Config, Route, Target},
};

/// How other hosts reach a host's workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// Routed over the underlay to the host's address.
    Routed,
    /// VXLAN to the host's VTEP.
    Vxlan,
}

/// What a host publishes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostRecord {
    /// The host's workload prefix.
    #[serde(with = "prefix_str")]
    pub prefix: Ipv4Prefix,
    /// Its underlay address: the next hop (routed) or the VTEP address (VXLAN).
    pub underlay: Ipv4Addr,
    pub encap: Encap,
    /// VXLAN only: the host's VTEP MAC, VNI and UDP port.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "mac_opt")]
    pub vtep_mac: Option<[u8; 6]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A name for people (the host's hostname or namespace).
    pub host: String,
}

mod mac_opt {
    use super::*;
    pub fn serialize<S: serde::Serializer>(mac: &Option<[u8; 6]>, s: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(m) => s.serialize_str(&format_mac(m)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 6]>, D::Error> {
        let text: Option<String> = serde::Deserialize::deserialize(d)?;
        text.map(|t| parse_mac(&t).ok_or_else(|| serde::de::Error::custom(format!("bad MAC {t}"))))
            .transpose()
    }
}

mod prefix_str {
    use super::*;
    pub fn serialize<S: serde::Serializer>(p: &Ipv4Prefix, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Ipv4Prefix, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The key prefix under which records live.
pub fn subnets_dir(store_prefix: &str) -> String {
    format!("{}/subnets/", store_prefix.trim_end_matches('/'))
}

/// The key of the record for `prefix`: `<store>/subnets/198.18.1.0-24`.
pub fn record_key(store_prefix: &str, prefix: &Ipv4Prefix) -> String {
    format!(
        "{}{}-{}",
        subnets_dir(store_prefix),
        prefix.addr(),
        prefix.prefix_len()
    )
}

/// The prefixes of length `len` inside `cluster`, in address order.
pub fn candidates(cluster: Ipv4Prefix, len: u8) -> impl Iterator<Item = Ipv4Prefix> {
    let count: u64 = if len >= cluster.prefix_len() {
        1u64 << (len - cluster.prefix_len())
    } else {
        0
    };
    let base = u32::from(cluster.addr()) as u64;
    let step = 1u64 << (32 - len as u32);
    (0..count)
        .filter_map(move |i| Ipv4Prefix::new(Ipv4Addr::from((base + i * step) as u32), len).ok())
}

/// The routes to the other hosts' prefixes, as route-table routes through `underlay_if`
/// (routed) or the table's `vxlan` statement (VXLAN); and what could not be turned into a
/// route, for the log. Route lines are numbered by record, from 1, for error reports.
pub fn routes(
    records: &BTreeMap<String, HostRecord>,
    own: &Ipv4Prefix,
    config: &Config,
    underlay_if: &str,
) -> (Vec<Route>, Vec<String>) {
    let mut routes = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, (key, r)) in records.iter().enumerate() {
        if r.prefix == *own || !seen.insert(r.prefix) {
            continue;
        }
        let target = match r.encap {
            Encap::Routed => Target::Remote {
                via: r.underlay,
                dev: underlay_if.to_string(),
            },
            Encap::Vxlan => match (&config.vxlan, r.vtep_mac) {
                (Some(vxlan), Some(mac)) => Target::Vxlan {
                    vtep: r.underlay,
                    mac,
                    vni: r.vni,
                    dev: vxlan.dev.clone(),
                },
                (None, _) => {
                    warnings.push(format!(
                        "{key}: host {} uses VXLAN, and this host's route table has no `vxlan` statement: no route",
                        r.host
                    ));
                    continue;
                }
                (_, None) => {
                    warnings.push(format!("{key}: VXLAN record without a VTEP MAC: no route"));
                    continue;
                }
            },
        };
        routes.push(Route {
            prefix: r.prefix,
            target,
            line: i + 1,
        });
    }
    (routes, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(prefix: &str, underlay: &str, encap: Encap) -> HostRecord {
        HostRecord {
            prefix: prefix.parse().unwrap(),
            underlay: underlay.parse().unwrap(),
            encap,
            vtep_mac: (encap == Encap::Vxlan).then_some([0x02, 0x76, 198, 19, 0, 2]),
            vni: (encap == Encap::Vxlan).then_some(1),
            port: (encap == Encap::Vxlan).then_some(4789),
            host: "h".into(),
        }
    }

    #[test]
    fn records_round_trip_as_json_with_readable_fields() {
        let r = record("198.18.2.0/24", "198.19.0.2", Encap::Vxlan);
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"prefix\":\"198.18.2.0/24\""), "{text}");
        assert!(
            text.contains("\"vtep_mac\":\"02:76:c6:13:00:02\""),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<HostRecord>(&text).unwrap(), r);
        let routed =
            serde_json::to_string(&record("198.18.3.0/24", "198.19.0.3", Encap::Routed)).unwrap();
        assert!(!routed.contains("vtep_mac"), "{routed}");
    }

    #[test]
    fn keys_are_flannels_shape() {
        let p: Ipv4Prefix = "198.18.7.0/24".parse().unwrap();
        assert_eq!(
            record_key("/ebpf-dataplane/", &p),
            "/ebpf-dataplane/subnets/198.18.7.0-24"
        );
    }

    #[test]
    fn candidates_cover_the_cluster_cidr_in_order() {
        let all: Vec<String> = candidates("198.18.0.0/22".parse().unwrap(), 24)
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            all,
            [
                "198.18.0.0/24",
                "198.18.1.0/24",
                "198.18.2.0/24",
                "198.18.3.0/24"
            ]
        );
        assert_eq!(
            candidates("10.0.0.0/8".parse().unwrap(), 24).count(),
            65_536
        );
        assert_eq!(candidates("10.0.0.0/24".parse().unwrap(), 16).count(), 0);
    }

    #[test]
    fn other_hosts_records_become_routes_and_our_own_does_not() {
        let config =
            crate::model::route_table::parse("interface eth0\nvxlan dev eth0 vni 1\n").unwrap();
        let records = BTreeMap::from([
            (
                "k1".to_string(),
                record("198.18.1.0/24", "198.19.0.1", Encap::Vxlan),
            ),
            (
                "k2".to_string(),
                record("198.18.2.0/24", "198.19.0.2", Encap::Vxlan),
            ),
            (
                "k3".to_string(),
                record("198.18.3.0/24", "198.19.0.3", Encap::Routed),
            ),
        ]);
        let (routes, warnings) =
            routes(&records, &"198.18.1.0/24".parse().unwrap(), &config, "eth0");
        assert!(warnings.is_empty());
        let shown: Vec<String> = routes
            .iter()
            .map(|r| format!("{} {:?}", r.prefix, r.target))
            .collect();
        assert_eq!(shown.len(), 2);
        assert!(
            shown[0].starts_with("198.18.2.0/24 Vxlan { vtep: 198.19.0.2"),
            "{shown:?}"
        );
        assert_eq!(
            shown[1],
            "198.18.3.0/24 Remote { via: 198.19.0.3, dev: \"eth0\" }"
        );
        let no_vxlan = crate::model::route_table::parse("interface eth0\n").unwrap();
        let (routes, warnings) = super::routes(
            &records,
            &"198.18.1.0/24".parse().unwrap(),
            &no_vxlan,
            "eth0",
        );
        assert_eq!(routes.len(), 1);
        assert_eq!(warnings.len(), 1);
    }
}
