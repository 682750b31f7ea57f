//! The daemon's decisions against a fake system: feed precedence, feeds that degrade line by
//! line, records whose interface is gone, bad tables, and the big-removal guard.
use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use super::*;
use crate::{
    model::{
        Ipv4Prefix,
        cluster::{Encap, HostRecord},
        route_table::{Attach, parse},
    },
    plan::{
        fake_system::{FakeSystem, link},
        kernel_routes::KernelRouteFilter,
        sources::{ClusterRecords, Feeds},
    },
    system::{netinfo::KernelRoute, workloads::WorkloadRecord},
};

/// A host with an underlay `eth0` (198.19.0.1, neighbours .2 and .3 answer, .9 does not) and
/// three workload veths whose workloads answer ARP at the addresses the tests give them.
fn host() -> FakeSystem {
    FakeSystem {
        links: vec![
            link("lo", 1, None),
            link("eth0", 2, Some("veth")),
            link("cali1", 3, Some("veth")),
            link("cali2", 4, Some("veth")),
            link("cali3", 5, Some("veth")),
        ],
        addrs: vec![
            ("lo".into(), "127.0.0.1".parse().unwrap()),
            ("eth0".into(), "198.19.0.1".parse().unwrap()),
        ],
        neighbours: vec![
            ("198.19.0.2".parse().unwrap(), "eth0", [0xaa; 6]),
            ("198.19.0.3".parse().unwrap(), "eth0", [0xcc; 6]),
            ("198.18.1.2".parse().unwrap(), "cali1", [0x11; 6]),
            ("198.18.5.1".parse().unwrap(), "cali1", [0x11; 6]),
            ("198.18.1.3".parse().unwrap(), "cali2", [0x22; 6]),
            ("198.18.2.7".parse().unwrap(), "cali2", [0x22; 6]),
        ],
        ..FakeSystem::default()
    }
}

const TABLE: &str = "interface eth0\nroute 198.18.2.0/24 via 198.19.0.2 dev eth0\n";

fn table(text: &str) -> Config {
    parse(text).unwrap()
}

fn prefix(s: &str) -> Ipv4Prefix {
    s.parse().unwrap()
}

fn record(container: &str, host_ifname: &str, addr: &str) -> WorkloadRecord {
    WorkloadRecord {
        container_id: container.into(),
        ifname: "eth0".into(),
        netns: format!("/run/netns/{container}"),
        host_ifname: host_ifname.into(),
        addr: addr.parse().unwrap(),
        ipam_subnet: None,
    }
}

fn feeds<'a>(workloads: &'a [WorkloadRecord]) -> Feeds<'a> {
    Feeds {
        workloads,
        workload_problems: &[],
        workload_attach: Attach::Tc,
        kernel: None,
        cluster: None,
    }
}

fn decide_now(inputs: &Inputs, system: &FakeSystem) -> Decision {
    decide(inputs, system).expect("a plan")
}

/// `changed` offered just now over `running`, the maps holding `applied`, no feed.
fn offered<'a>(running: &'a Config, changed: &'a Config, applied: &'a Plan) -> Inputs<'a> {
    Inputs {
        running,
        candidate: Some(Candidate {
            config: changed,
            stable: Duration::ZERO,
        }),
        feeds: feeds(&[]),
        applied,
    }
}

/// The plan for `running` and `feeds` with nothing installed yet.
fn plan_of(running: &Config, feeds: Feeds, system: &FakeSystem) -> Plan {
    decide_now(
        &Inputs {
            running,
            candidate: None,
            feeds,
            applied: &Plan::default(),
        },
        system,
    )
    .desired
    .plan
}

#[test]
fn without_a_changed_table_the_running_one_is_planned_with_the_feeds() {
    let running = table(TABLE);
    let workloads = [record("a", "cali1", "198.18.1.2")];
    let decision = decide_now(
        &Inputs {
            running: &running,
            candidate: None,
            feeds: feeds(&workloads),
            applied: &Plan::default(),
        },
        &host(),
    );
    assert_eq!(decision.table, TableOutcome::NoneOffered);
    let plan = &decision.desired.plan;
    assert!(plan.routes.contains_key(&prefix("198.18.2.0/24")));
    assert_eq!(plan.routes[&prefix("198.18.1.2/32")].ifindex, 3);
    assert_eq!(decision.desired.workloads, 1);
    let attached: Vec<&str> = plan.attachments.iter().map(|a| a.ifname.as_str()).collect();
    assert_eq!(attached, ["eth0", "cali1"]);
}

