//! Cluster mode end to end, as root: a real three-member etcd cluster (Debian's etcd-server),
//! each member inside a host namespace on its underlay address, and loaders that share their
//! hosts' prefixes and VTEPs through it. Everything is in namespaces the test makes, on one
//! bridge of its own; nothing listens or routes outside them.
mod common;

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use common::*;
use netlab::{
    netns::ChildGuard,
    topology::{Fabric, Options, Overlay},
    traffic::ping,
};

const LEASE_TTL: &str = "4";

/// An etcd member in host `n`'s namespace, listening on its underlay address.
fn start_member(fabric: &Fabric, n: u8, members: &[u8], data: &Path) -> ChildGuard {
    let host = &fabric.hosts[&n];
    let addr = host.underlay_addr;
    let cluster: Vec<String> = members
        .iter()
        .map(|m| format!("m{m}=http://198.19.0.{m}:2380"))
        .collect();
    let child = Command::new("ip")
        .args(["netns", "exec", host.ns.name(), "etcd"])
        .arg(format!("--name=m{n}"))
        .arg(format!(
            "--data-dir={}",
            data.join(format!("m{n}")).display()
        ))
        .arg(format!("--listen-peer-urls=http://{addr}:2380"))
        .arg(format!("--initial-advertise-peer-urls=http://{addr}:2380"))
        .arg(format!("--listen-client-urls=http://{addr}:2379"))
        .arg(format!("--advertise-client-urls=http://{addr}:2379"))
        .arg(format!("--initial-cluster={}", cluster.join(",")))
        .arg(format!(
            "--initial-cluster-token=dpt-{}",
            std::process::id()
        ))
        .arg("--initial-cluster-state=new")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.with_file_name(format!("etcd-m{n}.log"))).unwrap())
        .spawn()
        .expect("starting etcd (Debian's etcd-server)");
    ChildGuard::from_child(child, format!("etcd member m{n}"))
}

