//! Services end to end, as root, in namespaces the test makes: two hosts, two workloads each;
//! host 0's first workload is the client, the other three serve. The same services are
//! enforced by the eBPF dataplane, by kube-proxy's iptables rules and by its nftables rules,
//! and every client connection must reach a backend of the service it asked for, with the
//! replies coming from the service's address (the client's sockets are connected to it, so
//! an untranslated reply is never read), spread over the backends. Then the services outlive
//! a SIGKILLed loader with a connection open, and follow their file live.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::*;
use dataplane::model::{
    route_table::Attach,
    services::{self, Services, Transport},
};
use netlab::{
    kube_proxy,
    netns::in_netns,
    topology::{Topology, Workload},
};

const WAIT: Duration = Duration::from_secs(2);
const WEB: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80);
const DNS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 11), 53);
const ONE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 12), 80);
const LATE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 13), 80);

/// The services over the topology's serving workloads: a TCP service on all three, a UDP
/// service on the two of host 1, a TCP service on one (a different port: a connection to one
/// service never lands on another's backend).
fn services_text(topo: &Topology) -> String {
    let (local, r0, r1) = serving(topo);
    format!(
        "service web {WEB} tcp {local}:8080 {r0}:8080 {r1}:8080\n\
         service dns {DNS} udp {r0}:5353 {r1}:5353\n\
         service one {ONE} tcp {r1}:9090\n"
    )
}

/// The serving workloads: host 0's second, host 1's two.
fn serving(topo: &Topology) -> (Ipv4Addr, Ipv4Addr, Ipv4Addr) {
    (
        topo.hosts[0].workloads[1].addr,
        topo.hosts[1].workloads[0].addr,
        topo.hosts[1].workloads[1].addr,
    )
}

/// Servers that answer every connection or datagram with their own address and port, and
/// then echo (TCP), until dropped.
struct IdentityServers {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl IdentityServers {
    fn start(workloads: &[&Workload]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in workloads {
            for port in [8080, 9090] {
                let me = SocketAddrV4::new(w.addr, port);
                let listener = in_netns(w.ns.name(), || Ok(TcpListener::bind(me)?)).unwrap();
                let stop = stop.clone();
                threads.push(thread::spawn(move || serve_tcp(listener, me, &stop)));
            }
            let me = SocketAddrV4::new(w.addr, 5353);
            let socket = in_netns(w.ns.name(), || Ok(UdpSocket::bind(me)?)).unwrap();
            let stop = stop.clone();
            threads.push(thread::spawn(move || serve_udp(socket, me, &stop)));
        }
        Self { stop, threads }
    }
}

impl Drop for IdentityServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(listener: TcpListener, me: SocketAddrV4, stop: &AtomicBool) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                thread::spawn(move || {
                    conn.set_nonblocking(false)?;
                    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
                    writeln!(conn, "{me}")?;
                    let mut lines = BufReader::new(conn.try_clone()?);
                    let mut line = String::new();
                    while lines.read_line(&mut line)? > 0 {
                        conn.write_all(line.as_bytes())?;
                        line.clear();
                    }
                    Ok::<_, std::io::Error>(())
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn serve_udp(socket: UdpSocket, me: SocketAddrV4, stop: &AtomicBool) {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(me.to_string().as_bytes(), from);
        }
    }
}

/// Opens a connection from `client` to `front`: the stream, and the backend that answered.
fn connect(client: &Workload, front: SocketAddrV4) -> std::io::Result<(TcpStream, String)> {
    in_netns(client.ns.name(), || {
        let conn = TcpStream::connect_timeout(&SocketAddr::V4(front), WAIT)?;
        conn.set_read_timeout(Some(WAIT))?;
        Ok(conn)
    })
    .map_err(std::io::Error::other)
    .and_then(|conn| {
        let mut line = String::new();
        BufReader::new(conn.try_clone()?).read_line(&mut line)?;
        Ok((conn, line.trim().to_string()))
    })
}

/// Which backend answers one datagram from `client` to `front` (a new source port each time).
fn ask_udp(client: &Workload, front: SocketAddrV4) -> std::io::Result<String> {
    in_netns(client.ns.name(), || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        // Connected: a reply from anywhere but the service's address is not read.
        socket.connect(front)?;
        socket.set_read_timeout(Some(WAIT))?;
        socket.send(b"who")?;
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).to_string())
    })
    .map_err(std::io::Error::other)
}

