//! Isolation end to end, as root, attacked the way a hostile workload (root in its namespace:
//! raw sockets, crafted frames) and a foreign host on the underlay would: every attack fails
//! and moves its own counter, and in the same run the legitimate traffic next to it flows, so
//! that no check here can pass because nothing flows at all.
//!
//! One bed per attach kind, shared by every attack: two hosts over VXLAN (port 4789), two
//! workloads on each at the default MTU of 1500 (not the tunnel's 1450), `FORWARD DROP` on both
//! hosts, host 0 under policy: `a1` ingress deny (the victim), `a2` allow both ways (the
//! attacker, under policy so that its flows are recorded).
mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    thread,
    time::Duration,
};

use common::*;
use dataplane::{
    kernel::{inspect::Stats, synthetic::arp_request},
    model::route_table::Attach,
};
use netlab::{
    craft::{UdpSink, Wire, at, send_raw, send_udp, udp_frame, vxlan_payload},
    netns::Netns,
    topology::{Host, VXLAN_VNI, Workload},
    traffic::{Proto, iperf3, ping},
};

const VXLAN_PORT: u16 = 4789;
/// Host 0's loader's metrics, in its namespace.
const METRICS: &str = "127.0.0.1:9467";
/// How long a sink waits for what an attack might have let through.
const SETTLE: Duration = Duration::from_millis(700);

/// Counters of host 0 at one hook, before and after an attack.
struct Counters<'a> {
    host: &'a str,
    hook: &'static str,
    before: Stats,
}

impl<'a> Counters<'a> {
    fn start(host: &'a str, hook: &'static str) -> Self {
        Self {
            host,
            hook,
            before: stats(host),
        }
    }

    /// How much `name` moved since `start`.
    fn moved(&self, name: &str) -> u64 {
        counter(&stats(self.host), self.hook, name) - counter(&self.before, self.hook, name)
    }
}

/// What a sink got, as text.
fn payloads(got: &[(SocketAddrV4, Vec<u8>)]) -> Vec<String> {
    got.iter()
        .map(|(_, p)| String::from_utf8_lossy(p).into_owned())
        .collect()
}

fn isolation(attach: Attach) {
    let hook = hook_of(attach);
    let Some(bed) = TestBed::vxlan(2, attach, VXLAN_PORT).map(TestBed::forward_drop) else {
        return;
    };
    let (host0, host1) = (&bed.hosts[0], &bed.hosts[1]);
    let (a1, a2) = (&host0.workloads[0], &host0.workloads[1]);
    let (b1, b2) = (&host1.workloads[0], &host1.workloads[1]);
    for host in [host0, host1] {
        for w in &host.workloads {
            full_mtu(host, w);
        }
    }
    let policy = format!(
        "workload {} ingress deny egress allow\nworkload {} ingress allow egress allow\n",
        a1.addr, a2.addr
    );
    let policy_path = bed.dir.join("host0.policy");
    std::fs::write(&policy_path, &policy).unwrap();
    let loader0 = bed.start_loader_with(
        0,
        attach,
        &[
            "--policy",
            policy_path.to_str().unwrap(),
            "--metrics",
            METRICS,
        ],
    );
    let _loader1 = bed.start_loader(1, attach);
    let h0 = bed.host(0);
    // Warm-up and control: the victim reaches out, and its replies come back.
    assert!(ping(&a1.ns, b1.addr, 1).unwrap(), "a1 -> b1 ping");

    spoofed_sources_are_dropped(h0, hook, host0, a1, a2, b1);
    group_frames_from_a_workload_are_dropped(h0, hook, host0, a2);
    the_two_way_flow_trick_fails(h0, hook, host0, a1, a2);
    vxlan_from_a_workload_is_not_decapsulated(h0, hook, host0, a2);
    vxlan_from_an_unknown_underlay_host_is_dropped(h0, hook, host0, host1, a2);
    vlan_tagged_frames_are_not_forwarded(h0, hook, host0, a2, b1);
    path_mtu_discovery_works_through_the_tunnel(h0, hook, a1, b1);
    a_flood_of_new_flows_does_not_cut_a_connection(h0, hook, a1, a2, b1, b2);
    forged_arp_from_a_workload_is_dropped(h0, hook, host0, a2);
    if attach == Attach::Tc {
        // The loader's side, the same whatever the attach kind: once is enough.
        an_arp_storm_costs_the_loader_nothing(h0, host0, host1, loader0.pid());
    }
}