fn endpoints(members: &[u8]) -> String {
    members
        .iter()
        .map(|m| format!("http://198.19.0.{m}:2379"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `loader cluster --json` from host 1's namespace, as the store has it (None while it does
/// not answer).
fn cluster_records(fabric: &Fabric, endpoints: &str) -> Option<Vec<serde_json::Value>> {
    let netns = fabric.hosts[&1].ns.name();
    let out = loader(&["cluster", "--etcd", endpoints, "--json", "--netns", netns]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("cluster JSON"))
}

fn wait_until(what: &str, within: Duration, ok: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    assert!(
        wait_until_or_not(within, ok),
        "{what}: not within {within:?}"
    );
    started.elapsed()
}

/// The prefixes in a host's route map (none until its loader is up).
fn prefixes(netns: &str) -> BTreeSet<String> {
    prefixes_of(&routes_or_none(netns))
}

/// Starts host `n`'s loader in cluster mode; its log goes to a file.
fn start_cluster_loader(
    fabric: &Fabric,
    n: u8,
    dir: &Path,
    endpoints: &str,
    extra: &[&str],
) -> ChildGuard {
    let config = dir.join(format!("host{n}.routes"));
    std::fs::write(&config, fabric.local_route_table(n)).unwrap();
    let log = std::fs::File::create(dir.join(format!("host{n}.log"))).unwrap();
    let mut cmd = loader_cmd();
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .args(["--netns", fabric.hosts[&n].ns.name()])
        .args(["--etcd", endpoints, "--etcd-lease-ttl", LEASE_TTL])
        .args(["--state-dir", dir.join("state").to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log);
    ChildGuard::from_child(cmd.spawn().unwrap(), format!("loader of host {n}"))
}

fn host_prefix(n: u8) -> String {
    format!("198.18.{n}.0/24")
}

/// Every host in `hosts` has its loader up and routes to every other one's prefix.
fn all_routed(fabric: &Fabric, hosts: &[u8]) -> bool {
    hosts.iter().all(|n| {
        let netns = fabric.hosts[n].ns.name();
        if !loader_is_up(netns) {
            return false;
        }
        let have = prefixes(netns);
        hosts
            .iter()
            .filter(|m| *m != n)
            .all(|m| have.contains(&host_prefix(*m)))
    })
}

fn pings_all_pairs(fabric: &Fabric, hosts: &[u8]) {
    for a in hosts {
        for b in hosts {
            if a != b {
                let (wa, wb) = (&fabric.hosts[a].workloads[0], &fabric.hosts[b].workloads[0]);
                assert!(
                    ping(&wa.ns, wb.addr, 2).unwrap(),
                    "workload of host {a} cannot reach host {b}'s"
                );
            }
        }
    }
}

/// Three hosts on one underlay (VXLAN on port 4789, a workload each), an etcd member in each
/// (data under `dir`): the fabric, the members, and their endpoints, once the store answers.
fn etcd_bed(dir: &Path) -> (Fabric, Vec<ChildGuard>, String) {
    let mut fabric = Fabric::new(Options {
        workloads_per_host: 1,
        xdp_ready: false,
        overlay: Overlay::Vxlan { port: 4789 },
    })
    .unwrap();
    for n in 1..=3 {
        fabric.add_host(n).unwrap();
    }
    let members = [1u8, 2, 3];
    let data = dir.join("etcd");
    let etcd = members
        .iter()
        .map(|n| start_member(&fabric, *n, &members, &data))
        .collect();
    let ep = endpoints(&members);
    wait_until("etcd answers", Duration::from_secs(30), || {
        cluster_records(&fabric, &ep).is_some()
    });
    (fabric, etcd, ep)
}

#[test]
fn hosts_share_routes_through_etcd_and_survive_its_outage() {
    let Some(_test) = root_test() else {
        return;
    };
    let dir = temp_dir();
    let (mut fabric, guards, ep) = etcd_bed(&dir);
    let mut etcd: Vec<Option<ChildGuard>> = guards.into_iter().map(Some).collect();
    // For restarting them: the members, and their data (where `etcd_bed` put it).
    let (members, data) = ([1u8, 2, 3], dir.join("etcd"));

    // Three loaders, no remote routes in their files: hosts 1 and 2 are reached over VXLAN,
    // host 3 routed.
    let started = Instant::now();
    let mut loaders = vec![
        start_cluster_loader(&fabric, 1, &dir, &ep, &["--host-prefix", &host_prefix(1)]),
        start_cluster_loader(&fabric, 2, &dir, &ep, &["--host-prefix", &host_prefix(2)]),
        start_cluster_loader(
            &fabric,
            3,
            &dir,
            &ep,
            &[
                "--host-prefix",
                &host_prefix(3),
                "--cluster-encap",
                "routed",
            ],
        ),
    ];
    // Joining retries for 30 s while the members elect a leader: wait past that.
    wait_until(
        "three hosts route to each other",
        Duration::from_secs(45),
        || all_routed(&fabric, &[1, 2, 3]),
    );
    eprintln!(
        "three hosts: all routes in place {:.1} s after the loaders started",
        started.elapsed().as_secs_f64()
    );
    let kinds = field_pairs(&routes(fabric.hosts[&1].ns.name()), "prefix", "kind");
    assert!(
        kinds.contains(&(host_prefix(2), "vxlan".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(host_prefix(3), "remote".into())),
        "{kinds:?}"
    );
    pings_all_pairs(&fabric, &[1, 2, 3]);
    {
        let w = |n: u8| &fabric.hosts[&n].workloads[0];
        traffic_works("cluster, VXLAN host 1 -> host 2", w(1), w(2));
        traffic_works("cluster, routed host 1 -> host 3", w(1), w(3));
    }

    // A fourth host joins: everyone learns it.
    fabric.add_host(4).unwrap();
    let joined = Instant::now();
    let loader4 = start_cluster_loader(&fabric, 4, &dir, &ep, &["--host-prefix", &host_prefix(4)]);
    let join_time = wait_until(
        "the fourth host is routed everywhere",
        Duration::from_secs(20),
        || all_routed(&fabric, &[1, 2, 3, 4]),
    );
    eprintln!(
        "host 4 joined: routes to it on every host, and from it to every host, {:.2} s after its loader started",
        join_time.as_secs_f64()
    );
    let _ = joined;
    pings_all_pairs(&fabric, &[1, 4]);

    // It leaves (loader killed: no more keepalives): its routes go everywhere within the TTL.
    drop(loader4);
    let left = wait_until("host 4's routes leave", Duration::from_secs(4 + 6), || {
        [1u8, 2, 3]
            .iter()
            .all(|n| !prefixes(fabric.hosts[n].ns.name()).contains(&host_prefix(4)))
    });
    eprintln!(
        "host 4 left: its routes gone everywhere {:.1} s after its loader was killed (lease TTL {LEASE_TTL} s)",
        left.as_secs_f64()
    );

    // One member down: a new host still propagates.
    etcd[2] = None;
    fabric.add_host(5).unwrap();
    let loader5 = start_cluster_loader(&fabric, 5, &dir, &ep, &["--host-prefix", &host_prefix(5)]);
    let t5 = wait_until(
        "host 5 is routed everywhere with one member down",
        Duration::from_secs(30),
        || all_routed(&fabric, &[1, 2, 3, 5]),
    );
    eprintln!(
        "host 5 joined with member m3 down: routed everywhere in {:.2} s",
        t5.as_secs_f64()
    );

    // All members down for a minute: traffic between existing hosts keeps flowing.
    etcd[0] = None;
    etcd[1] = None;
    let (w1, w2) = (
        &fabric.hosts[&1].workloads[0],
        &fabric.hosts[&2].workloads[0],
    );
    let hosts = [fabric.hosts[&1].ns.name(), fabric.hosts[&2].ns.name()];
    let before = PathCounts::read(&hosts, &w2.ns);
    // Host 5 leaves while the store is away: the others hear of it once it is back.
    drop(loader5);
    let stream = udp_100m(w1, w2, 60).unwrap();
    let overflows = before.assert_path_lost_nothing(&stream, &hosts, &w2.ns);
    eprintln!(
        "all etcd members down for 60 s: UDP 100 Mbit/s host 1 -> host 2, {} datagrams, iperf3 lost {} ({overflows} receive-buffer overflows), nothing lost on the path",
        stream.packets, stream.lost_packets
    );
    assert!(
        prefixes(fabric.hosts[&1].ns.name()).contains(&host_prefix(5)),
        "routes are never flushed because the store is away"
    );

    // The members come back: the change made meanwhile (host 5 gone) reaches everyone.
    for (i, n) in members.iter().enumerate() {
        etcd[i] = Some(start_member(&fabric, *n, &members, &data));
    }
    let back = wait_until(
        "host 5's departure reaches the others",
        Duration::from_secs(40),
        || {
            [1u8, 2, 3]
                .iter()
                .all(|n| !prefixes(fabric.hosts[n].ns.name()).contains(&host_prefix(5)))
        },
    );
    eprintln!(
        "store back: host 5's routes gone everywhere {:.1} s later",
        back.as_secs_f64()
    );
    pings_all_pairs(&fabric, &[1, 2, 3]);

    // Two hosts asking for a prefix at the same moment get different ones.
    fabric.add_host(6).unwrap();
    fabric.add_host(7).unwrap();
    let allocating: Vec<ChildGuard> = [6u8, 7]
        .iter()
        .map(|n| start_cluster_loader(&fabric, *n, &dir, &ep, &["--cluster-cidr", "198.18.0.0/16"]))
        .collect();
    wait_until(
        "both allocating hosts have a record",
        Duration::from_secs(30),
        || cluster_records(&fabric, &ep).is_some_and(|r| r.len() == 5),
    );
    let records = cluster_records(&fabric, &ep).unwrap();
    let by_underlay = |addr: &str| {
        records
            .iter()
            .find(|r| r["underlay"] == addr)
            .map(|r| r["prefix"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no record for {addr}: {records:?}"))
    };
    let (p6, p7) = (by_underlay("198.19.0.6"), by_underlay("198.19.0.7"));
    assert_ne!(p6, p7, "two hosts got the same prefix");
    for p in [&p6, &p7] {
        // Hosts 4 and 5 have left: their prefixes are free again; 1-3 hold theirs.
        assert!(
            !(1..=3).any(|n| *p == host_prefix(n)),
            "{p} is held by a live host"
        );
    }
    eprintln!("allocated at the same moment: host 6 {p6}, host 7 {p7}");

    reboot_and_partition(&mut fabric, &dir, &ep, allocating, &mut loaders, [&p6, &p7]);
    for n in [2u8, 3, 6, 7, 8] {
        detach(fabric.hosts[&n].ns.name());
    }
    loaders.clear();
    drop(etcd);
}

/// A host's prefix as the store has it, by underlay address.
fn prefix_of(fabric: &Fabric, ep: &str, underlay: &str) -> Option<String> {
    cluster_records(fabric, ep)?
        .into_iter()
        .find(|r| r["underlay"] == underlay)
        .map(|r| r["prefix"].as_str().unwrap().to_string())
}

/// Hosts 6 and 7 allocated `allocated` (their prefixes, in that order); hosts 1-3 run
/// `loaders`.
///
/// A reboot: the host holding the higher of the two (R) goes away and loses /run (its
/// loader's files, and where releases before the state directory remembered its prefix); its
/// record expires, and host 1 leaves too, so that a lower prefix than R's is free. R asks for
/// the prefix it remembers under --state-dir, and gets it back rather than the lowest free.
///
/// A partition: the other (Q) loses the store for longer than its lease; host 8 claims Q's
/// prefix meanwhile. When Q reaches the store again it finds its prefix taken and withdraws:
/// its routes to the cluster go, the plugin is told it has no prefix, its log says so; the
/// others route the prefix to host 8 alone.
fn reboot_and_partition(
    fabric: &mut Fabric,
    dir: &Path,
    ep: &str,
    mut allocating: Vec<ChildGuard>,
    loaders: &mut Vec<ChildGuard>,
    allocated: [&String; 2],
) {
    let cidr = ["--cluster-cidr", "198.18.0.0/16"];
    let as_prefix = |p: &str| p.parse::<dataplane::model::Ipv4Prefix>().unwrap();
    let (r, q) = if as_prefix(allocated[0]) > as_prefix(allocated[1]) {
        (6u8, 7u8)
    } else {
        (7, 6)
    };
    let r_prefix = allocated[usize::from(r - 6)].clone();
    let q_prefix = allocated[usize::from(q - 6)].clone();
    let r_underlay = format!("198.19.0.{r}");
    let r_guard = allocating.remove(usize::from(r - 6));
    let q_guard = allocating.pop().unwrap();
    drop(r_guard);
    drop(loaders.remove(0));
    detach(fabric.hosts[&1].ns.name());
    detach(fabric.hosts[&r].ns.name());
    let r_run = netlab::netns::in_netns(fabric.hosts[&r].ns.name(), || {
        Ok(std::path::PathBuf::from(dataplane::system::STATE_ROOT)
            .join(dataplane::system::netns::current_id()?))
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&r_run);
    wait_until(
        "host 1's and the rebooted host's records expire",
        Duration::from_secs(15),
        || cluster_records(fabric, ep).is_some_and(|r| r.len() == 3),
    );
    let r_back = start_cluster_loader(fabric, r, dir, ep, &cidr);
    wait_until("the rebooted host is back", Duration::from_secs(30), || {
        prefix_of(fabric, ep, &r_underlay).is_some()
    });
    assert_eq!(
        prefix_of(fabric, ep, &r_underlay).unwrap(),
        r_prefix,
        "a rebooted host keeps its prefix (host 1's lower {} was free)",
        host_prefix(1)
    );

    // The partition: Q's loader cannot reach the store.
    let q_ns = fabric.hosts[&q].ns.name().to_string();
    let block = ["OUTPUT", "-p", "tcp", "--dport", "2379", "-j", "REJECT"];
    let q_netns = netlab::netns::Netns::existing(&q_ns);
    let iptables = |op: &str| {
        let out = q_netns
            .exec("iptables", &[&[op][..], &block[..]].concat())
            .unwrap();
        assert!(out.status.success(), "iptables {op} in {q_ns}");
    };
    iptables("-A");
    let q_underlay = format!("198.19.0.{q}");
    wait_until(
        "the partitioned host's record expires",
        Duration::from_secs(20),
        || prefix_of(fabric, ep, &q_underlay).is_none(),
    );
    fabric.add_host(8).unwrap();
    let usurper = start_cluster_loader(fabric, 8, dir, ep, &["--host-prefix", &q_prefix]);
    wait_until("host 8 holds the prefix", Duration::from_secs(30), || {
        prefix_of(fabric, ep, "198.19.0.8").as_deref() == Some(q_prefix.as_str())
    });
    iptables("-D");
    let q_log = dir.join(format!("host{q}.log"));
    wait_until(
        "the partitioned host withdraws",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&q_log).is_ok_and(|log| log.contains("withdrawing"))
                && prefixes(&q_ns).iter().all(|p| p.ends_with("/32"))
        },
    );
    let facts = netlab::netns::in_netns(&q_ns, || {
        Ok(dataplane::system::workloads::HostDir::current()?.read_facts()?)
    })
    .unwrap()
    .expect("the loader's facts");
    assert_eq!(
        facts.subnet, None,
        "the withdrawn host still hands out its prefix"
    );
    assert_eq!(
        cluster_records(fabric, ep)
            .unwrap()
            .iter()
            .filter(|r| r["prefix"] == q_prefix.as_str())
            .count(),
        1,
        "one host serves the prefix"
    );
    wait_until("host 2 routes the prefix", Duration::from_secs(10), || {
        prefixes(fabric.hosts[&2].ns.name()).contains(&q_prefix)
    });
    eprintln!("a partitioned host found its prefix {q_prefix} taken and withdrew");
    drop((r_back, q_guard, usurper));
}

/// A CA, a server certificate for `ip`, and a client certificate, made with openssl in `dir`.
fn make_certificates(dir: &Path, ip: &str) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=dpt-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ];
    ca.extend(ec);
    openssl(&ca);
    for (name, ext) in [
        (
            "server",
            format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"),
        ),
        ("client", "extendedKeyUsage=clientAuth\n".to_string()),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, cn) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("/CN=dpt-{name}"),
        );
        let mut req = vec!["req", "-subj", &cn, "-keyout", &key, "-out", &csr];
        req.extend(ec);
        openssl(&req);
        let ext = format!("{name}.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ]);
    }
}

#[test]
fn the_store_is_reached_over_tls_with_a_client_certificate() {
    let Some(_test) = root_test() else {
        return;
    };
    let dir = temp_dir();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certificates(&certs, "198.19.0.1");
    let mut fabric = Fabric::new(Options {
        workloads_per_host: 1,
        xdp_ready: false,
        overlay: Overlay::Vxlan { port: 4789 },
    })
    .unwrap();
    fabric.add_host(1).unwrap();
    fabric.add_host(2).unwrap();
    let file = |name: &str| certs.join(name).to_str().unwrap().to_string();
    let member = Command::new("ip")
        .args([
            "netns",
            "exec",
            fabric.hosts[&1].ns.name(),
            "etcd",
            "--name=m1",
        ])
        .arg(format!("--data-dir={}", dir.join("etcd-tls").display()))
        .args([
            "--listen-peer-urls=http://198.19.0.1:2380",
            "--initial-advertise-peer-urls=http://198.19.0.1:2380",
        ])
        .args(["--initial-cluster=m1=http://198.19.0.1:2380"])
        .args([
            "--listen-client-urls=https://198.19.0.1:2379",
            "--advertise-client-urls=https://198.19.0.1:2379",
        ])
        .arg(format!("--cert-file={}", file("server.pem")))
        .arg(format!("--key-file={}", file("server.key")))
        .arg(format!("--trusted-ca-file={}", file("ca.pem")))
        .arg("--client-cert-auth")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("etcd-tls.log")).unwrap())
        .spawn()
        .unwrap();
    let _member = ChildGuard::from_child(member, "etcd member over TLS");
    let ep = "https://198.19.0.1:2379";
    let tls = [
        "--etcd-ca".to_string(),
        file("ca.pem"),
        "--etcd-cert".into(),
        file("client.pem"),
        "--etcd-key".into(),
        file("client.key"),
    ];
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let netns1 = fabric.hosts[&1].ns.name();
    let listing = |extra: &[&str]| {
        let mut args = vec!["cluster", "--etcd", ep, "--netns", netns1];
        args.extend_from_slice(extra);
        loader(&args)
    };
    wait_until("etcd answers over TLS", Duration::from_secs(30), || {
        listing(&tls).status.success()
    });
    // Without a client certificate the store refuses us.
    let refused = listing(&tls[..2]);
    assert!(
        !refused.status.success(),
        "a client without a certificate was let in"
    );

    let mut loaders = Vec::new();
    for n in [1u8, 2] {
        let prefix = host_prefix(n);
        let mut extra = vec!["--host-prefix", prefix.as_str()];
        extra.extend_from_slice(&tls);
        loaders.push(start_cluster_loader(&fabric, n, &dir, ep, &extra));
    }
    wait_until(
        "two hosts route to each other through a TLS store",
        Duration::from_secs(20),
        || all_routed(&fabric, &[1, 2]),
    );
    pings_all_pairs(&fabric, &[1, 2]);

    // A container on host 1 from a network configuration that names no range: the plugin
    // takes the prefix the cluster gave the host. Its first address (.2) is the hand-wired
    // workload's: refused, and left to it; the next one is the container's.
    {
        let podman = netlab::podman::Podman::new(
            &dir.join("podman1"),
            netns1,
            &plugin(),
            &netlab::podman::NetworkSpec {
                subnet: None,
                static_ips: false,
            },
        )
        .unwrap();
        let name = |what: &str| format!("dpt-{}-{what}", std::process::id());
        let refused = podman.run(&name("taken"), None).unwrap_err();
        assert!(
            format!("{refused:#}").contains("198.18.1.2 is already routed on this host"),
            "{refused:#}"
        );
        podman.run(&name("fresh"), None).unwrap();
        let addr = podman.addr(&name("fresh")).unwrap();
        assert_eq!(
            addr.octets()[..3],
            [198, 18, 1],
            "{addr} is in host 1's prefix"
        );
        assert!(ping(&fabric.hosts[&2].workloads[0].ns, addr, 2).unwrap());
        assert!(
            ping(
                &fabric.hosts[&2].workloads[0].ns,
                fabric.hosts[&1].workloads[0].addr,
                2
            )
            .unwrap(),
            "the hand-wired workload kept its address"
        );
    }
    let shown = String::from_utf8_lossy(&listing(&tls).stdout).into_owned();
    assert!(
        shown.contains("2 hosts") && shown.contains("198.18.2.0/24"),
        "{shown}"
    );
    for n in [1u8, 2] {
        detach(fabric.hosts[&n].ns.name());
    }
    drop(loaders);
}

/// Writes into the store from host `n`'s namespace (where the members listen), with `etcd`'s
/// own client: `put(key, value, lease)` for each of `records` (lease 0: none).
fn put_records(fabric: &Fabric, n: u8, endpoints: &str, records: &[(String, String, i64)]) {
    let endpoints: Vec<String> = endpoints.split(',').map(String::from).collect();
    let records = records.to_vec();
    netlab::netns::in_netns(fabric.hosts[&n].ns.name(), move || {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            let mut client = etcd_client::Client::connect(&endpoints, None).await?;
            for (key, value, lease) in records {
                let options =
                    (lease != 0).then(|| etcd_client::PutOptions::new().with_lease(lease));
                client.put(key, value, options).await?;
            }
            Ok(())
        })
    })
    .expect("writing into the store");
}

