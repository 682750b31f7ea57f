//! Network policy end to end, as root, in namespaces the test makes: one policy enforced by
//! the eBPF dataplane, by Calico-style iptables chains and by nftables sets, and a matrix of
//! flows (allowed and denied, TCP, UDP, ICMP, ports at range edges, both directions) that
//! must get the same verdict from all three, the one the policy's reference semantics give.
mod common;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use common::*;
use dataplane::model::{
    policy::{self, Policy},
    route_table::Attach,
};
use netlab::netfilter as render;
use netlab::{netns::in_netns, topology::Workload, traffic::ping};

const POLICY: &str = "\
workload 198.18.1.2 ingress deny egress allow
allow ingress 198.18.1.2 peer 198.18.2.0/24 proto tcp port 8000-8009
deny ingress 198.18.1.2 peer 198.18.2.2/32 proto tcp port 8005
allow ingress 198.18.1.2 peer 198.18.2.0/24 proto udp port 9000
allow ingress 198.18.1.2 proto icmp
deny egress 198.18.1.2 peer 198.18.2.0/24 proto tcp port 7000-7001
deny egress 198.18.1.2 proto udp port 9100
";

#[derive(Clone, Copy, Debug)]
enum Probe {
    Tcp(u16),
    Udp(u16),
    Ping,
}

impl Probe {
    fn proto_port(self) -> (u8, u16) {
        match self {
            Probe::Tcp(p) => (6, p),
            Probe::Udp(p) => (17, p),
            Probe::Ping => (1, 0),
        }
    }
}

/// The flows: (into the workload under policy?, probe).
fn matrix() -> Vec<(bool, Probe)> {
    let mut flows = Vec::new();
    for port in [7999, 8000, 8004, 8005, 8006, 8009, 8010] {
        flows.push((true, Probe::Tcp(port)));
    }
    flows.extend([
        (true, Probe::Udp(9000)),
        (true, Probe::Udp(9001)),
        (true, Probe::Ping),
    ]);
    for port in [6999, 7000, 7001, 7002] {
        flows.push((false, Probe::Tcp(port)));
    }
    flows.extend([
        (false, Probe::Udp(9100)),
        (false, Probe::Udp(9101)),
        (false, Probe::Ping),
    ]);
    flows
}

const WAIT: Duration = Duration::from_millis(600);