#[test]
fn a_hostile_workload_and_underlay_host_are_refused_at_tc() {
    isolation(Attach::Tc);
}

#[test]
fn a_hostile_workload_and_underlay_host_are_refused_at_xdp() {
    isolation(Attach::Xdp);
}

/// Gives workload `w` (and its host-side veth) the default MTU of 1500, as a runtime that
/// knows nothing of the tunnel would. Its IPv6 goes off too: a workload's own router
/// solicitations would be refused (IPv4 and ARP only) and blur the exact counts here.
fn full_mtu(host: &Host, w: &Workload) {
    w.ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    w.ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        .unwrap();
    w.ns.ip(&["link", "set", "eth0", "mtu", "1500"]).unwrap();
    host.ns
        .ip(&["link", "set", &w.host_if, "mtu", "1500"])
        .unwrap();
}

/// UDP to a listener on the host's own address, from `a2` in a broadcast frame (in its own
/// name and another's) and in a multicast frame: the kernel would take each for its own
/// address, past the source check and policy; the programs drop and count them. The same
/// datagram sent the ordinary way (unicast, a2's egress allows it: the control) arrives.
fn group_frames_from_a_workload_are_dropped(
    h0: &str,
    hook: &'static str,
    host0: &Host,
    a2: &Workload,
) {
    let wire = Wire::of(host0, a2).unwrap();
    let to = at(host0.underlay_addr, 9001);
    let sink = UdpSink::start(&host0.ns, to).unwrap();
    let counters = Counters::start(h0, hook);
    let group = |dst_mac: [u8; 6], from: Ipv4Addr, payload: &[u8]| {
        let mut frame = wire.udp(at(from, 1234), to, payload);
        frame[..6].copy_from_slice(&dst_mac);
        frame
    };
    send_raw(
        &a2.ns,
        "eth0",
        &[
            group([0xff; 6], a2.addr, b"broadcast"),
            group(
                [0xff; 6],
                Ipv4Addr::new(198, 18, 9, 9),
                b"broadcast, forged",
            ),
            group([0x01, 0x00, 0x5e, 0, 0, 1], a2.addr, b"multicast"),
        ],
    )
    .unwrap();
    send_udp(&a2.ns, at(a2.addr, 0), to, b"control").unwrap();
    let got = payloads(&sink.finish(SETTLE));
    assert_eq!(
        got,
        ["control"],
        "{hook}: only the unicast datagram arrives"
    );
    assert_eq!(counters.moved("drop_not_unicast_from_workload"), 3);
}

/// ARP requests from `a2` in other addresses' names (another workload's, the host's peer's):
/// dropped and counted, no neighbour planted on the host; its own (the control) answered.
fn forged_arp_from_a_workload_is_dropped(
    h0: &str,
    hook: &'static str,
    host0: &Host,
    a2: &Workload,
) {
    let mac = [0x02, 0xa4, 0, 0, 0, 0x77];
    let counters = Counters::start(h0, hook);
    let forged = [Ipv4Addr::new(198, 18, 2, 9), Ipv4Addr::new(198, 19, 0, 77)];
    let frames: Vec<Vec<u8>> = forged
        .iter()
        .chain([&a2.addr])
        .map(|sender| arp_request(mac, *sender, host0.underlay_addr))
        .collect();
    send_raw(&a2.ns, "eth0", &frames).unwrap();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(counters.moved("drop_arp_from_workload"), 2);
    assert_eq!(
        counters.moved("pass_arp"),
        1,
        "{hook}: its own ARP is the kernel's"
    );
    let neighbours = host0
        .ns
        .ip(&["-4", "neigh", "show", "dev", &a2.host_if])
        .unwrap();
    let neighbours = String::from_utf8_lossy(&neighbours.stdout);
    for sender in forged {
        assert!(
            !neighbours.contains(&format!("{sender} ")),
            "{hook}: a forged sender became a neighbour: {neighbours}"
        );
    }
}

