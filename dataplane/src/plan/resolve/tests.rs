//! Resolution against a fake system: every lookup answered from tables the tests set.
use super::*;
use crate::{
    model::route_table::parse,
    plan::fake_system::{FakeSystem, link},
};

fn system() -> FakeSystem {
    FakeSystem {
        links: vec![
            link("lo", 1, None),
            link("eth0", 2, Some("veth")),
            link("cali1", 3, Some("veth")),
        ],
        addrs: vec![
            ("lo".into(), "127.0.0.1".parse().unwrap()),
            ("eth0".into(), "198.19.0.1".parse().unwrap()),
        ],
        neighbours: vec![
            ("198.19.0.2".parse().unwrap(), "eth0", [0xaa; 6]),
            ("198.18.1.2".parse().unwrap(), "cali1", [0xbb; 6]),
        ],
        ..FakeSystem::default()
    }
}

#[test]
fn many_routes_behind_one_next_hop_ask_for_its_mac_once() {
    let mut table = String::from("interface eth0\n");
    for i in 0..1000u32 {
        table.push_str(&format!(
            "route 10.{}.{}.0/24 via 198.19.0.2 dev eth0\n",
            i / 256,
            i % 256
        ));
    }
    let sys = system();
    let plan = resolve(&parse(&table).unwrap(), &sys).unwrap();
    assert_eq!(plan.routes.len(), 1000);
    assert_eq!(sys.lookups.load(std::sync::atomic::Ordering::Relaxed), 1);
}

const TABLE: &str = "interface eth0\ninterface cali1\nroute 198.18.1.2/32 dev cali1\nroute 198.18.2.0/24 via 198.19.0.2 dev eth0\n";

#[test]
fn resolves_next_hops_with_macs_and_kinds() {
    let plan = resolve(&parse(TABLE).unwrap(), &system()).unwrap();
    let local = plan.routes[&"198.18.1.2/32".parse().unwrap()];
    assert_eq!(
        local,
        NextHop {
            ifindex: 3,
            kind: NextHopKind::Local as u32,
            flags: NH_FLAG_VETH_PEER,
            dst_mac: [0xbb; 6],
            src_mac: [2, 0, 0, 0, 0, 3],
            ..Default::default()
        }
    );
    let remote = plan.routes[&"198.18.2.0/24".parse().unwrap()];
    assert_eq!(
        remote,
        NextHop {
            ifindex: 2,
            kind: NextHopKind::Remote as u32,
            flags: 0,
            dst_mac: [0xaa; 6],
            src_mac: [2, 0, 0, 0, 0, 2],
            ..Default::default()
        }
    );
    assert_eq!(plan.tx_ports, BTreeSet::from([2, 3]));
    assert_eq!(
        plan.attachments
            .iter()
            .map(|a| a.ifindex)
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(plan.host_addrs.contains(&"198.19.0.1".parse().unwrap()));
    assert_eq!(
        plan.peers,
        BTreeSet::from(["198.19.0.2".parse().unwrap()]),
        "the routed next hop is a peer VXLAN is accepted from"
    );
}

#[test]
fn a_local_route_on_a_non_veth_does_not_use_redirect_peer() {
    let mut sys = system();
    sys.links[2].kind = None;
    let plan = resolve(&parse(TABLE).unwrap(), &sys).unwrap();
    assert_eq!(plan.routes[&"198.18.1.2/32".parse().unwrap()].flags, 0);
}

fn errors(table: &str, sys: &FakeSystem) -> Vec<(usize, String)> {
    resolve(&parse(table).unwrap(), sys)
        .unwrap_err()
        .into_iter()
        .map(|e| (e.line, e.message))
        .collect()
}

#[test]
fn missing_interfaces_and_unanswered_arp_name_their_lines() {
    let table = "interface eth0\ninterface cali9\nroute 198.18.1.9/32 dev cali9\nroute 198.18.3.0/24 via 198.19.0.3 dev eth0\n";
    let errs = errors(table, &system());
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].0, 2);
    assert!(errs[0].1.contains("`cali9` does not exist"));
    assert_eq!(errs[1].0, 4);
    assert!(
        errs[1]
            .1
            .contains("no MAC address for 198.19.0.3 on `eth0`")
    );
}

#[test]
fn local_routes_must_be_single_workloads() {
    let errs = errors(
        "interface cali1\nroute 198.18.1.0/24 dev cali1\n",
        &system(),
    );
    assert_eq!(errs[0].0, 2);
    assert!(errs[0].1.contains("must be a /32"), "{errs:?}");
}

