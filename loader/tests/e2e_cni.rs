//! The CNI plugin driven by a real container runtime (podman, CNI backend) on two hosts, the
//! loader following the workloads live: reachability with the kernel's forwarding shut
//! (`iptables -P FORWARD DROP`), churn under a stream, a restarted container, a loader killed
//! while containers come and go, traffic leaving the cluster (masqueraded), and the plugin's
//! DEL and CHECK semantics run directly as a runtime would.
mod common;

use std::{
    net::{Ipv4Addr, UdpSocket},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::*;
use dataplane::model::route_table::Attach;
use netlab::{
    netns::{ChildGuard, Netns, in_netns, veth_between},
    podman::{NetworkSpec, Podman},
    topology::Workload,
    traffic::{Proto, iperf3},
};

/// Two hosts (routed underlay, no hand-wired workloads), podman on each with the plugin on a
/// network of the host's prefix, a loader on each, and the kernel's forwarding shut.
struct CniBed {
    // Dropped first: every container removed while the hosts still exist.
    podman: Vec<Podman>,
    loaders: Vec<Option<ChildGuard>>,
    bed: TestBed,
}

impl CniBed {
    fn build() -> Option<Self> {
        Self::build_with(&[], None)
    }

    /// With `extra0` arguments for host 0's loader, and the policy `policy1` for host 1.
    fn build_with(extra0: &[&str], policy1: Option<&str>) -> Option<Self> {
        let bed = TestBed::routed(0, Attach::Tc)?.forward_drop();
        let podman = (0..2)
            .map(|i| {
                let spec = NetworkSpec {
                    subnet: Some(&bed.hosts[i].prefix()),
                    static_ips: true,
                };
                Podman::new(
                    &bed.dir.join(format!("podman{i}")),
                    bed.host(i),
                    &plugin(),
                    &spec,
                )
                .unwrap()
            })
            .collect();
        let loaders = vec![
            Some(bed.start_loader_with(0, Attach::Tc, extra0)),
            Some(match policy1 {
                Some(policy) => bed.start_loader_with_policy(1, Attach::Tc, policy),
                None => bed.start_loader(1, Attach::Tc),
            }),
        ];
        Some(Self {
            podman,
            loaders,
            bed,
        })
    }

    /// A container name unique to the run.
    fn name(&self, host: usize, what: &str) -> String {
        format!("dpt-{}-h{host}-{what}", std::process::id())
    }

    /// Starts a container on `host`; returns its name.
    fn run(&self, host: usize, what: &str, ip: Option<Ipv4Addr>) -> String {
        let name = self.name(host, what);
        self.podman[host].run(&name, ip).unwrap();
        name
    }

    /// The container as a workload of the bed (its namespace is podman's).
    fn workload(&self, host: usize, name: &str) -> Workload {
        Workload {
            ns: self.podman[host].netns(name).unwrap(),
            addr: self.podman[host].addr(name).unwrap(),
            host_if: String::new(),
        }
    }
}

/// One ping, waiting up to `wait_s` for its answer.
fn ping_once(from: &Netns, to: Ipv4Addr, wait_s: u32) -> bool {
    from.command("ping")
        .args([
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            &wait_s.to_string(),
            &to.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pings until answered; the time it took, or None after `limit`.
fn first_answer(from: &Netns, to: Ipv4Addr, started: Instant, limit: Duration) -> Option<Duration> {
    while started.elapsed() < limit {
        if ping_once(from, to, 1) {
            return Some(started.elapsed());
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The /32 routes of `netns`'s dataplane (its local workloads).
fn workload_routes(netns: &str) -> Vec<String> {
    let mut routes: Vec<String> = routes(netns)
        .iter()
        .filter(|r| r["kind"] == "local")
        .map(|r| r["prefix"].as_str().unwrap().to_string())
        .collect();
    routes.sort();
    routes
}

/// Interfaces of `netns` named like the plugin's host ends.
fn plugin_veths(netns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-n", netns, "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .filter(|n| n.starts_with("dp"))
        .collect()
}

/// The addresses the IPAM plugin holds for host `host`.
fn allocated(podman: &Podman) -> Vec<String> {
    std::fs::read_dir(podman.ipam_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The plugin's workload records on host `netns`.
fn records(netns: &str) -> usize {
    in_netns(netns, || {
        Ok(dataplane::system::workloads::HostDir::current()?
            .read_records()
            .0
            .len())
    })
    .unwrap()
}

/// The tc forwarded counter of host `netns`.
fn tc_forwarded(netns: &str) -> u64 {
    forwarded(&stats(netns), "tc")
}

/// Pinned links of host `netns` (one per attached interface).
fn pinned_links(netns: &str) -> usize {
    let status = loader(&["status", "--json", "--netns", netns]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    status["links"].as_array().map_or(0, Vec::len)
}

#[test]
fn podman_containers_on_two_hosts_reach_each_other_only_through_the_programs() {
    // Host 1 polices the container it will be given 198.18.2.200: TCP from host 0's prefix
    // only.
    let policy = "workload 198.18.2.200 ingress deny egress allow\n\
                  allow ingress 198.18.2.200 peer 198.18.1.0/24 proto tcp\n";
    let Some(bed) = CniBed::build_with(&["--nat-outgoing", "198.18.0.0/16"], Some(policy)) else {
        return;
    };
    // The outside: a namespace of the test's own beyond host 0 (TEST-NET-3), to which the
    // operator lets host 0 forward (and nothing else).
    let outside = Netns::create("outside").unwrap();
    let host0 = &bed.bed.hosts[0].ns;
    veth_between(host0, "ext0", &outside, "eth0").unwrap();
    host0
        .ip(&["addr", "add", "203.0.113.1/24", "dev", "ext0"])
        .unwrap();
    host0.ip(&["link", "set", "ext0", "up"]).unwrap();
    outside
        .ip(&["addr", "add", "203.0.113.2/24", "dev", "eth0"])
        .unwrap();
    outside.ip(&["link", "set", "eth0", "up"]).unwrap();
    host0
        .exec("iptables", &["-A", "FORWARD", "-o", "ext0", "-j", "ACCEPT"])
        .unwrap();
    host0
        .exec(
            "iptables",
            &[
                "-A",
                "FORWARD",
                "-i",
                "ext0",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        )
        .unwrap();

    // Ten containers a host; each timed from `podman run` to its first packet forwarded (a
    // ping to the other host's first container answered).
    let mut names = [Vec::new(), Vec::new()];
    let mut to_first_packet = Vec::new();
    names[1].push(bed.run(1, "c0", None));
    names[0].push(bed.run(0, "c0", None));
    let first = [bed.workload(0, &names[0][0]), bed.workload(1, &names[1][0])];
    for j in 1..10 {
        for host in [0, 1] {
            let started = Instant::now();
            let name = bed.run(host, &format!("c{j}"), None);
            let w = bed.workload(host, &name);
            let took = first_answer(
                &w.ns,
                first[1 - host].addr,
                started,
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| panic!("{name} ({}) never reached the other host", w.addr));
            to_first_packet.push(took);
            names[host].push(name);
        }
    }
    to_first_packet.sort();
    eprintln!(
        "podman run to first forwarded packet, {} containers: p50 {:.0} ms, p99 {:.0} ms",
        to_first_packet.len(),
        percentile(&to_first_packet, 0.5).as_secs_f64() * 1e3,
        percentile(&to_first_packet, 0.99).as_secs_f64() * 1e3,
    );
    let workloads: Vec<Vec<Workload>> = (0..2)
        .map(|h| names[h].iter().map(|n| bed.workload(h, n)).collect())
        .collect();
    for h in 0..2 {
        assert_eq!(
            workload_routes(bed.bed.host(h)).len(),
            10,
            "host {h}'s routes"
        );
    }

    // Every pair across the hosts: one echo and one reply each, each forwarded once on
    // either host by the programs (the kernel's FORWARD drops everything).
    let before = [tc_forwarded(bed.bed.host(0)), tc_forwarded(bed.bed.host(1))];
    for a in &workloads[0] {
        for b in &workloads[1] {
            assert!(
                ping_once(&a.ns, b.addr, 2),
                "{} -> {} unanswered",
                a.addr,
                b.addr
            );
        }
    }
    for (h, before) in before.iter().enumerate() {
        assert_eq!(
            tc_forwarded(bed.bed.host(h)) - before,
            200,
            "host {h}: 100 echoes and 100 replies, each forwarded once"
        );
    }

    // A restarted container: new veth, new MAC, same address (asked for with --ip), reachable
    // again within a second of its ADD (which `podman restart` waits for).
    let fixed = Ipv4Addr::new(198, 18, 1, 200);
    let restarted = bed.run(0, "restarted", Some(fixed));
    let mac_of = |name: &str| {
        let ns = bed.podman[0].netns(name).unwrap();
        String::from_utf8_lossy(
            &ns.exec("cat", &["/sys/class/net/eth0/address"])
                .unwrap()
                .stdout,
        )
        .trim()
        .to_string()
    };
    let mac_before = mac_of(&restarted);
    assert!(
        ping_once(&workloads[1][0].ns, fixed, 2),
        "before the restart"
    );
    bed.podman[0]
        .podman(&["restart", "-t", "0", &restarted])
        .unwrap();
    let back = Instant::now();
    assert_eq!(bed.podman[0].addr(&restarted).unwrap(), fixed);
    let mac_after = mac_of(&restarted);
    assert_ne!(mac_before, mac_after, "the restart made a new veth");
    let took = first_answer(&workloads[1][0].ns, fixed, back, Duration::from_secs(1))
        .expect("the restarted container answers within a second of its ADD");
    eprintln!("restarted container ({mac_before} -> {mac_after}) answered after {took:?}");

    // A container that arrives under policy is policed from its first packet: pings denied
    // (counted), while its neighbours on the same host answer (above).
    let policed = Ipv4Addr::new(198, 18, 2, 200);
    let policed_name = bed.run(1, "policed", Some(policed));
    let denied = counter(&stats(bed.bed.host(1)), "tc", "drop_policy_ingress");
    assert!(
        !ping_once(&workloads[0][0].ns, policed, 1),
        "the policy let a ping in"
    );
    assert!(
        counter(&stats(bed.bed.host(1)), "tc", "drop_policy_ingress") > denied,
        "the ping was dropped by the policy"
    );
    // ...and what the policy allows gets through: TCP from host 0.
    let policed_ns = bed.podman[1].netns(&policed_name).unwrap();
    let listener = in_netns(policed_ns.name(), || {
        Ok(std::net::TcpListener::bind("198.18.2.200:8080")?)
    })
    .unwrap();
    in_netns(workloads[0][0].ns.name(), || {
        let addr = std::net::SocketAddr::from((policed, 8080));
        Ok(std::net::TcpStream::connect_timeout(
            &addr,
            Duration::from_secs(3),
        )?)
    })
    .expect("TCP from host 0's prefix is allowed");
    drop(listener);

    // Out of the cluster: the source is translated to host 0's address on the way out, and
    // the reply comes back to the container.
    let server = UdpSocketIn::bind(&outside, "203.0.113.2:9999");
    let container = workloads[0][3].ns.name().to_string();
    let reply = in_netns(&container, || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(3)))?;
        socket.send_to(b"hello", "203.0.113.2:9999")?;
        let mut buf = [0u8; 64];
        let (n, _) = socket.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    let seen = server.join();
    assert_eq!(
        seen.ip().to_string(),
        "203.0.113.1",
        "source as the outside saw it"
    );
    assert_eq!(
        reply.expect("a reply from the outside"),
        format!("seen {seen}")
    );

    // What the way out costs beside the programs' path: TCP through the kernel and the NAT
    // rule, and container to container across the hosts, from the same container.
    let from = &workloads[0][3];
    let nat = iperf3(
        &from.ns,
        &outside,
        Ipv4Addr::new(203, 0, 113, 2),
        Proto::Tcp,
        3,
    )
    .expect("TCP to the outside");
    let ebpf = iperf3(
        &from.ns,
        &workloads[1][3].ns,
        workloads[1][3].addr,
        Proto::Tcp,
        3,
    )
    .expect("TCP across the hosts");
    eprintln!(
        "TCP 3 s: to the outside through the kernel and NAT {:.2} Gbit/s, across the hosts through the programs {:.2} Gbit/s",
        nat.bits_per_second / 1e9,
        ebpf.bits_per_second / 1e9
    );
    assert!(nat.bytes > 1_000_000 && ebpf.bytes > 1_000_000);
}

/// A UDP server in a namespace that answers one datagram with `seen ADDR:PORT` (its source).
struct UdpSocketIn(thread::JoinHandle<std::net::SocketAddr>);

impl UdpSocketIn {
    fn bind(ns: &Netns, addr: &'static str) -> Self {
        let name = ns.name().to_string();
        let (ready, wait) = std::sync::mpsc::channel();
        let handle = thread::spawn(move || {
            in_netns(&name, || {
                let socket = UdpSocket::bind(addr)?;
                socket.set_read_timeout(Some(Duration::from_secs(10)))?;
                ready.send(()).unwrap();
                let mut buf = [0u8; 64];
                let (_, from) = socket.recv_from(&mut buf)?;
                socket.send_to(format!("seen {from}").as_bytes(), from)?;
                Ok(from)
            })
            .expect("the outside got a datagram")
        });
        wait.recv().unwrap();
        Self(handle)
    }

    fn join(self) -> std::net::SocketAddr {
        self.0.join().unwrap()
    }
}

#[test]
fn a_hundred_containers_come_and_go_under_a_stream_and_leave_nothing_behind() {
    let Some(bed) = CniBed::build() else {
        return;
    };
    let client_name = bed.run(0, "client", None);
    let server_name = bed.run(1, "server", None);
    let (client, server) = (bed.workload(0, &client_name), bed.workload(1, &server_name));
    let kept = [
        workload_routes(bed.bed.host(0)),
        workload_routes(bed.bed.host(1)),
    ];
    let overflows_before = udp_receive_buffer_errors(&server.ns);
    let started = Instant::now();
    let churn_done = std::sync::atomic::AtomicBool::new(false);
    let stream = thread::scope(|s| {
        let stream = s.spawn(|| udp_100m(&client, &server, 40));
        // 50 containers a host, two podman clients at a time on each, then removed 10 at
        // a time.
        thread::scope(|churn| {
            for host in [0, 1] {
                for worker in 0..2 {
                    let bed = &bed;
                    churn.spawn(move || {
                        let names: Vec<String> = (0..25)
                            .map(|j| bed.run(host, &format!("churn{worker}-{j}"), None))
                            .collect();
                        for batch in names.chunks(10) {
                            let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
                            bed.podman[host].rm(&batch).unwrap();
                        }
                    });
                }
            }
        });
        churn_done.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "100 containers created and removed in {:?}",
            started.elapsed()
        );
        stream.join().unwrap()
    });
    assert!(churn_done.into_inner());
    let udp = stream.expect("the stream ran");
    let overflows = udp_receive_buffer_errors(&server.ns) - overflows_before;
    let path_lost = udp.lost_packets.saturating_sub(overflows);
    eprintln!(
        "stream under churn: {} datagrams, {} lost ({overflows} receive-buffer overflows)",
        udp.packets, udp.lost_packets
    );
    assert!(
        udp.packets > 200_000,
        "the stream ran at 100 Mbit/s: {udp:?}"
    );
    assert_eq!(path_lost, 0, "datagrams lost on the path during the churn");

    // Nothing of the 100 is left: routes, attachments, addresses, records, veths.
    for (h, kept) in kept.iter().enumerate() {
        let ns = bed.bed.host(h);
        assert_eq!(&workload_routes(ns), kept, "host {h}: routes");
        assert_eq!(
            pinned_links(ns),
            2,
            "host {h}: links pinned (eth0 and the stream's container)"
        );
        assert_eq!(
            allocated(&bed.podman[h]).len(),
            1,
            "host {h}: addresses held by IPAM"
        );
        assert_eq!(records(ns), 1, "host {h}: workload records");
        assert_eq!(
            plugin_veths(ns).len(),
            1,
            "host {h}: plugin veths {:?}",
            plugin_veths(ns)
        );
    }
}

#[test]
fn a_loader_killed_while_containers_come_and_go_catches_up_when_restarted() {
    let Some(mut bed) = CniBed::build() else {
        return;
    };
    let peer_name = bed.run(1, "peer", None);
    let peer = bed.workload(1, &peer_name);
    let names: Vec<String> = (0..4).map(|j| bed.name(0, &format!("k{j}"))).collect();
    let podman = &bed.podman[0];
    for name in &names[..3] {
        podman.run(name, None).unwrap();
    }
    // The loader is killed: containers may still go, none may come (its interface would carry
    // traffic with no program on it).
    let loader0 = bed.loaders[0].take().unwrap();
    signal(loader0.pid(), libc::SIGKILL);
    let _ = loader0.wait();
    podman.rm(&[&names[1]]).unwrap();
    let refused = podman
        .run(&names[3], None)
        .expect_err("a container added while no loader runs");
    assert!(
        format!("{refused:#}").contains("no loader runs on this host"),
        "refused for the right reason: {refused:#}"
    );
    // The runtime keeps the refused container, created but not started: removed, as an
    // operator or a kubelet would before trying again.
    let _ = podman.rm(&[&names[3]]);
    podman.rm(&[&names[0]]).unwrap();
    // Nothing of the refused one is left behind on the host.
    assert_eq!(
        plugin_veths(bed.bed.host(0)).len(),
        1,
        "veths while no loader runs"
    );
    assert_eq!(records(bed.bed.host(0)), 1, "records while no loader runs");

    bed.loaders[0] = Some(bed.bed.start_loader(0, Attach::Tc));
    // With the loader back, the refused container comes.
    bed.podman[0].run(&names[3], None).unwrap();
    let remaining = [&names[2], &names[3]];
    let mut expected: Vec<String> = remaining
        .iter()
        .map(|n| format!("{}/32", bed.podman[0].addr(n).unwrap()))
        .collect();
    expected.sort();
    assert!(
        routes_become(bed.bed.host(0), Duration::from_secs(5), |_| {
            workload_routes(bed.bed.host(0)) == expected
        }),
        "host 0 routes {:?}, want {expected:?}",
        workload_routes(bed.bed.host(0))
    );
    assert_eq!(
        pinned_links(bed.bed.host(0)),
        1 + remaining.len(),
        "links pinned"
    );
    assert_eq!(records(bed.bed.host(0)), remaining.len());
    assert_eq!(plugin_veths(bed.bed.host(0)).len(), remaining.len());
    let before = tc_forwarded(bed.bed.host(0));
    for name in remaining {
        let w = bed.workload(0, name);
        assert!(
            ping_once(&w.ns, peer.addr, 2),
            "{name} ({}) unreachable",
            w.addr
        );
    }
    assert_eq!(
        tc_forwarded(bed.bed.host(0)) - before,
        2 * remaining.len() as u64,
        "each echo and reply by the programs"
    );
}

/// Runs the plugin as a runtime does, in host `netns`, with `conf` on stdin.
fn plugin_run(
    netns: &str,
    command: &str,
    container: &str,
    container_ns: Option<&str>,
    conf: &serde_json::Value,
) -> Output {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}"))
        .arg(plugin())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", netlab::podman::REFERENCE_PLUGINS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = container_ns {
        cmd.env("CNI_NETNS", format!("/run/netns/{ns}"));
    }
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn the_plugin_answers_add_check_and_del_as_the_spec_says() {
    let Some(bed) = TestBed::routed(0, Attach::Tc) else {
        return;
    };
    let _loader = bed.start_loader(0, Attach::Tc);
    let host = bed.host(0);
    // A dead next hop in the route table (198.19.0.99 never answers ARP): its line is left
    // out, and the containers below come and go regardless.
    let table_path = bed.dir.join("host0.routes");
    let table = std::fs::read_to_string(&table_path).unwrap();
    std::fs::write(
        &table_path,
        format!(
            "{table}route 198.18.99.0/24 via 198.19.0.99 dev eth0\nroute 198.18.77.0/24 via 198.19.0.2 dev eth0\n"
        ),
    )
    .unwrap();
    wait_for_table(host, "took the table with a dead next hop", |t| {
        has_route(t, "198.18.77.0/24")
    });
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "dpnet",
        "type": "ebpf-dataplane",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": bed.hosts[0].prefix()}]],
                 "dataDir": bed.dir.join("ipam")},
    });
    let version = plugin_run(host, "VERSION", "", None, &conf);
    assert!(
        json_of(&version)["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&"1.0.0".into())
    );

    // ADD, timed: the plugin's own time, IPAM and the loader's sync included.
    let containers: Vec<Netns> = (0..20)
        .map(|i| Netns::create(&format!("cni{i}")).unwrap())
        .collect();
    let mut add_times = Vec::new();
    let mut results = Vec::new();
    for (i, ns) in containers.iter().enumerate() {
        let started = Instant::now();
        let out = plugin_run(host, "ADD", &format!("direct{i}"), Some(ns.name()), &conf);
        add_times.push(started.elapsed());
        assert!(
            out.status.success(),
            "ADD: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        results.push(json_of(&out));
    }
    add_times.sort();
    eprintln!(
        "plugin ADD (IPAM, wiring, loader sync), 20 in a row: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&add_times, 0.5).as_secs_f64() * 1e3,
        percentile(&add_times, 0.99).as_secs_f64() * 1e3
    );
    let result = &results[0];
    assert_eq!(result["cniVersion"], "1.0.0");
    let address = result["ips"][0]["address"].as_str().unwrap();
    assert!(address.ends_with("/32"), "{result}");
    let addr: Ipv4Addr = address.trim_end_matches("/32").parse().unwrap();
    assert_eq!(result["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        format!("/run/netns/{}", containers[0].name())
    );
    let host_if = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        workload_routes(host).len(),
        20,
        "every ADD routed before it returned"
    );
    assert!(
        !has_route(&routes(host), "198.18.99.0/24"),
        "the dead next hop's line is left out"
    );

    // A route table change that would remove most routes waits 10 s (a truncated file looks
    // like that); containers still come and go meanwhile, against the running table.
    let table = std::fs::read_to_string(&table_path).unwrap();
    let mut big = table.clone();
    for i in 0..100 {
        big.push_str(&format!(
            "route 198.19.200.{i}/32 via 198.19.0.2 dev eth0\n"
        ));
    }
    std::fs::write(&table_path, &big).unwrap();
    assert!(routes_become(host, Duration::from_secs(3), |t| t.len() == 122));
    std::fs::write(&table_path, &table).unwrap();
    thread::sleep(Duration::from_millis(600)); // settled, and waiting out its 10 s
    let late = Netns::create("cni-late").unwrap();
    let out = plugin_run(host, "ADD", "direct-late", Some(late.name()), &conf);
    assert!(
        out.status.success(),
        "ADD while a big removal waits: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        routes(host).len(),
        123,
        "the new container routed, the 100 routes still there"
    );
    let out = plugin_run(host, "DEL", "direct-late", Some(late.name()), &conf);
    assert!(out.status.success());
    assert_eq!(routes(host).len(), 122);
    assert!(
        routes_become(host, Duration::from_secs(15), |t| t.len() == 22),
        "the removal applied once it had stayed"
    );

    // CHECK passes as ADD left it, and names the host route once it is removed by hand.
    let mut checked = conf.clone();
    checked["prevResult"] = result.clone();
    let ok = plugin_run(
        host,
        "CHECK",
        "direct0",
        Some(containers[0].name()),
        &checked,
    );
    assert!(
        ok.status.success(),
        "CHECK: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    bed.hosts[0]
        .ns
        .ip(&["route", "del", &format!("{addr}/32"), "dev", &host_if])
        .unwrap();
    let broken = plugin_run(
        host,
        "CHECK",
        "direct0",
        Some(containers[0].name()),
        &checked,
    );
    assert!(!broken.status.success());
    let error = json_of(&broken);
    assert_eq!(error["code"], 102);
    assert!(
        error["msg"]
            .as_str()
            .unwrap()
            .contains(&format!("no route {addr} dev {host_if}")),
        "{error}"
    );
    let unknown = plugin_run(
        host,
        "CHECK",
        "never-added",
        Some(containers[0].name()),
        &checked,
    );
    assert!(
        json_of(&unknown)["msg"]
            .as_str()
            .unwrap()
            .contains("no record")
    );

    // A MAC that changes under an address (the neighbour entry replaced, as a plugin does for
    // a new interface) is followed within a second, through the kernel's notification.
    let (moved, peer) = (&results[1], &results[2]);
    let moved_addr = moved["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .to_string();
    let moved_if = moved["interfaces"][0]["name"].as_str().unwrap();
    let new_mac = "02:00:5e:00:53:99";
    containers[1]
        .ip(&["link", "set", "eth0", "address", new_mac])
        .unwrap();
    // A new address flushes the container's neighbours, its gateway's permanent entry with
    // them: made again as the wiring makes it.
    let host_mac = moved["interfaces"][0]["mac"].as_str().unwrap();
    containers[1]
        .ip(&[
            "neigh",
            "replace",
            "169.254.1.1",
            "lladdr",
            host_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .unwrap();
    bed.hosts[0]
        .ns
        .ip(&[
            "neigh",
            "replace",
            &moved_addr,
            "lladdr",
            new_mac,
            "dev",
            moved_if,
            "nud",
            "permanent",
        ])
        .unwrap();
    let changed = Instant::now();
    let prefix = format!("{moved_addr}/32");
    assert!(
        routes_become(host, Duration::from_secs(1), |table| table
            .iter()
            .any(|r| r["prefix"] == prefix.as_str() && r["dst_mac"] == new_mac)),
        "the route to {moved_addr} did not take its new MAC within a second"
    );
    eprintln!(
        "new MAC of {moved_addr} in the route after {:?}",
        changed.elapsed()
    );
    let peer_addr: Ipv4Addr = peer["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32")
        .parse()
        .unwrap();
    let before = tc_forwarded(host);
    assert!(
        ping_once(&containers[1], peer_addr, 2),
        "the moved workload answers"
    );
    assert_eq!(
        tc_forwarded(host) - before,
        2,
        "echo and reply forwarded by the programs"
    );

    // DEL, DEL again, DEL of a container never added: all succeed; the first releases
    // everything.
    for container in ["direct0", "direct0", "never-added"] {
        let out = plugin_run(host, "DEL", container, Some(containers[0].name()), &conf);
        assert!(
            out.status.success(),
            "DEL {container}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.stdout.is_empty(), "DEL prints nothing on success");
    }
    assert!(!plugin_veths(host).contains(&host_if));
    assert!(!workload_routes(host).contains(&format!("{addr}/32")));
    assert!(
        !bed.dir.join("ipam/dpnet").join(addr.to_string()).exists(),
        "address released"
    );
    assert_eq!(records(host), 19);
    // A malformed configuration changes nothing and says what is wrong.
    let bad = plugin_run(
        host,
        "ADD",
        "direct-bad",
        Some(containers[0].name()),
        &serde_json::json!({"cniVersion": "1.0.0", "type": "ebpf-dataplane"}),
    );
    assert!(!bad.status.success());
    assert_eq!(json_of(&bad)["code"], 7);
    assert_eq!(records(host), 19);
}