/// Grants a lease of `ttl` seconds from host `n`'s namespace.
fn grant_lease(fabric: &Fabric, n: u8, endpoints: &str, ttl: i64) -> i64 {
    let endpoints: Vec<String> = endpoints.split(',').map(String::from).collect();
    netlab::netns::in_netns(fabric.hosts[&n].ns.name(), move || {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            let mut client = etcd_client::Client::connect(&endpoints, None).await?;
            Ok(client.lease_grant(ttl, None).await?.id())
        })
    })
    .expect("granting a lease")
}

/// A host record's JSON, routed, as a host of prefix `prefix` at `underlay` would publish it.
fn record_json(prefix: &str, underlay: &str) -> String {
    format!(r#"{{"prefix":"{prefix}","underlay":"{underlay}","encap":"routed","host":"forged"}}"#)
}

/// Records no host of the cluster may publish, forged into the store while a stream runs
/// between two hosts: each refused with its reason and counted; the owner of an overwritten
/// record writes it back; every host keeps its routes and the stream loses nothing. Then five
/// valid records of hosts that do not answer ARP: their routes are left out, and no host loses
/// its lease (its record stays in the store) over two lease periods.
#[test]
fn the_cluster_holds_against_forged_records_and_dead_neighbours() {
    let Some(_test) = root_test() else {
        return;
    };
    let dir = temp_dir();
    let (fabric, _etcd, ep) = etcd_bed(&dir);
    let metrics_addr = "198.19.0.1:9467";
    let _loaders = [
        start_cluster_loader(
            &fabric,
            1,
            &dir,
            &ep,
            &["--host-prefix", &host_prefix(1), "--metrics", metrics_addr],
        ),
        start_cluster_loader(&fabric, 2, &dir, &ep, &["--host-prefix", &host_prefix(2)]),
    ];
    wait_until(
        "two hosts route to each other",
        Duration::from_secs(20),
        || all_routed(&fabric, &[1, 2]),
    );
    let (w1, w2) = (
        &fabric.hosts[&1].workloads[0],
        &fabric.hosts[&2].workloads[0],
    );
    let hosts = [fabric.hosts[&1].ns.name(), fabric.hosts[&2].ns.name()];
    let routes_before: Vec<BTreeSet<String>> = hosts.iter().map(|h| prefixes(h)).collect();

    let key = |prefix: &str| format!("/ebpf-dataplane/subnets/{}", prefix.replace('/', "-"));
    let forged = [
        // Host 2's own key, a dead underlay address, no lease.
        (
            key(&host_prefix(2)),
            record_json(&host_prefix(2), "198.19.0.250"),
            0,
            "no_lease",
        ),
        (
            key("0.0.0.0/0"),
            record_json("0.0.0.0/0", "198.19.0.250"),
            0,
            "outside_cluster",
        ),
        (
            key("198.18.2.2/32"),
            record_json("198.18.2.2/32", "198.19.0.250"),
            0,
            "outside_cluster",
        ),
        (
            key("10.9.0.0/24"),
            record_json("10.9.0.0/24", "198.19.0.250"),
            0,
            "outside_cluster",
        ),
        (
            key("198.18.7.0/24"),
            record_json("198.18.8.0/24", "198.19.0.250"),
            0,
            "key_mismatch",
        ),
        (
            key("198.18.9.0/24"),
            "{not json".to_string(),
            0,
            "malformed",
        ),
        (
            key("198.18.10.0/24"),
            record_json("198.18.10.0/24", "198.20.0.5"),
            0,
            "bad_underlay",
        ),
    ];
    let before = PathCounts::read(&hosts, &w2.ns);
    let stream = thread::scope(|s| {
        let stream = s.spawn(|| udp_100m(w1, w2, 5));
        thread::sleep(Duration::from_secs(1));
        let records: Vec<(String, String, i64)> = forged
            .iter()
            .map(|(k, v, l, _)| (k.clone(), v.clone(), *l))
            .collect();
        put_records(&fabric, 1, &ep, &records);
        stream.join().unwrap().expect("the stream")
    });
    let overflows = before.assert_path_lost_nothing(&stream, &hosts, &w2.ns);
    eprintln!(
        "forged records during UDP 100 Mbit/s host 1 -> host 2: {} datagrams, {} lost ({overflows} receive-buffer overflows), nothing lost on the path",
        stream.packets, stream.lost_packets
    );
    for (host, before) in hosts.iter().zip(&routes_before) {
        assert_eq!(&prefixes(host), before, "{host}: routes unchanged");
    }
    let metrics = scrape_metrics(fabric.hosts[&1].ns.name(), metrics_addr);
    for (_, _, _, reason) in &forged {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!(
                "dataplane_cluster_records_refused_total{{reason=\"{reason}\"}}"
            )) && !l.ends_with(" 0")),
            "host 1 counted no {reason} refusal:\n{metrics}"
        );
    }
    // Host 2 wrote its own record back: the store has it as host 2 published it.
    wait_until("host 2's record restored", Duration::from_secs(5), || {
        cluster_records(&fabric, &ep).is_some_and(|records| {
            records
                .iter()
                .any(|r| r["prefix"] == host_prefix(2).as_str() && r["underlay"] == "198.19.0.2")
        })
    });

    services_from_the_store(&fabric, &ep, metrics_addr);

    // Five valid records of hosts that do not answer ARP, under a lease of the test's.
    let lease = grant_lease(&fabric, 1, &ep, 120);
    let dead: Vec<(String, String, i64)> = (20..25u8)
        .map(|i| {
            let prefix = format!("198.18.{i}.0/24");
            (
                key(&prefix),
                record_json(&prefix, &format!("198.19.0.{}", 180 + i)),
                lease,
            )
        })
        .collect();
    put_records(&fabric, 1, &ep, &dead);
    let lease_ttl: u64 = LEASE_TTL.parse().unwrap();
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(2 * lease_ttl + 3) {
        let records = cluster_records(&fabric, &ep).expect("the store answers");
        for n in [1u8, 2] {
            assert!(
                records
                    .iter()
                    .any(|r| r["prefix"] == host_prefix(n).as_str()),
                "host {n} lost its record ({:.1} s after the dead records came)",
                watched.elapsed().as_secs_f64()
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
    let metrics = scrape_metrics(fabric.hosts[&1].ns.name(), metrics_addr);
    assert_metrics_have(&metrics, &["dataplane_feed_routes_unresolved 5"]);
    for host in hosts {
        let have = prefixes(host);
        for i in 20..25u8 {
            let prefix = format!("198.18.{i}.0/24");
            assert!(
                !have.contains(&prefix),
                "{host}: the dead host's route {prefix} was installed"
            );
        }
    }
    assert!(
        ping(&w1.ns, w2.addr, 2).unwrap(),
        "host 1 still reaches host 2"
    );

    // etcd's own authentication: a user with read-write on the prefix, auth enabled.
    enable_auth(&fabric, 1, &ep, "loader", "s3cret");
    let password = dir.join("password");
    let listing = |password_file: Option<&str>| {
        let mut args = vec!["cluster", "--etcd", &ep, "--json", "--netns", hosts[0]];
        if let Some(file) = password_file {
            args.extend(["--etcd-user", "loader", "--etcd-password-file", file]);
        }
        loader(&args)
    };
    std::fs::write(&password, "wrong\n").unwrap();
    let wrong = listing(Some(password.to_str().unwrap()));
    assert!(!wrong.status.success(), "a wrong password is refused");
    assert!(
        !listing(None).status.success(),
        "no credentials are refused"
    );
    std::fs::write(&password, "s3cret\n").unwrap();
    let right = listing(Some(password.to_str().unwrap()));
    assert!(
        right.status.success(),
        "the user's password opens the store: {}",
        String::from_utf8_lossy(&right.stderr)
    );
    let records: Vec<serde_json::Value> = serde_json::from_slice(&right.stdout).unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["prefix"] == host_prefix(1).as_str())
    );
}