/// Raw frames from `a2` claiming the victim's and an outside address: dropped and counted;
/// its frame with its own address (the control) arrives.
fn spoofed_sources_are_dropped(
    h0: &str,
    hook: &'static str,
    host0: &Host,
    a1: &Workload,
    a2: &Workload,
    b1: &Workload,
) {
    let wire = Wire::of(host0, a2).unwrap();
    let sink = UdpSink::start(&b1.ns, at(b1.addr, 9000)).unwrap();
    let counters = Counters::start(h0, hook);
    let to = at(b1.addr, 9000);
    send_raw(
        &a2.ns,
        "eth0",
        &[
            wire.udp(at(a1.addr, 1234), to, b"as the victim"),
            wire.udp(at(Ipv4Addr::new(198, 18, 9, 99), 1234), to, b"as nobody"),
            wire.udp(at(a2.addr, 1234), to, b"control"),
        ],
    )
    .unwrap();
    let got = payloads(&sink.finish(SETTLE));
    assert_eq!(
        got,
        ["control"],
        "{hook}: only a2's own source gets through"
    );
    assert_eq!(counters.moved("drop_spoofed_source"), 2, "{hook}");
}

/// The trick: one packet "from" the victim to the attacker records a flow whose reverse the
/// attacker then uses to connect into the victim past its ingress deny. The forged packet is
/// dropped, and the connection back is denied; the same exchange started by the victim itself
/// (the control) works both ways.
fn the_two_way_flow_trick_fails(
    h0: &str,
    hook: &'static str,
    host0: &Host,
    a1: &Workload,
    a2: &Workload,
) {
    let wire = Wire::of(host0, a2).unwrap();
    let (victim, attacker) = (at(a1.addr, 7777), at(a2.addr, 8888));
    let at_victim = UdpSink::start(&a1.ns, victim).unwrap();
    let counters = Counters::start(h0, hook);
    send_raw(&a2.ns, "eth0", &[wire.udp(victim, attacker, b"forged")]).unwrap();
    thread::sleep(Duration::from_millis(100));
    send_udp(&a2.ns, attacker, victim, b"connect back").unwrap();
    assert!(
        at_victim.finish(SETTLE).is_empty(),
        "{hook}: nothing reached the victim"
    );
    assert_eq!(
        counters.moved("drop_spoofed_source"),
        1,
        "{hook}: the forgery"
    );
    assert_eq!(
        counters.moved("drop_policy_ingress"),
        1,
        "{hook}: the connection back"
    );

    // Control: the victim starts the exchange; the attacker's answer is its reply.
    let at_attacker = UdpSink::start(&a2.ns, attacker).unwrap();
    send_udp(&a1.ns, victim, attacker, b"hello").unwrap();
    assert_eq!(payloads(&at_attacker.finish(SETTLE)), ["hello"], "{hook}");
    let at_victim = UdpSink::start(&a1.ns, victim).unwrap();
    send_udp(&a2.ns, attacker, victim, b"reply").unwrap();
    assert_eq!(payloads(&at_victim.finish(SETTLE)), ["reply"], "{hook}");
}

/// A VXLAN datagram with an inner packet for a local workload.
fn vxlan_to(w: &Workload, payload: &[u8]) -> Vec<u8> {
    let inner = udp_frame(
        [0x02, 0, 0, 0, 0, 1],
        [0x02, 0, 0, 0, 0, 2],
        at(Ipv4Addr::new(198, 18, 2, 2), 5555),
        at(w.addr, 7779),
        payload,
    );
    vxlan_payload(VXLAN_VNI, &inner)
}