#[test]
fn a_next_hop_that_is_this_host_is_refused() {
    let errs = errors(
        "interface eth0\nroute 198.18.3.0/24 via 198.19.0.1 dev eth0\n",
        &system(),
    );
    assert!(errs[0].1.contains("address of this host"), "{errs:?}");
}

#[test]
fn resolves_a_vxlan_route_into_a_tunnel_next_hop() {
    let table = "interface eth0\nvxlan dev eth0 vni 5 port 8472\nroute 198.18.2.0/24 vxlan 198.19.0.2 mac 0e:00:00:00:00:02\n";
    let plan = resolve(&parse(table).unwrap(), &system()).unwrap();
    let v = plan.vxlan.clone().unwrap();
    assert_eq!(v.local_ip, "198.19.0.1".parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        v.mac,
        [0x02, 0x76, 198, 19, 0, 1],
        "default VTEP MAC from the underlay address"
    );
    assert_eq!(v.vnis, BTreeSet::from([5]));
    let nh = plan.routes[&"198.18.2.0/24".parse().unwrap()];
    assert_eq!(nh.kind(), Some(NextHopKind::Vxlan));
    assert_eq!(nh.ifindex, 2);
    assert_eq!(plan.peers, BTreeSet::from(["198.19.0.2".parse().unwrap()]));
    assert_eq!(
        nh.dst_mac,
        [0x0e, 0, 0, 0, 0, 2],
        "inner destination: the remote VTEP MAC"
    );
    assert_eq!(nh.src_mac, v.mac, "inner source: our VTEP MAC");
    assert_eq!(
        nh.outer_dst_mac, [0xaa; 6],
        "outer destination: the underlay neighbour's MAC"
    );
    assert_eq!(nh.outer_src_mac, [2, 0, 0, 0, 0, 2]);
    assert_eq!(
        (nh.outer_src_ip, nh.outer_dst_ip),
        ([198, 19, 0, 1], [198, 19, 0, 2])
    );
    assert_eq!(nh.vni_word, [0, 0, 5, 0]);
    assert_eq!(nh.udp_dport, 8472u16.to_be_bytes());
    assert_eq!(nh.mtu, 1500);
    assert_eq!(plan.tx_ports, BTreeSet::from([2]));
}

#[test]
fn a_vxlan_underlay_without_an_address_is_refused_on_its_line() {
    let mut sys = system();
    sys.addrs.retain(|(dev, _)| dev != "eth0");
    let errs = errors("interface eth0\nvxlan dev eth0 vni 1\n", &sys);
    assert_eq!(errs[0].0, 2);
    assert!(errs[0].1.contains("no IPv4 address"), "{errs:?}");
}

/// A system whose neighbours never answer, and that records how many it was asked at once.
struct Unanswering {
    in_flight: std::sync::atomic::AtomicUsize,
    most_at_once: std::sync::atomic::AtomicUsize,
}

impl System for Unanswering {
    fn links(&self) -> Result<Vec<Link>, NetInfoError> {
        system().links()
    }
    fn ipv4_addrs(&self) -> Result<Vec<(String, Ipv4Addr)>, NetInfoError> {
        system().ipv4_addrs()
    }
    fn neighbour_mac(&self, _: Ipv4Addr, _: &str) -> Result<Option<[u8; 6]>, NetInfoError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most_at_once.fetch_max(now, SeqCst);
        // Long enough that lookups asked together overlap: ARP's timeout, shortened.
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.in_flight.fetch_sub(1, SeqCst);
        Ok(None)
    }
    fn neighbour_mac_now(&self, _: Ipv4Addr, _: &str) -> Result<Option<[u8; 6]>, NetInfoError> {
        Ok(None)
    }
    fn kernel_routes(&self, _: &str) -> Result<Vec<KernelRoute>, NetInfoError> {
        Ok(Vec::new())
    }
    fn neighbour_table(&self) -> Result<Vec<(Ipv4Addr, String, [u8; 6])>, NetInfoError> {
        Ok(Vec::new())
    }
}

#[test]
fn next_hops_that_do_not_answer_are_waited_for_together() {
    let mut table = String::from("interface eth0\n");
    for i in 0..5 {
        table.push_str(&format!(
            "route 198.18.{}.0/24 via 198.19.0.{} dev eth0\n",
            10 + i,
            10 + i
        ));
    }
    let sys = Unanswering {
        in_flight: Default::default(),
        most_at_once: Default::default(),
    };
    let errs = resolve(&parse(&table).unwrap(), &sys).unwrap_err();
    assert_eq!(errs.len(), 5, "each dead next hop is reported on its line");
    assert_eq!(
        sys.most_at_once.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "all five were asked at once"
    );
}