#[test]
fn a_workload_whose_interface_is_gone_is_left_out_and_the_others_taken() {
    let workloads = [
        record("gone", "cali9", "198.18.1.9"),
        record("b", "cali2", "198.18.1.3"),
    ];
    let desired = sources::desired(&table(TABLE), &feeds(&workloads), &host()).unwrap();
    assert!(!desired.plan.routes.contains_key(&prefix("198.18.1.9/32")));
    assert!(desired.plan.routes.contains_key(&prefix("198.18.1.3/32")));
    assert!(!desired.plan.attachments.iter().any(|a| a.ifname == "cali9"));
    assert_eq!(desired.workloads, 1);
    assert_eq!(
        desired.unresolved, 0,
        "a gone interface is not an unresolved route"
    );
}

#[test]
fn the_table_wins_over_every_feed_and_earlier_feeds_over_later_ones() {
    // The table routes 198.18.2.0/24; a workload claims an address inside another prefix that
    // the kernel and the cluster both route too.
    let running = table(TABLE);
    let workloads = [
        record("a", "cali1", "198.18.5.1"),
        // The table's own prefix is not taken from a feed.
        record("b", "cali2", "198.18.2.7"),
    ];
    let mut system = host();
    system.kernel = vec![
        kernel_route("198.18.5.1", "198.19.0.3"),
        kernel_route("198.18.6.0/24", "198.19.0.3"),
    ];
    let filter = KernelRouteFilter {
        table: "main".into(),
        protocols: vec!["bird".into()],
        within: Vec::new(),
        include_default: false,
    };
    let records = BTreeMap::from([
        host_record("k1", "198.18.6.0/24", "198.19.0.2"),
        host_record("k2", "198.18.7.0/24", "198.19.0.2"),
    ]);
    let feeds = Feeds {
        kernel: Some(&filter),
        cluster: Some(ClusterRecords {
            records: &records,
            own: prefix("198.18.1.0/24"),
            underlay_if: "eth0",
        }),
        ..feeds(&workloads)
    };
    let desired = sources::desired(&running, &feeds, &system).unwrap();
    let routes = &desired.plan.routes;
    // The workload's /32 over the kernel's same /32.
    assert_eq!(routes[&prefix("198.18.5.1/32")].ifindex, 3);
    // A /32 inside the table's /24 is a different prefix: the workload gets it.
    assert_eq!(routes[&prefix("198.18.2.7/32")].ifindex, 4);
    // The kernel's /24 over the cluster's same /24 (the kernel's next hop, .3).
    assert_eq!(routes[&prefix("198.18.6.0/24")].dst_mac, [0xcc; 6]);
    assert_eq!(routes[&prefix("198.18.7.0/24")].dst_mac, [0xaa; 6]);
    assert_eq!(
        (desired.workloads, desired.from_kernel, desired.from_cluster),
        (2, 1, 1)
    );
    let warned = |what: &str| desired.warnings.iter().any(|w| w.contains(what));
    assert!(
        warned("kernel route 198.18.5.1/32 is already routed"),
        "{:?}",
        desired.warnings
    );
    assert!(
        warned("cluster route 198.18.6.0/24 is already routed"),
        "{:?}",
        desired.warnings
    );
}

fn kernel_route(dst: &str, via: &str) -> KernelRoute {
    serde_json::from_value(serde_json::json!({
        "dst": dst, "gateway": via, "dev": "eth0", "protocol": "bird"
    }))
    .unwrap()
}

fn host_record(host: &str, prefix: &str, underlay: &str) -> (String, HostRecord) {
    (
        format!("/ebpf-dataplane/subnets/{host}"),
        HostRecord {
            prefix: prefix.parse().unwrap(),
            underlay: underlay.parse().unwrap(),
            encap: Encap::Routed,
            vtep_mac: None,
            vni: None,
            port: None,
            host: host.into(),
        },
    )
}

#[test]
fn a_feed_route_whose_next_hop_does_not_answer_is_left_out_and_counted() {
    let records = BTreeMap::from([
        host_record("dead", "198.18.8.0/24", "198.19.0.9"),
        host_record("alive", "198.18.7.0/24", "198.19.0.2"),
    ]);
    let feeds = Feeds {
        cluster: Some(ClusterRecords {
            records: &records,
            own: prefix("198.18.1.0/24"),
            underlay_if: "eth0",
        }),
        ..feeds(&[])
    };
    let desired = sources::desired(&table(TABLE), &feeds, &host()).unwrap();
    assert!(desired.plan.routes.contains_key(&prefix("198.18.7.0/24")));
    assert!(!desired.plan.routes.contains_key(&prefix("198.18.8.0/24")));
    assert_eq!((desired.from_cluster, desired.unresolved), (1, 1));
    assert!(
        desired
            .warnings
            .iter()
            .any(|w| w.starts_with("cluster route 198.18.8.0/24") && w.ends_with("not taken")),
        "{:?}",
        desired.warnings
    );
}