/// An ordinary (unprivileged) UDP socket in `a2` sends VXLAN to the host's tunnel address:
/// never decapsulated, the kernel's (where nothing listens on the port).
fn vxlan_from_a_workload_is_not_decapsulated(
    h0: &str,
    hook: &'static str,
    host0: &Host,
    a2: &Workload,
) {
    let sink = UdpSink::start(&a2.ns, at(a2.addr, 7779)).unwrap();
    let counters = Counters::start(h0, hook);
    send_udp(
        &a2.ns,
        at(a2.addr, 0),
        at(host0.underlay_addr, VXLAN_PORT),
        &vxlan_to(a2, b"from a workload"),
    )
    .unwrap();
    assert!(sink.finish(SETTLE).is_empty(), "{hook}: nothing delivered");
    assert_eq!(counters.moved("vxlan_decap"), 0, "{hook}");
    assert_eq!(counters.moved("pass_host_addr"), 1, "{hook}");
}

/// VXLAN from an underlay address that is no known tunnel endpoint (a second address on host
/// 1's underlay interface stands for another machine on the segment): dropped and counted;
/// the same datagram from host 1's tunnel address (the control) is delivered.
fn vxlan_from_an_unknown_underlay_host_is_dropped(
    h0: &str,
    hook: &'static str,
    host0: &Host,
    host1: &Host,
    a2: &Workload,
) {
    let intruder = Ipv4Addr::new(198, 19, 0, 66);
    host1
        .ns
        .ip(&["addr", "add", &format!("{intruder}/24"), "dev", "eth0"])
        .unwrap();
    let vtep = at(host0.underlay_addr, VXLAN_PORT);
    let sink = UdpSink::start(&a2.ns, at(a2.addr, 7779)).unwrap();
    let counters = Counters::start(h0, hook);
    let underlay = &host1.ns;
    send_udp(underlay, at(intruder, 0), vtep, &vxlan_to(a2, b"intruder")).unwrap();
    send_udp(
        underlay,
        at(host1.underlay_addr, 0),
        vtep,
        &vxlan_to(a2, b"control"),
    )
    .unwrap();
    assert_eq!(
        payloads(&sink.finish(SETTLE)),
        ["control"],
        "{hook}: only the known VTEP's gets through"
    );
    assert_eq!(counters.moved("drop_vxlan_unknown_vtep"), 1, "{hook}");
}

/// A frame `a2` tags with a VLAN (the kernel takes the tag off before TC sees the frame, and
/// would put it back on the way out): refused; the same frame untagged (the control) arrives.
fn vlan_tagged_frames_are_not_forwarded(
    h0: &str,
    hook: &'static str,
    host0: &Host,
    a2: &Workload,
    b1: &Workload,
) {
    let wire = Wire::of(host0, a2).unwrap();
    let untagged = wire.udp(at(a2.addr, 1235), at(b1.addr, 9001), b"untagged");
    let mut tagged = wire.udp(at(a2.addr, 1235), at(b1.addr, 9001), b"tagged");
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    let sink = UdpSink::start(&b1.ns, at(b1.addr, 9001)).unwrap();
    let counters = Counters::start(h0, hook);
    send_raw(&a2.ns, "eth0", &[tagged, untagged]).unwrap();
    assert_eq!(payloads(&sink.finish(SETTLE)), ["untagged"], "{hook}");
    assert_eq!(counters.moved("drop_not_ip_from_workload"), 1, "{hook}");
}

/// A workload at MTU 1500 behind a tunnel of 1450: a full-size DF packet is answered with
/// "fragmentation needed" (mtu 1450), and TCP then runs at full speed.
fn path_mtu_discovery_works_through_the_tunnel(
    h0: &str,
    hook: &'static str,
    a1: &Workload,
    b1: &Workload,
) {
    let counters = Counters::start(h0, hook);
    let out = a1
        .ns
        .command("ping")
        .args(["-M", "do", "-s", "1472", "-c", "2", "-i", "0.2", "-W", "1"])
        .arg(b1.addr.to_string())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("1450"),
        "{hook}: ping heard of the tunnel's MTU:\n{said}"
    );
    assert!(counters.moved("reply_frag_needed") >= 1, "{hook}");
    let tcp = iperf3(&a1.ns, &b1.ns, b1.addr, Proto::Tcp, 2).expect("TCP through the tunnel");
    eprintln!(
        "{hook}: TCP at workload MTU 1500 through VXLAN: {:.2} Gbit/s",
        tcp.bits_per_second / 1e9
    );
    assert!(
        tcp.bits_per_second > 200e6,
        "{hook}: TCP at {:.1} Mbit/s",
        tcp.bits_per_second / 1e6
    );
}