/// Whether a request and its answer get through from `client` to `server`.
fn works(client: &Workload, server: &Workload, probe: Probe) -> bool {
    let (server_ns, client_ns, addr) = (server.ns.name(), client.ns.name(), server.addr);
    match probe {
        Probe::Ping => ping(&client.ns, addr, 1).unwrap(),
        Probe::Tcp(port) => thread::scope(|s| {
            let listener = in_netns(server_ns, || Ok(TcpListener::bind((addr, port))?)).unwrap();
            listener.set_nonblocking(true).unwrap();
            s.spawn(move || {
                let deadline = Instant::now() + WAIT;
                while Instant::now() < deadline {
                    if let Ok((mut conn, _)) = listener.accept() {
                        let _ = conn.write_all(b"k");
                        return;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            });
            in_netns(client_ns, || {
                let mut conn = TcpStream::connect_timeout(&SocketAddr::from((addr, port)), WAIT)?;
                conn.set_read_timeout(Some(WAIT))?;
                let mut answer = [0u8; 1];
                conn.read_exact(&mut answer)?;
                Ok(())
            })
            .is_ok()
        }),
        Probe::Udp(port) => thread::scope(|s| {
            let socket = in_netns(server_ns, || Ok(UdpSocket::bind((addr, port))?)).unwrap();
            socket.set_read_timeout(Some(WAIT)).unwrap();
            s.spawn(move || {
                let mut buf = [0u8; 16];
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            });
            in_netns(client_ns, || {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                socket.set_read_timeout(Some(WAIT))?;
                socket.send_to(b"q", (addr, port))?;
                let mut buf = [0u8; 16];
                socket.recv_from(&mut buf)?;
                Ok(())
            })
            .is_ok()
        }),
    }
}

/// Runs the matrix between the workload under policy (`a`) and its peer (`b`).
fn run_matrix(a: &Workload, b: &Workload) -> Vec<bool> {
    matrix()
        .into_iter()
        .map(|(into_a, probe)| {
            if into_a {
                works(b, a, probe)
            } else {
                works(a, b, probe)
            }
        })
        .collect()
}

fn expected(policy: &Policy, a: &Workload, b: &Workload) -> Vec<bool> {
    matrix()
        .into_iter()
        .map(|(into_a, probe)| {
            let (proto, port) = probe.proto_port();
            let (src, dst) = if into_a {
                (b.addr, a.addr)
            } else {
                (a.addr, b.addr)
            };
            policy.admits(src, dst, proto, port)
        })
        .collect()
}

#[test]
fn ebpf_and_every_netfilter_rendering_give_every_flow_the_same_verdict() {
    let Some(topo) = TestBed::routed(1, Attach::Tc) else {
        return;
    };
    let policy = policy::parse(POLICY).unwrap();
    let (a, b) = (&topo.hosts[0].workloads[0], &topo.hosts[1].workloads[0]);
    let host0 = &topo.hosts[0].ns;
    let want = expected(&policy, a, b);
    assert!(want.iter().any(|w| *w) && want.iter().any(|w| !*w));

    // eBPF: the loaders forward (FORWARD DROP: nothing else does), host 0 enforces the policy.
    topo.set_kernel_forward_policy("DROP").unwrap();
    let loader0 = topo.start_loader_with_policy(0, Attach::Tc, POLICY);
    let loader1 = topo.start_loader(1, Attach::Tc);
    wait_for_routes(host0.name(), 2);
    let ebpf = run_matrix(a, b);
    let stats = stats(host0.name());
    detach(host0.name());
    detach(topo.host(1));
    drop((loader0, loader1));
    let denied_flows = want.iter().filter(|w| !**w).count() as u64;
    let denied: u64 = stats.policy_denied.iter().map(|d| d.packets).sum();
    assert!(
        denied >= denied_flows,
        "eBPF counted {denied} denied packets for {denied_flows} denied flows: {:?}",
        stats.policy_denied
    );

    // iptables, Calico's shape, on host 0; the kernel forwards.
    topo.set_kernel_forward_policy("ACCEPT").unwrap();
    let iptables = with_iptables(host0, &render::iptables(&policy), "filter", || {
        run_matrix(a, b)
    });

    // iptables with the rules in ipsets (the bench's iptables-ipset engine).
    let (sets, rules) = render::iptables_ipset(&policy);
    host0.feed("ipset", &["restore"], &sets).unwrap();
    let ipset = with_iptables(host0, &rules, "filter", || run_matrix(a, b));

    // nftables with sets.
    host0
        .feed("nft", &["-f", "-"], &render::nftables(&policy))
        .unwrap();
    let nftables = run_matrix(a, b);
    host0.exec("nft", &["flush", "ruleset"]).unwrap();

    // nftables as a linear rule list (the bench's nftables-linear engine).
    host0
        .feed("nft", &["-f", "-"], &render::nftables_linear(&policy))
        .unwrap();
    let linear = run_matrix(a, b);

    let table: Vec<String> = matrix()
        .iter()
        .zip(&want)
        .enumerate()
        .map(|(k, ((into_a, probe), w))| {
            format!(
                "{} {probe:?}: want {w} ebpf {} iptables {} ipset {} nft {} nft-linear {}",
                if *into_a { "in " } else { "out" },
                ebpf[k],
                iptables[k],
                ipset[k],
                nftables[k],
                linear[k]
            )
        })
        .collect();
    eprintln!("{}", table.join("\n"));
    for (name, got) in [
        ("eBPF", &ebpf),
        ("iptables", &iptables),
        ("iptables + ipset", &ipset),
        ("nftables", &nftables),
        ("nftables linear", &linear),
    ] {
        assert_eq!(got, &want, "{name} verdicts:\n{}", table.join("\n"));
    }
}