/// The backends each connection reached, by service, over `rounds` connections per service
/// (fewer to `ONE`); an error names what failed.
fn reach(client: &Workload, rounds: usize) -> Vec<(SocketAddrV4, Transport, String)> {
    let mut reached = Vec::new();
    for _ in 0..rounds {
        let web = connect(client, WEB).map(|(_, who)| who);
        reached.push((
            WEB,
            Transport::Tcp,
            web.unwrap_or_else(|e| format!("failed: {e}")),
        ));
        let dns = ask_udp(client, DNS);
        reached.push((
            DNS,
            Transport::Udp,
            dns.unwrap_or_else(|e| format!("failed: {e}")),
        ));
    }
    for _ in 0..rounds / 6 {
        let one = connect(client, ONE).map(|(_, who)| who);
        reached.push((
            ONE,
            Transport::Tcp,
            one.unwrap_or_else(|e| format!("failed: {e}")),
        ));
    }
    reached
}

/// Checks that every connection reached a backend of its service and that each service's
/// connections spread over all its backends.
fn assert_equivalent(
    engine: &str,
    services: &Services,
    reached: &[(SocketAddrV4, Transport, String)],
) {
    for (front, transport, who) in reached {
        let backends: Vec<String> = services
            .backends_of(*front, *transport)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            backends.contains(who),
            "{engine}: a connection to {front} {transport:?} reached `{who}`, not one of {backends:?}"
        );
    }
    for service in services.services.values() {
        let got: std::collections::BTreeSet<&String> = reached
            .iter()
            .filter(|(f, t, _)| (*f, *t) == service.key())
            .map(|(_, _, who)| who)
            .collect();
        assert_eq!(
            got.len(),
            service.backends.len(),
            "{engine}: {} reached only {got:?}",
            service.name
        );
    }
}

fn routed_bed() -> Option<TestBed> {
    TestBed::routed(2, Attach::Tc)
}

#[test]
fn ebpf_iptables_and_nftables_send_every_connection_to_a_backend_of_its_service() {
    let Some(topo) = routed_bed() else {
        return;
    };
    let text = services_text(&topo);
    let services = services::parse(&text).unwrap();
    let client = &topo.hosts[0].workloads[0];
    let _servers = IdentityServers::start(&[
        &topo.hosts[0].workloads[1],
        &topo.hosts[1].workloads[0],
        &topo.hosts[1].workloads[1],
    ]);
    let host0 = &topo.hosts[0].ns;
    // 30 connections to each of the two spread services: one backend of three never reached
    // has odds of 3 * (2/3)^30, about 1e-5; of two, 2 * (1/2)^30.
    const ROUNDS: usize = 30;

    // eBPF: only the programs forward (FORWARD DROP), host 0 holds the services.
    topo.set_kernel_forward_policy("DROP").unwrap();
    let services_path = topo.dir.join("host0.services");
    std::fs::write(&services_path, &text).unwrap();
    let loaders = [
        topo.start_loader_with(
            0,
            Attach::Tc,
            &["--services", services_path.to_str().unwrap()],
        ),
        topo.start_loader(1, Attach::Tc),
    ];
    let ebpf = reach(client, ROUNDS);
    let counted = stats(host0.name());
    detach(host0.name());
    detach(topo.host(1));
    drop(loaders);
    assert_equivalent("eBPF", &services, &ebpf);
    let new_flows = counter(&counted, "tc", "service_new_flow");
    assert!(
        new_flows as usize >= ebpf.len(),
        "eBPF counted {new_flows} new service connections for {}",
        ebpf.len()
    );

    // kube-proxy's iptables mode on host 0; the kernel forwards and conntrack translates back.
    topo.set_kernel_forward_policy("ACCEPT").unwrap();
    let iptables = with_iptables(host0, &kube_proxy::iptables(&services), "nat", || {
        reach(client, ROUNDS)
    });
    assert_equivalent("iptables", &services, &iptables);

    // kube-proxy's nftables mode.
    host0
        .feed("nft", &["-f", "-"], &kube_proxy::nftables(&services))
        .unwrap();
    let nftables = reach(client, ROUNDS);
    host0
        .exec("nft", &["delete", "table", "ip", "kube-proxy"])
        .unwrap();
    assert_equivalent("nftables", &services, &nftables);
}