/// While `a1` (ingress deny) holds a TCP connection to `b2`, whose returning packets pass only
/// as part of its recorded flow, `a2` floods more new flows than the flow table holds. The
/// connection keeps working: not one of its packets is denied.
fn a_flood_of_new_flows_does_not_cut_a_connection(
    h0: &str,
    hook: &'static str,
    a1: &Workload,
    a2: &Workload,
    b1: &Workload,
    b2: &Workload,
) {
    const FLOWS_PER_SOCKET: u16 = 65_000;
    const SOCKETS: u32 = 5;
    let counters = Counters::start(h0, hook);
    let (connection, flooded) = thread::scope(|s| {
        let connection = s.spawn(|| iperf3(&a1.ns, &b2.ns, b2.addr, Proto::Tcp, 6));
        thread::sleep(Duration::from_secs(1));
        let flooded = flood(&a2.ns, b1.addr, SOCKETS, FLOWS_PER_SOCKET);
        (connection.join().unwrap(), flooded)
    });
    let sent = flooded.expect("flooding");
    let connection = connection.expect("a1's connection through the flood");
    let new_flows = counters.moved("policy_new_flow");
    let denied = counters.moved("drop_policy_ingress");
    eprintln!(
        "{hook}: {sent} datagrams of new flows, {new_flows} new flows recorded; a1's connection: \
         {:.2} Gbit/s, {} bytes, {denied} packets denied",
        connection.bits_per_second / 1e9,
        connection.bytes
    );
    assert!(
        new_flows > dataplane::common::maps::MAX_POLICY_NEW_FLOWS as u64,
        "{hook}: the flood overran the new-flow table ({new_flows} recorded)"
    );
    assert_eq!(denied, 0, "{hook}: no packet of a1's connection was denied");
    assert!(
        connection.bytes > 10_000_000,
        "{hook}: the connection carried data"
    );
}

