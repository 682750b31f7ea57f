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

/// What every host record of a cluster must satisfy, from the cluster's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRules {
    /// The store's key prefix (`--etcd-prefix`).
    pub store_prefix: String,
    /// Host prefixes come from here (`--cluster-cidr`)...
    pub cluster: Ipv4Prefix,
    /// ...and have this length (`--subnet-len`).
    pub subnet_len: u8,
    /// Hosts' underlay addresses lie in this network (the underlay interface's).
    pub underlay: Ipv4Prefix,
}

/// Why a record was refused: its key, and what is wrong with it, as the log and the metric
/// (`dataplane_cluster_records_refused_total{reason}`) name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not the JSON of a host record.
    Malformed(String),
    /// The key is not the one the record's prefix gives (`<store>/subnets/A.B.C.D-LEN`).
    KeyMismatch,
    /// The prefix is not a `/subnet_len` inside the cluster CIDR (0.0.0.0/0, a /32, another
    /// range...).
    OutsideCluster,
    /// The underlay address is not in the underlay network.
    BadUnderlay,
    /// VXLAN without the VTEP MAC, VNI or port other hosts need to reach it.
    IncompleteVxlan,
    /// Not bound to a lease: a record of a live host always is (it goes when the host does).
    NoLease,
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::KeyMismatch => "key_mismatch",
            Refusal::OutsideCluster => "outside_cluster",
            Refusal::BadUnderlay => "bad_underlay",
            Refusal::IncompleteVxlan => "incomplete_vxlan",
            Refusal::NoLease => "no_lease",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(e) => write!(f, "not a host record: {e}"),
            Refusal::KeyMismatch => f.write_str("the key does not match the record's prefix"),
            Refusal::OutsideCluster => {
                f.write_str("the prefix is not a subnet of the cluster CIDR of the subnet length")
            }
            Refusal::BadUnderlay => {
                f.write_str("the underlay address is outside the underlay network")
            }
            Refusal::IncompleteVxlan => f.write_str("VXLAN without VTEP MAC, VNI or port"),
            Refusal::NoLease => f.write_str("not bound to a lease"),
        }
    }
}

impl RecordRules {
    /// The record stored under `key` (value `value`, bound to lease `lease`, 0 for none), if
    /// it is one a host of this cluster may publish.
    pub fn check(&self, key: &str, value: &[u8], lease: i64) -> Result<HostRecord, Refusal> {
        let record: HostRecord =
            serde_json::from_slice(value).map_err(|e| Refusal::Malformed(e.to_string()))?;
        self.check_record(&record)?;
        if key != record_key(&self.store_prefix, &record.prefix) {
            return Err(Refusal::KeyMismatch);
        }
        if lease == 0 {
            return Err(Refusal::NoLease);
        }
        Ok(record)
    }

    /// The checks of the record itself, which this host's own passes too (it is checked
    /// before it is published).
    pub fn check_record(&self, record: &HostRecord) -> Result<(), Refusal> {
        if record.prefix.prefix_len() != self.subnet_len || !self.cluster.covers(&record.prefix) {
            return Err(Refusal::OutsideCluster);
        }
        if !self.underlay.contains(record.underlay) {
            return Err(Refusal::BadUnderlay);
        }
        if record.encap == Encap::Vxlan
            && (record.vtep_mac.is_none() || record.vni.is_none() || record.port.is_none())
        {
            return Err(Refusal::IncompleteVxlan);
        }
        Ok(())
    }
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

    fn rules() -> RecordRules {
        RecordRules {
            store_prefix: "/dp".into(),
            cluster: "198.18.0.0/16".parse().unwrap(),
            subnet_len: 24,
            underlay: "198.19.0.0/24".parse().unwrap(),
        }
    }

    fn stored(r: &HostRecord) -> (String, Vec<u8>) {
        (record_key("/dp", &r.prefix), serde_json::to_vec(r).unwrap())
    }

    #[test]
    fn a_well_formed_record_of_another_host_is_taken() {
        let r = record("198.18.2.0/24", "198.19.0.2", Encap::Vxlan);
        let (key, value) = stored(&r);
        assert_eq!(rules().check(&key, &value, 7), Ok(r));
    }

    #[test]
    fn records_a_host_of_the_cluster_may_not_publish_are_refused_with_their_reason() {
        let rules = rules();
        let good = record("198.18.2.0/24", "198.19.0.2", Encap::Routed);
        let refused = |r: &HostRecord| {
            let (key, value) = stored(r);
            rules.check(&key, &value, 7).unwrap_err().reason()
        };
        for (prefix, why) in [
            ("0.0.0.0/0", "everything"),
            ("198.18.2.2/32", "a /32"),
            ("198.18.2.0/25", "another length"),
            ("10.0.2.0/24", "outside the cluster CIDR"),
        ] {
            let r = HostRecord {
                prefix: prefix.parse().unwrap(),
                ..good.clone()
            };
            assert_eq!(refused(&r), "outside_cluster", "{why}");
        }
        for underlay in ["198.20.0.2", "10.0.0.1"] {
            let r = HostRecord {
                underlay: underlay.parse().unwrap(),
                ..good.clone()
            };
            assert_eq!(refused(&r), "bad_underlay", "{underlay}");
        }
        let r = HostRecord {
            encap: Encap::Vxlan,
            ..good.clone()
        };
        assert_eq!(refused(&r), "incomplete_vxlan");
        let (_, value) = stored(&good);
        let other_key = record_key("/dp", &"198.18.3.0/24".parse().unwrap());
        assert_eq!(
            rules.check(&other_key, &value, 7).unwrap_err().reason(),
            "key_mismatch"
        );
        let (key, _) = stored(&good);
        assert_eq!(
            rules.check(&key, b"{not json", 7).unwrap_err().reason(),
            "malformed"
        );
        assert_eq!(
            rules.check(&key, &value, 0).unwrap_err().reason(),
            "no_lease"
        );
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