#[test]
fn open_connections_survive_a_killed_loader_and_the_file_is_followed_live() {
    let Some(topo) = routed_bed() else {
        return;
    };
    let client = &topo.hosts[0].workloads[0];
    let _servers = IdentityServers::start(&[
        &topo.hosts[0].workloads[1],
        &topo.hosts[1].workloads[0],
        &topo.hosts[1].workloads[1],
    ]);
    let (h0, h1) = (topo.host(0), topo.host(1));
    topo.set_kernel_forward_policy("DROP").unwrap();
    let path = topo.dir.join("host0.services");
    let text = services_text(&topo);
    std::fs::write(&path, &text).unwrap();
    let args = ["--services", path.to_str().unwrap()];
    let loader0 = topo.start_loader_with(0, Attach::Tc, &args);
    let _loader1 = topo.start_loader(1, Attach::Tc);

    // Open connections, one per round, each to whichever backend it drew.
    let mut open: Vec<(TcpStream, String)> =
        (0..6).map(|_| connect(client, WEB).unwrap()).collect();
    let echo = |conn: &mut TcpStream, word: &str| -> std::io::Result<String> {
        writeln!(conn, "{word}")?;
        let mut line = String::new();
        BufReader::new(conn.try_clone()?).read_line(&mut line)?;
        Ok(line.trim().to_string())
    };
    for (conn, _) in &mut open {
        assert_eq!(echo(conn, "before").unwrap(), "before");
    }

    // The loader is killed outright; its dataplane, flows included, stays pinned. A new
    // loader adopts it.
    signal(loader0.pid(), libc::SIGKILL);
    drop(loader0);
    for (conn, who) in &mut open {
        assert_eq!(echo(conn, "unattended").unwrap(), "unattended", "to {who}");
    }
    let _loader0 = topo.start_loader_with(0, Attach::Tc, &args);
    for (conn, who) in &mut open {
        assert_eq!(
            echo(conn, "after").unwrap(),
            "after",
            "the connection to {who} across the restart"
        );
    }
    let established = counter(&stats(h0), "tc", "service_established");
    assert!(established > 0, "later packets went by the recorded flows");

    // A bad edit is refused whole: the running services stay.
    std::fs::write(&path, format!("{text}service broken 10.96.0.99 tcp\n")).unwrap();
    thread::sleep(Duration::from_millis(2500));
    assert!(
        connect(client, WEB).is_ok(),
        "services kept after a bad edit"
    );
    assert!(
        connect(client, LATE).is_err(),
        "nothing of the bad file applied"
    );

    // A good edit is applied within seconds: a new service, and `one` gone.
    let (local, _, _) = serving(&topo);
    let edited = text.replace(&format!("service one {ONE} tcp"), "# one removed,")
        + &format!("service late {LATE} tcp {local}:9090\n");
    services::parse(&edited).expect("the edit parses");
    std::fs::write(&path, &edited).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let late = loop {
        if let Ok((_, who)) = connect(client, LATE) {
            break who;
        }
        assert!(Instant::now() < deadline, "the new service never answered");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(late, format!("{local}:9090"));
    assert!(connect(client, ONE).is_err(), "the removed service is gone");
    // `loader services` shows what the maps hold: the edited file, backends in file order.
    let listed: Vec<serde_json::Value> = loader_json("services", h0);
    let fronts = field_pairs(&listed, "front", "protocol");
    assert_eq!(
        fronts,
        [(WEB, "tcp"), (DNS, "udp"), (LATE, "tcp")]
            .map(|(f, p)| (f.to_string(), p.to_string()))
            .to_vec()
    );
    assert_eq!(
        listed[2]["backends"],
        serde_json::json!([format!("{local}:9090")])
    );
    // The connections opened before every change are still served.
    for (conn, who) in &mut open {
        assert_eq!(echo(conn, "still").unwrap(), "still", "to {who}");
    }
    detach(h0);
    detach(h1);
}
