//! End to end, as root: two hosts and four workloads in network namespaces (Calico-style
//! wiring), `iptables -P FORWARD DROP` on both hosts, and the loader forwarding same-host and
//! cross-host traffic with XDP or TC attach. After `loader detach` the same traffic fails.
mod common;

use common::*;
use dataplane::model::route_table::Attach;
use netlab::traffic::ping;
use std::{thread, time::Duration};

fn routed_end_to_end(attach: Attach) {
    let hook = hook_of(attach);
    let Some(topo) = TestBed::routed(2, attach) else {
        return;
    };
    let (a1, a2) = (&topo.hosts[0].workloads[0], &topo.hosts[0].workloads[1]);
    let b1 = &topo.hosts[1].workloads[0];

    // The kernel path works, then is closed: from here only a bypass can carry traffic.
    assert!(
        ping(&a1.ns, b1.addr, 1).unwrap(),
        "kernel-routed ping should work before FORWARD DROP"
    );
    topo.set_kernel_forward_policy("DROP").unwrap();
    assert!(
        !ping(&a1.ns, b1.addr, 1).unwrap(),
        "FORWARD DROP should stop kernel forwarding"
    );

    let loader0 = topo.start_loader(0, attach);
    let loader1 = topo.start_loader(1, attach);
    let (h0, h1) = (topo.host(0), topo.host(1));
    let (workload_program, underlay_program) = if attach == Attach::Tc {
        ("tc_workload", "tc_underlay")
    } else {
        ("xdp_workload", "xdp_underlay")
    };
    let table = routes(h0);
    let kinds: Vec<(&str, &str)> = table
        .iter()
        .map(|r| (r["prefix"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("198.18.1.2/32", "local"),
            ("198.18.1.3/32", "local"),
            ("198.18.2.0/24", "remote")
        ]
    );
    let programs = [
        program_id(h0, workload_program),
        program_id(h0, underlay_program),
    ];
    assert_eq!(
        programs.map(links_of_program),
        [2, 1],
        "{workload_program} attached to cali1 and cali2, {underlay_program} to eth0"
    );

    // Counters account for the packets exactly: 5 echo requests and 5 replies cross each host.
    let (before, after) = counted_pings(
        a1,
        b1,
        (h0, h1),
        &format!("cross-host ping through the {hook} path"),
    );
    assert_eq!(
        forwarded(&after.0, hook) - forwarded(&before.0, hook),
        10,
        "host 0 forwarded"
    );
    assert_eq!(
        forwarded(&after.1, hook) - forwarded(&before.1, hook),
        10,
        "host 1 forwarded"
    );
    let egress_delta = |ifindex: &u32| {
        after
            .0
            .forwarded_by_egress
            .get(ifindex)
            .copied()
            .unwrap_or(0)
            - before
                .0
                .forwarded_by_egress
                .get(ifindex)
                .copied()
                .unwrap_or(0)
    };
    let deltas: Vec<u64> = after
        .0
        .forwarded_by_egress
        .keys()
        .map(egress_delta)
        .filter(|d| *d > 0)
        .collect();
    assert_eq!(
        deltas,
        vec![5, 5],
        "host 0: 5 out of the underlay, 5 out of the workload's veth"
    );

    let before = stats(h0);
    assert!(
        ping(&a1.ns, a2.addr, 5).unwrap(),
        "same-host ping through the {hook} path"
    );
    assert_eq!(
        forwarded(&stats(h0), hook) - forwarded(&before, hook),
        10,
        "same-host forwarded"
    );

    for (what, server) in [("same-host", a2), ("cross-host", b1)] {
        let before = stats(h0);
        let (_, udp) = traffic_works(&format!("{hook} {what}"), a1, server);
        let delta = forwarded(&stats(h0), hook) - forwarded(&before, hook);
        assert!(
            delta >= udp.packets - udp.lost_packets,
            "{what}: host 0 forwarded {delta} frames, fewer than the {} UDP datagrams delivered",
            udp.packets - udp.lost_packets
        );
    }

    // Detach: the loaders exit cleanly and the same traffic fails again.
    for netns in [h0, h1] {
        detach(netns);
    }
    for guard in [loader0, loader1] {
        let out = guard.wait().unwrap();
        assert!(out.status.success(), "loader exited with {}", out.status);
    }
    assert!(
        !loader(&["stats", "--netns", h0]).status.success(),
        "no live dataplane after detach"
    );
    assert_eq!(
        programs.map(links_of_program),
        [0, 0],
        "nothing attached after detach"
    );
    assert!(
        !ping(&a1.ns, b1.addr, 2).unwrap(),
        "cross-host traffic must fail after detach"
    );
    assert!(
        !ping(&a1.ns, a2.addr, 2).unwrap(),
        "same-host traffic must fail after detach"
    );
}

#[test]
fn routed_forwarding_with_xdp_attach() {
    routed_end_to_end(Attach::Xdp);
}

#[test]
fn routed_forwarding_with_tc_attach() {
    routed_end_to_end(Attach::Tc);
}

#[test]
fn a_route_table_that_does_not_parse_is_reported_by_line_and_attaches_nothing() {
    let Some(topo) = TestBed::routed(1, Attach::Tc) else {
        return;
    };
    let host = &topo.hosts[0];
    let links_before = links_of_our_programs();
    // The prefix on line 3 has host bits set.
    let path = topo.write_routes(
        0,
        "interface eth0\ninterface cali1\nroute 198.18.1.2/24 dev cali1\n",
    );
    let out = loader(&run_args(&path, host.ns.name(), &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "loader must refuse");
    assert!(
        stderr.contains(":3: 198.18.1.2/24 has host bits set"),
        "expected the line in:\n{stderr}"
    );
    assert_eq!(
        links_of_our_programs(),
        links_before,
        "the refused table attached something"
    );
    assert!(
        !loader(&["stats", "--netns", host.ns.name()])
            .status
            .success(),
        "no dataplane recorded"
    );
}

/// A table whose lines parse but cannot all be realised on the host (an interface that does
/// not exist, a next hop that does not answer ARP): the loader starts with the rest, says
/// which lines it left out and counts them, and takes a line once the host can realise it.
#[test]
fn lines_the_host_cannot_realise_are_left_out_counted_and_taken_once_they_can() {
    let Some(topo) = TestBed::routed(1, Attach::Tc).map(TestBed::forward_drop) else {
        return;
    };
    let (h0, h1) = (topo.host(0), topo.host(1));
    let path = topo.write_routes(
        0,
        "interface eth0\ninterface cali1\ninterface cali7\n\
         route 198.18.1.2/32 dev cali1\nroute 198.18.1.7/32 dev cali7\n\
         route 198.18.9.0/24 via 198.19.0.99 dev eth0\nroute 198.18.2.0/24 via 198.19.0.2 dev eth0\n",
    );
    let loader0 = spawn_loader(&run_args(&path, h0, &["--metrics", "127.0.0.1:9466"]));
    wait_until_up(h0);
    // The control: the lines the host can realise are routed, and carry traffic.
    let table = routes(h0);
    let prefixes: Vec<String> = prefixes_of(&table);
    assert_eq!(prefixes, ["198.18.1.2/32", "198.18.2.0/24"]);
    let (a, b) = (&topo.hosts[0].workloads[0], &topo.hosts[1].workloads[0]);
    let loader1 = topo.start_loader(1, Attach::Tc);
    assert!(
        ping(&a.ns, b.addr, 2).unwrap(),
        "the realised lines forward"
    );
    assert_metrics_have(
        &scrape_metrics(h0, "127.0.0.1:9466"),
        &["dataplane_route_table_lines_unresolved 3"],
    );
    // 198.19.0.99 starts answering ARP (an address of host 1's): its line is taken on a
    // retry, without any change to the table.
    host1_answers(&topo, h1);
    wait_for_table(h0, "the once-dead next hop's route", |t| {
        has_route(t, "198.18.9.0/24")
    });
    assert_metrics_have(
        &scrape_metrics(h0, "127.0.0.1:9466"),
        &["dataplane_route_table_lines_unresolved 2"],
    );
    drop(loader1);
    signal(loader0.pid(), libc::SIGTERM);
    let log = log_of(loader0);
    for line in [
        "route table line 3: interface `cali7` does not exist",
        "route table line 5: its interface `cali7` is left out",
        "route table line 6: no MAC address for 198.19.0.99 on `eth0`",
    ] {
        assert!(log.contains(line), "the log names {line:?}:\n{log}");
    }
}

/// Gives host 1 the underlay address 198.19.0.99 too.
fn host1_answers(topo: &TestBed, h1: &str) {
    let out = topo.hosts[1]
        .ns
        .ip(&["addr", "add", "198.19.0.99/24", "dev", "eth0"])
        .unwrap();
    assert!(out.status.success(), "ip addr add in {h1}");
}

#[test]
fn the_loader_follows_its_route_table_and_keeps_the_last_good_one() {
    let Some(topo) = TestBed::routed(2, Attach::Tc).map(TestBed::forward_drop) else {
        return;
    };
    let host = &topo.hosts[0];
    let (a1, a2) = (&host.workloads[0], &host.workloads[1]);
    let h0 = host.ns.name();
    let full = topo.route_table(0, Attach::Tc);
    // Start without the route to the second workload: same-host traffic has no path.
    let without: String = full
        .lines()
        .filter(|l| !l.contains("198.18.1.3/32"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = topo.write_routes(0, &without);
    let guard = spawn_loader(&run_args(&path, h0, &["--metrics", "127.0.0.1:9464"]));
    wait_for_table(h0, "held 198.18.1.2/32", |t| has_route(t, "198.18.1.2/32"));
    assert!(
        !ping(&a1.ns, a2.addr, 1).unwrap(),
        "no route to 198.18.1.3 yet"
    );

    // Add the route: applied within a second, and traffic flows.
    std::fs::write(&path, &full).unwrap();
    assert_route_within_a_second(h0, "198.18.1.3/32", true);
    assert!(
        ping(&a1.ns, a2.addr, 3).unwrap(),
        "same-host traffic after the live update"
    );

    // A broken edit: reported, and the running table stays exactly as it was.
    let before = routes(h0);
    std::fs::write(&path, format!("{full}route 198.18.1.99/24 dev cali1\n")).unwrap();
    let bad_line = full.lines().count() + 1;
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        routes(h0),
        before,
        "a table that does not parse changes nothing"
    );
    assert!(
        ping(&a1.ns, a2.addr, 2).unwrap(),
        "traffic unaffected by the bad edit"
    );

    // The metrics endpoint (inside the host's namespace) counts the refused edit and shows the
    // maps' fill levels.
    let metrics = scrape_metrics(h0, "127.0.0.1:9464");
    assert_metrics_have(
        &metrics,
        &[
            "dataplane_route_table_apply_errors_total 1",
            "dataplane_routes_installed 3",
            "dataplane_map_entries{map=\"ROUTES\"} 3",
            "dataplane_map_capacity{map=\"ROUTES\"} 65536",
            "dataplane_map_entries{map=\"TX_PORTS\"} 3",
        ],
    );
    let forwarded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dataplane_packets_total{hook=\"tc\",counter=\"forwarded\"} "))
        .and_then(|v| v.parse().ok())
        .expect("forwarded counter in the metrics");
    assert!(forwarded >= 10, "forwarded {forwarded}");

    // Remove the route again: gone within a second, traffic stops.
    std::fs::write(&path, &without).unwrap();
    assert_route_within_a_second(h0, "198.18.1.3/32", false);
    assert!(
        !ping(&a1.ns, a2.addr, 1).unwrap(),
        "no path once the route is removed"
    );

    detach(h0);
    let log = log_of(guard);
    assert!(
        log.contains("route added") && log.contains("198.18.1.3/32"),
        "log of the added route:\n{log}"
    );
    assert!(
        log.contains(&format!("line={bad_line}")) && log.contains("host bits set"),
        "log names the bad line {bad_line}:\n{log}"
    );
    assert!(log.contains("route removed"), "log of the removal:\n{log}");
}

/// The loader's `plan applied` log lines: (routes set, routes removed, total ms).
fn applied_lines(log: &str) -> Vec<(usize, usize, f64)> {
    let field = |line: &str, key: &str| -> Option<String> {
        let rest = line.split(&format!(" {key}=")).nth(1)?;
        Some(
            rest.split_whitespace()
                .next()?
                .trim_matches('"')
                .to_string(),
        )
    };
    log.lines()
        .filter(|l| l.contains("plan applied"))
        .filter_map(|l| {
            Some((
                field(l, "set")?.parse().ok()?,
                field(l, "removed")?.parse().ok()?,
                field(l, "total_ms")?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn ten_thousand_routes_come_and_go_while_an_untouched_stream_loses_nothing() {
    let Some(topo) = TestBed::routed(1, Attach::Tc).map(TestBed::forward_drop) else {
        return;
    };
    let log_path = topo.dir.join("loader0.log");
    let base = topo.route_table(0, Attach::Tc);
    let path = topo.write_routes(0, &base);
    let h0 = topo.host(0);
    // Host 0's log goes to a file: 10 000 lines would fill a pipe nobody drains.
    let child = loader_cmd()
        .args(run_args(&path, h0, &[]))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let loader0 = netlab::netns::ChildGuard::from_child(child, "loader 0");
    let loader1 = topo.start_loader(1, Attach::Tc);
    wait_for_routes(h0, 2);
    let (a, b) = (&topo.hosts[0].workloads[0], &topo.hosts[1].workloads[0]);
    assert!(ping(&a.ns, b.addr, 2).unwrap(), "path up before the churn");

    // 10 000 /32s in 198.19.128.0/17, away from both hosts' prefixes and the underlay.
    let mut churned = base.clone();
    for i in 0..10_000u32 {
        churned.push_str(&format!(
            "route 198.19.{}.{}/32 via 198.19.0.2 dev eth0\n",
            128 + i / 256,
            i % 256
        ));
    }
    // While the stream runs, progress is read from the loader's log (a cheap file read), not
    // by dumping 10 000 routes every few milliseconds, which would load this 2-core machine
    // far more than the loader does.
    let hosts = [h0, topo.host(1)];
    let before = PathCounts::read(&hosts, &b.ns);
    let (stream, routes_at_peak) = thread::scope(|s| {
        let stream = s.spawn(|| udp_100m(a, b, 8).expect("iperf3 UDP through the churn"));
        thread::sleep(Duration::from_secs(1));
        std::fs::write(&path, &churned).unwrap();
        wait_for_applied(&log_path, |(set, _, _)| set == 10_000);
        let at_peak = routes(h0).len();
        std::fs::write(&path, &base).unwrap();
        wait_for_applied(&log_path, |(_, removed, _)| removed == 10_000);
        (stream.join().unwrap(), at_peak)
    });
    let receiver_overflows = before.assert_path_lost_nothing(&stream, &hosts, &b.ns);
    assert_eq!(routes_at_peak, 10_002, "the 10 000 routes were in the map");
    assert_eq!(routes(h0).len(), 2, "and are gone again");
    assert!(
        stream.packets > 50_000,
        "the stream ran through the churn: {} datagrams",
        stream.packets
    );

    detach(h0);
    detach(topo.host(1));
    drop(loader0);
    drop(loader1);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let applied = applied_lines(&log);
    let add = applied
        .iter()
        .find(|(set, _, _)| *set == 10_000)
        .expect("the 10 000-route apply was logged");
    let remove = applied
        .iter()
        .find(|(_, removed, _)| *removed == 10_000)
        .expect("the removal was logged");
    eprintln!(
        "10 000 routes: added in {:.1} ms, removed in {:.1} ms (parse + resolve + map writes); stream {} datagrams, all forwarded by both hosts; iperf3 lost {}, all of them receive-buffer overflows of the receiving socket ({receiver_overflows})",
        add.2, remove.2, stream.packets, stream.lost_packets
    );
}

/// Waits up to 20 s for a `plan applied` line of the log at `path` that satisfies `ok`.
fn wait_for_applied(path: &std::path::Path, ok: impl Fn((usize, usize, f64)) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if applied_lines(&log).into_iter().any(&ok) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("the loader never logged the expected `plan applied` line");
}