/// Services from the store: a valid record every host serves, and forged ones (a backend out
/// of the cluster, malformed JSON, another service's address) refused and counted.
fn services_from_the_store(fabric: &Fabric, ep: &str, metrics_addr: &str) {
    let (w1, w2) = (
        &fabric.hosts[&1].workloads[0],
        &fabric.hosts[&2].workloads[0],
    );
    let server = SocketAddrV4::new(w2.addr, 8080);
    let listener =
        netlab::netns::in_netns(w2.ns.name(), || Ok(TcpListener::bind(server)?)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.write_all(b"host 2");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let key = |name: &str| format!("/ebpf-dataplane/services/{name}");
        let service = |front: &str, backend: &str| {
            format!(r#"{{"front":"{front}","protocol":"tcp","backends":["{backend}"]}}"#)
        };
        put_records(
            fabric,
            1,
            ep,
            &[
                (
                    key("echo"),
                    service("10.96.0.20:80", &server.to_string()),
                    0,
                ),
                (key("exfil"), service("10.96.0.21:80", "10.9.9.9:80"), 0),
                // Host 2's workload's own address and port as a service front: a record that
                // would hand that destination to another backend for every host's workloads.
                (
                    key("hijack"),
                    service(&server.to_string(), "198.18.1.9:8080"),
                    0,
                ),
                (key("broken"), "{nope".into(), 0),
                (
                    key("echo-again"),
                    service("10.96.0.20:80", "198.18.1.9:80"),
                    0,
                ),
            ],
        );
        let ask = |front: &str| -> std::io::Result<String> {
            let front: SocketAddr = front.parse().unwrap();
            netlab::netns::in_netns(w1.ns.name(), || {
                let mut conn = TcpStream::connect_timeout(&front, Duration::from_secs(1))?;
                conn.set_read_timeout(Some(Duration::from_secs(1)))?;
                let mut answer = String::new();
                conn.read_to_string(&mut answer)?;
                Ok(answer)
            })
            .map_err(std::io::Error::other)
        };
        let took = wait_until(
            "host 1's workload reaches the store's service",
            Duration::from_secs(10),
            || ask("10.96.0.20:80").is_ok_and(|a| a == "host 2"),
        );
        eprintln!("a service put into the store served within {took:?}");
        assert!(
            ask("10.96.0.21:80").is_err(),
            "a service with a backend outside the cluster was applied"
        );
        assert_eq!(
            ask(&server.to_string()).unwrap(),
            "host 2",
            "a service record took over a workload's address"
        );
        stop.store(true, Ordering::Relaxed);
    });
    // Each refusal counted once, the last record's as soon as the loader has taken it (the
    // records arrive over the watch, not necessarily in one batch).
    let counted_once = |metrics: &str, reason: &str| {
        metrics.lines().any(|l| {
            l.starts_with(&format!(
                "dataplane_cluster_records_refused_total{{reason=\"{reason}\"}}"
            )) && l.ends_with(" 1")
        })
    };
    let reasons = [
        "service_backend_outside_cluster",
        "service_front_outside_range",
        "service_malformed",
        "service_conflict",
    ];
    let host1 = fabric.hosts[&1].ns.name();
    let all_counted = || {
        let metrics = scrape_metrics(host1, metrics_addr);
        reasons.iter().all(|r| counted_once(&metrics, r))
    };
    if !wait_until_or_not(Duration::from_secs(5), all_counted) {
        let metrics = scrape_metrics(host1, metrics_addr);
        for reason in reasons {
            assert!(
                counted_once(&metrics, reason),
                "host 1 did not count one {reason} refusal:\n{metrics}"
            );
        }
    }
}