#[test]
fn a_workload_on_an_interface_the_table_declares_is_refused_with_a_warning() {
    let running = table("interface eth0\ninterface cali1\nroute 198.18.1.2/32 dev cali1\n");
    let workloads = [record("a", "cali1", "198.18.1.7")];
    let desired = sources::desired(&running, &feeds(&workloads), &host()).unwrap();
    assert!(!desired.plan.routes.contains_key(&prefix("198.18.1.7/32")));
    assert_eq!(desired.workloads, 0);
    assert!(
        desired.warnings[0].contains("also in the route table"),
        "{:?}",
        desired.warnings
    );
}

#[test]
fn a_record_naming_an_interface_that_is_no_workload_veth_is_refused() {
    let mut system = host();
    // A veth whose peer stays on the host (a bench's, say) is no workload's either.
    system.links.push(link("veth9", 9, Some("veth")));
    let workloads = [
        record("loopback", "lo", "198.18.1.20"),
        record("underlay", "eth0", "198.18.1.21"),
        record("inner", "veth9", "198.18.1.22"),
        record("real", "cali1", "198.18.1.2"),
    ];
    let desired = sources::desired(&table(TABLE), &feeds(&workloads), &system).unwrap();
    assert_eq!(desired.workloads, 1);
    let attached: Vec<&str> = desired
        .plan
        .attachments
        .iter()
        .map(|a| a.ifname.as_str())
        .collect();
    assert_eq!(
        attached,
        ["eth0", "cali1"],
        "eth0 for the table's line only"
    );
    for name in ["loopback", "underlay", "inner"] {
        assert!(
            desired
                .warnings
                .iter()
                .any(|w| w.starts_with(&format!("workload {name}:"))
                    && w.contains("is not a workload's interface")),
            "{name}: {:?}",
            desired.warnings
        );
    }
}

#[test]
fn problems_of_the_records_directory_are_warnings() {
    let problems = ["records/x.json: not a workload record".to_string()];
    let feeds = Feeds {
        workload_problems: &problems,
        ..feeds(&[])
    };
    let desired = sources::desired(&table(TABLE), &feeds, &host()).unwrap();
    assert_eq!(desired.warnings, problems);
}

#[test]
fn a_changed_table_that_resolves_is_taken() {
    let running = table(TABLE);
    let system = host();
    let applied = plan_of(&running, feeds(&[]), &system);
    let changed = table(&format!(
        "{TABLE}route 198.18.3.0/24 via 198.19.0.2 dev eth0\n"
    ));
    let decision = decide_now(&offered(&running, &changed, &applied), &system);
    assert_eq!(decision.table, TableOutcome::Taken);
    assert_eq!(decision.desired.plan.routes.len(), 2);
}

#[test]
fn a_changed_table_is_taken_without_the_lines_the_host_cannot_realise_now() {
    let running = table(TABLE);
    let system = host();
    let applied = plan_of(&running, feeds(&[]), &system);
    // Line 3's next hop does not answer ARP; line 4 is fine.
    let changed = table(&format!(
        "{TABLE}route 198.18.3.0/24 via 198.19.0.9 dev eth0\nroute 198.18.4.0/24 via 198.19.0.3 dev eth0\n"
    ));
    let decision = decide_now(&offered(&running, &changed, &applied), &system);
    assert_eq!(decision.table, TableOutcome::Taken);
    let desired = &decision.desired;
    assert!(!desired.plan.routes.contains_key(&prefix("198.18.3.0/24")));
    assert!(desired.plan.routes.contains_key(&prefix("198.18.4.0/24")));
    assert!(desired.plan.routes.contains_key(&prefix("198.18.2.0/24")));
    assert_eq!(desired.table_lines_left_out, 1);
    assert_eq!(
        desired.warnings,
        [
            "route table line 3: no MAC address for 198.19.0.9 on `eth0`: it did not answer ARP within 3 s: left out, its packets go to the kernel (tried again later)"
        ]
    );
}