/// From `sockets` UDP sockets in `ns`, one datagram to each of `ports` ports of `to`: that
/// many new flows. Paced a little, so the flows are recorded rather than lost in a backlog.
fn flood(ns: &Netns, to: Ipv4Addr, sockets: u32, ports: u16) -> anyhow::Result<u64> {
    netlab::netns::in_netns(ns.name(), move || {
        let mut sent = 0;
        for _ in 0..sockets {
            let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            for port in 1..=ports {
                if socket.send_to(b"f", (to, port)).is_ok() {
                    sent += 1;
                }
                if port % 2000 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
        Ok(sent)
    })
}

/// What the loader spent over a window, and how long a plugin's sync took in it.
#[derive(Debug)]
struct LoaderLoad {
    /// Times the loader planned its routes afresh, besides the syncs asked.
    plans: u64,
    /// User and system CPU time, in clock ticks.
    cpu_ticks: u64,
    /// The median and the slowest of the syncs asked during the window.
    sync_p50: Duration,
    sync_max: Duration,
}

/// An ARP storm of forged senders from the underlay (each a new neighbour of the host, which
/// answers for its own address; from a workload the programs refuse them, see above) wakes
/// the loader for nothing: its CPU and the time a
/// plugin's sync takes stay what they were in a quiet window just before (the control,
/// measured the same way in the same run).
fn an_arp_storm_costs_the_loader_nothing(h0: &str, host0: &Host, host1: &Host, loader: u32) {
    let quiet = loader_load(h0, loader, || {});
    let neighbours_before = neighbour_count(&host0.ns);
    // Asking for the host's own address: the kernel answers, and learns each sender.
    let storm = loader_load(h0, loader, || arp_storm(&host1.ns, host0.underlay_addr));
    let made = neighbour_count(&host0.ns).saturating_sub(neighbours_before);
    eprintln!("ARP storm: {made} new neighbours on the host; quiet {quiet:?}, storm {storm:?}");
    assert!(
        made >= 200,
        "the storm made few neighbours ({made}): it did not run"
    );
    // The point: none of those neighbours is the plan's, so none wakes a planning pass (with
    // every neighbour waking one, this storm made 16).
    assert!(
        storm.plans <= quiet.plans + 2,
        "the storm's neighbours made the loader plan again: {storm:?} against {quiet:?}"
    );
    // 250 Hz ticks over 3 s: the quiet window's few ticks, plus noise.
    assert!(
        storm.cpu_ticks <= quiet.cpu_ticks + 25,
        "the storm cost the loader CPU: {storm:?} against {quiet:?}"
    );
    assert!(
        storm.sync_p50 <= quiet.sync_p50 * 3 + Duration::from_millis(20),
        "the storm slowed the plugin's syncs: {storm:?} against {quiet:?}"
    );
    assert!(
        storm.sync_max < Duration::from_secs(1),
        "a sync waited on the storm's neighbours: {storm:?}"
    );
}

/// Runs `during` while asking the loader for a sync every 100 ms (30 of them), and measures.
fn loader_load(h0: &str, loader: u32, during: impl FnOnce() + Send) -> LoaderLoad {
    let cpu_before = cpu_ticks(loader);
    let plans_before = plans(h0);
    let mut syncs = thread::scope(|s| {
        s.spawn(during);
        (0..30)
            .map(|_| {
                thread::sleep(Duration::from_millis(100));
                timed_sync(h0)
            })
            .collect::<Vec<Duration>>()
    });
    syncs.sort();
    LoaderLoad {
        plans: plans(h0) - plans_before - syncs.len() as u64,
        cpu_ticks: cpu_ticks(loader) - cpu_before,
        sync_p50: syncs[syncs.len() / 2],
        sync_max: syncs[syncs.len() - 1],
    }
}

/// `dataplane_route_plans_total` of host 0's loader.
fn plans(h0: &str) -> u64 {
    let metrics = scrape_metrics(h0, METRICS);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("dataplane_route_plans_total "))
        .expect("the plans counter")
        .parse()
        .unwrap()
}

/// User plus system time of process `pid`, in clock ticks (fields 14 and 15 of its stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// One sync request as the CNI plugin makes it, timed to its answer (which must be yes).
fn timed_sync(h0: &str) -> Duration {
    use std::io::{BufRead, BufReader, Write};
    netlab::netns::in_netns(h0, || {
        let host = dataplane::system::workloads::HostDir::current()?;
        let started = std::time::Instant::now();
        let mut stream = std::os::unix::net::UnixStream::connect(host.socket())?;
        stream.write_all(b"{\"op\":\"sync\"}\n")?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply)?;
        let took = started.elapsed();
        anyhow::ensure!(reply.contains("\"ok\":true"), "sync answered {reply}");
        Ok(took)
    })
    .expect("a plugin's sync")
}

/// How many neighbours `ns` knows.
fn neighbour_count(ns: &Netns) -> usize {
    let out = ns.ip(&["-4", "neigh", "show"]).unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// ARP requests out of `ns`'s `eth0` for `target`, from 240 sender addresses of the
/// underlay's network that no host has, each round with new MACs: 3,000 over 3 s.
fn arp_storm(ns: &Netns, target: Ipv4Addr) {
    for round in 0..30u32 {
        let frames: Vec<Vec<u8>> = (0..100u32)
            .map(|i| {
                let n = round * 100 + i;
                let mac = [0x02, 0xa4, 0, (n >> 16) as u8, (n >> 8) as u8, n as u8];
                let sender = Ipv4Addr::new(198, 19, 0, 10 + (n % 240) as u8);
                arp_request(mac, sender, target)
            })
            .collect();
        send_raw(ns, "eth0", &frames).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
}