/// Whether `ok` holds within `within` (looked at every 100 ms).
fn wait_until_or_not(within: Duration, ok: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while !ok() {
        if started.elapsed() >= within {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Turns on etcd's authentication: a root user (which etcd requires first) and `user` with
/// `password`, allowed to read and write the records' prefix.
fn enable_auth(fabric: &Fabric, n: u8, endpoints: &str, user: &str, password: &str) {
    let endpoints: Vec<String> = endpoints.split(',').map(String::from).collect();
    let (user, password) = (user.to_string(), password.to_string());
    netlab::netns::in_netns(fabric.hosts[&n].ns.name(), move || {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            let mut client = etcd_client::Client::connect(&endpoints, None).await?;
            client.user_add("root", "root-pw", None).await?;
            client.user_grant_role("root", "root").await?;
            client.role_add("records").await?;
            client
                .role_grant_permission(
                    "records",
                    etcd_client::Permission::read_write("/ebpf-dataplane/").with_prefix(),
                )
                .await?;
            client.user_add(user.clone(), password, None).await?;
            client.user_grant_role(user, "records").await?;
            client.auth_enable().await?;
            Ok(())
        })
    })
    .expect("enabling etcd's authentication");
}

/// How many hosts the scale test runs: `DATAPLANE_SCALE_HOSTS`, 10 unless set (the suite's);
/// 50 for the documented run (docs/testing.md).
fn scale_hosts() -> u8 {
    std::env::var("DATAPLANE_SCALE_HOSTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10u8)
        .clamp(4, 120)
}

/// Messages the store's members have received over gRPC (unary requests and stream messages
/// such as lease keepalives), summed over `members`, from their metrics.
fn etcd_messages(fabric: &Fabric, members: &[u8]) -> u64 {
    members
        .iter()
        .map(|m| {
            let addr = format!("198.19.0.{m}:2379");
            let text = scrape_metrics(fabric.hosts[m].ns.name(), &addr);
            text.lines()
                .filter(|l| l.starts_with("grpc_server_msg_received_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>() as u64
        })
        .sum()
}

/// Scale: many hosts in namespaces on one underlay, each with its loader, sharing the
/// three-member store of hosts 1-3. Measures how long until every host routes to a newly
/// joined host's prefix, how long until a dead host's routes are gone everywhere (its lease
/// expiring), and the store's request rate per host at rest.
#[test]
fn many_hosts_converge_on_a_host_that_joins_and_one_that_dies() {
    let Some(_test) = root_test() else {
        return;
    };
    let hosts = scale_hosts();
    let dir = temp_dir();
    let (mut fabric, etcd, ep) = etcd_bed(&dir);
    for n in 4..=hosts {
        fabric.add_host(n).unwrap();
    }
    let all: Vec<u8> = (1..=hosts).collect();
    let started = Instant::now();
    let loaders: Vec<ChildGuard> = all
        .iter()
        .map(|n| start_cluster_loader(&fabric, *n, &dir, &ep, &["--host-prefix", &host_prefix(*n)]))
        .collect();
    wait_until(
        "every host routes to every other",
        Duration::from_secs(60 + 3 * u64::from(hosts)),
        || all_routed(&fabric, &all),
    );
    let formed = started.elapsed();

    // At rest: what the store is asked, per host.
    let rest = Duration::from_secs(10);
    let before = etcd_messages(&fabric, &[1, 2, 3]);
    thread::sleep(rest);
    let at_rest = (etcd_messages(&fabric, &[1, 2, 3]) - before) as f64
        / rest.as_secs_f64()
        / f64::from(hosts);

    // A host joins: from its loader's start until every host routes to it.
    let newcomer = hosts + 1;
    fabric.add_host(newcomer).unwrap();
    let joining = start_cluster_loader(
        &fabric,
        newcomer,
        &dir,
        &ep,
        &["--host-prefix", &host_prefix(newcomer)],
    );
    let routed_everywhere = |present: bool| {
        all.iter().all(|n| {
            prefixes(fabric.hosts[n].ns.name()).contains(&host_prefix(newcomer)) == present
        })
    };
    let joined = wait_until(
        "every host routes to the newcomer",
        Duration::from_secs(60),
        || routed_everywhere(true),
    );

    // It dies without a word (SIGKILL): its lease expires, its routes go everywhere.
    signal(joining.pid(), libc::SIGKILL);
    let gone = wait_until(
        "the dead host's routes are gone everywhere",
        Duration::from_secs(60),
        || routed_everywhere(false),
    );
    eprintln!(
        "{hosts} hosts: formed in {:.1} s; a joining host routed everywhere {:.2} s after its \
         loader started; a dead host's routes gone everywhere {:.2} s after it died (lease TTL \
         {LEASE_TTL} s); the store at rest: {at_rest:.2} messages per host per second",
        formed.as_secs_f64(),
        joined.as_secs_f64(),
        gone.as_secs_f64()
    );
    let ttl: u64 = LEASE_TTL.parse().unwrap();
    assert!(
        gone <= Duration::from_secs(ttl + 5),
        "a dead host's routes outlived its lease by more than 5 s: {gone:?}"
    );
    // A keepalive every third of the lease, and nothing else: about 0.75 per second at a
    // 4 s lease.
    assert!(
        at_rest < 2.0,
        "the store is asked {at_rest:.2} times per host per second at rest"
    );
    for n in all.iter().chain([&newcomer]) {
        detach(fabric.hosts[n].ns.name());
    }
    drop(loaders);
    drop(joining);
    drop(etcd);
}