#[test]
fn a_workload_that_has_not_answered_arp_stays_attached_and_its_address_its_own() {
    // cali3's workload (198.18.1.4) and a CNI workload on cali2 (198.18.1.5) do not answer.
    let running = table(&format!(
        "{TABLE}interface cali3\nroute 198.18.1.4/32 dev cali3\n"
    ));
    let workloads = [record("silent", "cali2", "198.18.1.5")];
    let desired = sources::desired(&running, &feeds(&workloads), &host()).unwrap();
    assert!(!desired.plan.routes.contains_key(&prefix("198.18.1.4/32")));
    assert!(!desired.plan.routes.contains_key(&prefix("198.18.1.5/32")));
    let attached: Vec<&str> = desired
        .plan
        .attachments
        .iter()
        .map(|a| a.ifname.as_str())
        .collect();
    assert_eq!(
        attached,
        ["eth0", "cali3", "cali2"],
        "both stay under the programs"
    );
    // The source check knows their addresses, so their ARP is theirs to send.
    assert_eq!(
        desired.plan.unresolved_workloads,
        BTreeMap::from([
            (5, "198.18.1.4".parse().unwrap()),
            (4, "198.18.1.5".parse().unwrap())
        ])
    );
    assert_eq!((desired.table_lines_left_out, desired.unresolved), (1, 1));
}

#[test]
fn a_missing_interface_is_left_out_with_its_routes_and_the_rest_taken() {
    // cali7 does not exist: its line and its route's are left out; the workloads still come.
    let running = table(&format!(
        "{TABLE}interface cali7\nroute 198.18.1.7/32 dev cali7\n"
    ));
    let workloads = [record("a", "cali1", "198.18.1.2")];
    let desired = sources::desired(&running, &feeds(&workloads), &host()).unwrap();
    assert_eq!(desired.table_lines_left_out, 2);
    assert!(!desired.plan.attachments.iter().any(|a| a.ifname == "cali7"));
    assert!(desired.plan.routes.contains_key(&prefix("198.18.2.0/24")));
    assert!(desired.plan.routes.contains_key(&prefix("198.18.1.2/32")));
    assert!(
        desired.warnings[0].starts_with("route table line 3: interface `cali7` does not exist")
    );
    assert!(
        desired.warnings[1].starts_with("route table line 4: its interface `cali7` is left out")
    );
}

#[test]
fn an_unusable_vxlan_statement_is_left_out_with_the_vxlan_routes() {
    // cali3 has no IPv4 address to source the tunnel from.
    let running = table(&format!(
        "{TABLE}interface cali3\nvxlan dev cali3 vni 7\nroute 198.18.9.0/24 vxlan 198.19.0.2 mac 02:00:00:00:00:09\n"
    ));
    let desired = sources::desired(&running, &feeds(&[]), &host()).unwrap();
    assert_eq!(desired.table_lines_left_out, 2, "{:?}", desired.warnings);
    assert_eq!(desired.plan.vxlan, None);
    assert!(!desired.plan.routes.contains_key(&prefix("198.18.9.0/24")));
    assert!(desired.plan.routes.contains_key(&prefix("198.18.2.0/24")));
    assert!(
        desired.warnings[1].contains("the `vxlan` statement is left out"),
        "{:?}",
        desired.warnings
    );
}

#[test]
fn a_dead_next_hop_is_waited_for_once_per_pass_however_many_lines_and_feeds_use_it() {
    let mut text = String::from(TABLE);
    for i in 0..20 {
        text.push_str(&format!("route 10.0.{i}.0/24 via 198.19.0.9 dev eth0\n"));
    }
    let records = BTreeMap::from([host_record("dead", "198.18.8.0/24", "198.19.0.9")]);
    let feeds = Feeds {
        cluster: Some(ClusterRecords {
            records: &records,
            own: prefix("198.18.1.0/24"),
            underlay_if: "eth0",
        }),
        ..feeds(&[])
    };
    let system = host();
    let desired = sources::desired(&table(&text), &feeds, &system).unwrap();
    assert_eq!((desired.table_lines_left_out, desired.unresolved), (20, 1));
    // 198.19.0.2 and 198.19.0.9, once each.
    assert_eq!(system.lookups.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[test]
fn a_table_that_would_remove_most_routes_is_held_until_it_has_settled() {
    let mut big = String::from("interface eth0\n");
    for i in 0..10 {
        big.push_str(&format!("route 10.0.{i}.0/24 via 198.19.0.2 dev eth0\n"));
    }
    let running = table(&big);
    let system = host();
    let workloads = [record("a", "cali1", "198.18.1.2")];
    let applied = plan_of(&running, feeds(&[]), &system);
    // Truncated to one route: nine of ten removed.
    let truncated = table("interface eth0\nroute 10.0.0.0/24 via 198.19.0.2 dev eth0\n");
    let inputs = |stable| Inputs {
        running: &running,
        candidate: Some(Candidate {
            config: &truncated,
            stable,
        }),
        feeds: feeds(&workloads),
        applied: &applied,
    };
    let held = decide_now(&inputs(Duration::from_secs(1)), &system);
    assert_eq!(
        held.table,
        TableOutcome::Held {
            removed: 9,
            installed: 10
        }
    );
    // The running table's routes stay, and the feeds go on: the new workload is routed.
    assert_eq!(held.desired.plan.routes.len(), 11);
    assert!(
        held.desired
            .plan
            .routes
            .contains_key(&prefix("198.18.1.2/32"))
    );

    let settled = decide_now(&inputs(BIG_REMOVAL_SETTLE), &system);
    assert_eq!(settled.table, TableOutcome::Taken);
    assert_eq!(settled.desired.plan.routes.len(), 2);
}

#[test]
fn removing_half_or_less_is_not_held() {
    let running = table(
        "interface eth0\nroute 10.0.0.0/24 via 198.19.0.2 dev eth0\nroute 10.0.1.0/24 via 198.19.0.2 dev eth0\n",
    );
    let system = host();
    let applied = plan_of(&running, feeds(&[]), &system);
    let halved = table("interface eth0\nroute 10.0.0.0/24 via 198.19.0.2 dev eth0\n");
    let decision = decide_now(&offered(&running, &halved, &applied), &system);
    assert_eq!(decision.table, TableOutcome::Taken);
}

#[test]
fn neighbours_in_the_host_s_table_cost_one_read_per_pass_not_a_lookup_each() {
    let mut system = host();
    // The table holds the underlay neighbour and the workload; nothing else is asked.
    system.table = vec![
        ("198.19.0.2".parse().unwrap(), "eth0", [0xaa; 6]),
        ("198.18.1.2".parse().unwrap(), "cali1", [0x11; 6]),
    ];
    let workloads = [record("a", "cali1", "198.18.1.2")];
    let records = BTreeMap::from([host_record("k", "198.18.7.0/24", "198.19.0.2")]);
    let feeds = Feeds {
        cluster: Some(ClusterRecords {
            records: &records,
            own: prefix("198.18.1.0/24"),
            underlay_if: "eth0",
        }),
        ..feeds(&workloads)
    };
    let desired = sources::desired(&table(TABLE), &feeds, &system).unwrap();
    assert_eq!(desired.plan.routes.len(), 3);
    assert_eq!(system.lookups.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(
        system
            .table_reads
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_system_that_cannot_be_read_is_no_route_s_fault() {
    struct Broken;
    impl System for Broken {
        fn links(
            &self,
        ) -> Result<Vec<crate::system::netinfo::Link>, crate::system::netinfo::NetInfoError>
        {
            Err(crate::system::netinfo::NetInfoError::Netlink {
                what: "links".into(),
                message: "refused".into(),
            })
        }
        fn ipv4_addrs(
            &self,
        ) -> Result<Vec<(String, Ipv4Addr)>, crate::system::netinfo::NetInfoError> {
            Ok(Vec::new())
        }
        fn neighbour_mac(
            &self,
            _: Ipv4Addr,
            _: &str,
        ) -> Result<Option<[u8; 6]>, crate::system::netinfo::NetInfoError> {
            Ok(None)
        }
        fn neighbour_mac_now(
            &self,
            _: Ipv4Addr,
            _: &str,
        ) -> Result<Option<[u8; 6]>, crate::system::netinfo::NetInfoError> {
            Ok(None)
        }
        fn kernel_routes(
            &self,
            _: &str,
        ) -> Result<Vec<KernelRoute>, crate::system::netinfo::NetInfoError> {
            Ok(Vec::new())
        }
        fn neighbour_table(
            &self,
        ) -> Result<Vec<(Ipv4Addr, String, [u8; 6])>, crate::system::netinfo::NetInfoError>
        {
            Ok(Vec::new())
        }
    }
    let refused = decide(
        &Inputs {
            running: &table(TABLE),
            candidate: None,
            feeds: feeds(&[]),
            applied: &Plan::default(),
        },
        &Broken,
    )
    .unwrap_err();
    let Refused::Table(errors) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(errors[0].line, 0);
}
