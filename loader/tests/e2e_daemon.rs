//! The loader as a daemon, end to end as root, in namespaces the tests make: the dataplane
//! outlives its loader (SIGKILL, SIGTERM), a restarted loader adopts it without losing a
//! packet, and a table too big for a map is refused whole, logged and counted.
mod common;

use common::*;
use dataplane::model::route_table::Attach;
use netlab::traffic::ping;
use std::{collections::BTreeSet, path::PathBuf, thread, time::Duration};

/// The calling root test's bed, routed, kernel forwarding closed (None: skipped).
fn routed_topology(workloads_per_host: usize) -> Option<TestBed> {
    TestBed::routed(workloads_per_host, Attach::Tc).map(TestBed::forward_drop)
}

#[test]
fn the_dataplane_outlives_its_loader_and_a_restarted_loader_adopts_it_without_loss() {
    let Some(topo) = routed_topology(1) else {
        return;
    };
    let (h0, h1) = (topo.host(0), topo.host(1));
    let (a, b) = (&topo.hosts[0].workloads[0], &topo.hosts[1].workloads[0]);
    let loader0 = topo.start_loader(0, Attach::Tc);
    let loader1 = topo.start_loader(1, Attach::Tc);
    assert!(ping(&a.ns, b.addr, 2).unwrap(), "path up");

    let programs_before = [program_id(h0, "tc_workload"), program_id(h0, "tc_underlay")];
    let links_before: Vec<BTreeSet<u64>> = programs_before
        .iter()
        .map(|p| link_ids_of_program(*p))
        .collect();
    assert_eq!(
        links_before.iter().map(BTreeSet::len).collect::<Vec<_>>(),
        [1, 1],
        "host 0 attaches cali1 (workload) and eth0 (underlay)"
    );
    let forwarded_start = forwarded(&stats(h0), "tc");
    let hosts = [h0, h1];
    let before = PathCounts::read(&hosts, &b.ns);

    let (stream, forwarded_unattended, restarted) = thread::scope(|s| {
        let stream = s.spawn(|| udp_100m(a, b, 8).expect("iperf3 UDP across the restart"));
        thread::sleep(Duration::from_millis(1500));
        // Host 0's loader is killed outright, host 1's asked to stop: both dataplanes stay.
        signal(loader0.pid(), libc::SIGKILL);
        signal(loader1.pid(), libc::SIGTERM);
        let out = loader1.wait().unwrap();
        assert!(out.status.success(), "SIGTERM: clean exit, {}", out.status);
        drop(loader0);

        thread::sleep(Duration::from_secs(1));
        let status = loader(&["status", "--netns", h0]);
        let status_text = String::from_utf8_lossy(&status.stdout);
        assert!(
            status.status.success() && status_text.contains("no loader running"),
            "status with the loader gone:\n{status_text}{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let unattended = forwarded(&stats(h0), "tc");

        // Restarted mid-stream: adopts the pins.
        let restarted = [
            topo.start_loader(0, Attach::Tc),
            topo.start_loader(1, Attach::Tc),
        ];
        (stream.join().unwrap(), unattended, restarted)
    });

    let overflows = before.assert_path_lost_nothing(&stream, &hosts, &b.ns);
    eprintln!(
        "UDP 100 Mbit/s across SIGKILL (host 0) / SIGTERM (host 1) and restart: {} datagrams, all forwarded by both hosts; iperf3 lost {} ({overflows} receive-buffer overflows of the receiving socket)",
        stream.packets, stream.lost_packets
    );
    assert!(stream.packets > 50_000, "{} datagrams", stream.packets);
    // The counters kept counting: while no loader ran, and across the restart (a fresh map
    // would have started from zero and counted fewer than the datagrams delivered).
    let during = forwarded_unattended - forwarded_start;
    assert!(
        during > 10_000,
        "host 0 forwarded only {during} frames in the 2.5 s before the restart"
    );
    let forwarded_total = forwarded(&stats(h0), "tc") - forwarded_start;
    assert!(
        forwarded_total >= stream.packets - stream.lost_packets,
        "counters restarted: {forwarded_total} forwarded < {} delivered",
        stream.packets - stream.lost_packets
    );

    // The new loader's program runs in the very links the first one made.
    let programs_after = [program_id(h0, "tc_workload"), program_id(h0, "tc_underlay")];
    for (after, before) in programs_after.iter().zip(&programs_before) {
        assert_ne!(after, before, "the new programs were swapped in");
    }
    assert_eq!(
        programs_after
            .iter()
            .map(|p| link_ids_of_program(*p))
            .collect::<Vec<_>>(),
        links_before,
        "same links, new programs"
    );
    for program in programs_before {
        assert_eq!(
            links_of_program(program),
            0,
            "the old programs hold no link"
        );
    }

    detach(h0);
    detach(h1);
    assert!(!ping(&a.ns, b.addr, 1).unwrap(), "no path after detach");
    drop(restarted);
}

#[test]
fn a_table_bigger_than_the_route_map_is_refused_whole_logged_and_counted() {
    let Some(topo) = routed_topology(2) else {
        return;
    };
    let host = &topo.hosts[0];
    let h0 = host.ns.name();
    let (a1, a2) = (&host.workloads[0], &host.workloads[1]);
    let table = topo.route_table(0, Attach::Tc);
    let routes_in = |t: &str| t.lines().filter(|l| l.starts_with("route ")).count();
    assert_eq!(routes_in(&table), 3);

    // At start: a table that does not fit is refused before anything is pinned or attached.
    let path = topo.write_routes(0, &table);
    let stderr = refused(&run_args(&path, h0, &["--max-routes", "2"]));
    assert!(
        stderr.contains("needs 3 entries in map ROUTES, which holds 2"),
        "{stderr}"
    );
    assert!(
        !loader(&["status", "--netns", h0]).status.success(),
        "nothing pinned after the refused start"
    );

    // Running with room for exactly 3: a fourth route is refused whole, counted, logged.
    let guard = spawn_loader(&run_args(
        &path,
        h0,
        &["--max-routes", "3", "--metrics", "127.0.0.1:9465"],
    ));
    wait_for_routes(h0, 3);
    assert!(ping(&a1.ns, a2.addr, 2).unwrap(), "same-host path up");
    let before = routes(h0);
    std::fs::write(
        &path,
        format!("{table}route 198.18.9.0/24 via 198.19.0.2 dev eth0\n"),
    )
    .unwrap();
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(routes(h0), before, "the oversized table changed nothing");
    assert!(ping(&a1.ns, a2.addr, 2).unwrap(), "traffic unaffected");
    let metrics = scrape_metrics(h0, "127.0.0.1:9465");
    assert_metrics_have(
        &metrics,
        &[
            "dataplane_map_full_total{map=\"ROUTES\"} 1",
            "dataplane_route_table_apply_errors_total 1",
            "dataplane_map_capacity{map=\"ROUTES\"} 3",
            "dataplane_map_entries{map=\"ROUTES\"} 3",
        ],
    );

    // The loader is killed; one restarted with another size is refused, and the pinned
    // dataplane goes on as it was.
    signal(guard.pid(), libc::SIGKILL);
    let log = log_of(guard);
    assert!(
        log.contains("needs 4 entries in map ROUTES, which holds 3")
            && log.contains("route table not applied"),
        "log of the refusal:\n{log}"
    );
    std::fs::write(&path, &table).unwrap();
    let stderr = refused(&run_args(&path, h0, &["--max-routes", "100"]));
    assert!(
        stderr.contains("has capacity 3, this loader needs 100"),
        "{stderr}"
    );
    assert_eq!(routes(h0), before, "the pinned routes are untouched");
    assert!(ping(&a1.ns, a2.addr, 2).unwrap(), "still forwarding");

    detach(h0);
}

#[test]
fn routes_from_the_kernel_are_mirrored_filtered_and_followed() {
    let Some(topo) = routed_topology(1) else {
        return;
    };
    let host = &topo.hosts[0];
    let h0 = host.ns.name();
    let (a, b) = (&host.workloads[0], &topo.hosts[1].workloads[0]);
    // Host 0's file declares the interfaces and its own workload; the route to host 1 is to
    // come from the kernel.
    let local_only: String = topo
        .route_table(0, Attach::Tc)
        .lines()
        .filter(|l| !l.contains(" via "))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = topo.write_routes(0, &local_only);
    // Routes the filter must leave alone: another protocol, outside the prefixes, the
    // default route, and the link route of eth0 (protocol kernel) that is there already.
    for args in [
        "198.18.7.0/24 via 198.19.0.2 dev eth0 proto bird",
        "203.0.113.0/24 via 198.19.0.2 dev eth0 proto static",
        "default via 198.19.0.2 dev eth0 proto static",
    ] {
        let mut cmd = vec!["route", "add"];
        cmd.extend(args.split(' '));
        host.ns.ip(&cmd).unwrap();
    }
    let _loader1 = topo.start_loader(1, Attach::Tc);
    let guard = spawn_loader(&run_args(
        &path,
        h0,
        &[
            "--routes-from-kernel",
            "--kernel-proto",
            "static",
            "--kernel-prefix",
            "198.18.0.0/16",
        ],
    ));
    wait_for_routes(h0, 1);
    let prefixes = prefixes_of::<Vec<String>>;
    // `ip route add` made the route to host 1 with protocol boot: not taken.
    assert_eq!(prefixes(&routes(h0)), vec!["198.18.1.2/32"]);
    assert!(!ping(&a.ns, b.addr, 1).unwrap(), "no route to host 1 yet");

    // The same route as a static one: mirrored within a second, and traffic flows.
    host.ns
        .ip(&[
            "route",
            "replace",
            "198.18.2.0/24",
            "via",
            "198.19.0.2",
            "dev",
            "eth0",
            "proto",
            "static",
        ])
        .unwrap();
    assert_route_within_a_second(h0, "198.18.2.0/24", true);
    let table = routes(h0);
    assert_eq!(prefixes(&table), vec!["198.18.1.2/32", "198.18.2.0/24"]);
    let remote = &table[1];
    assert_eq!(remote["kind"], "remote");
    assert_eq!(remote["dev"], "eth0");
    assert!(
        ping(&a.ns, b.addr, 3).unwrap(),
        "cross-host through the mirrored route"
    );

    // Deleted from the kernel: gone from the maps within a second.
    host.ns.ip(&["route", "del", "198.18.2.0/24"]).unwrap();
    assert_route_within_a_second(h0, "198.18.2.0/24", false);
    assert!(
        !ping(&a.ns, b.addr, 1).unwrap(),
        "no path once the kernel route is gone"
    );
    assert_eq!(
        prefixes(&routes(h0)),
        vec!["198.18.1.2/32"],
        "nothing else was taken"
    );

    detach(h0);
    let log = log_of(guard);
    assert!(log.contains("following the kernel's routes"), "{log}");
}

#[test]
fn the_programs_log_why_they_pass_a_frame_when_asked() {
    let Some(topo) = routed_topology(1) else {
        return;
    };
    let host = &topo.hosts[0];
    let h0 = host.ns.name();
    let path = topo.write_routes(0, &topo.route_table(0, Attach::Tc));
    let guard = spawn_loader(&run_args(&path, h0, &["--ebpf-log", "debug"]));
    wait_for_routes(h0, 2);
    // No route for 198.18.9.9: the program hands the frame to the kernel (which drops it,
    // FORWARD DROP) and says why.
    assert!(!ping(&host.workloads[0].ns, "198.18.9.9".parse().unwrap(), 1).unwrap());
    thread::sleep(Duration::from_millis(500));
    detach(h0);
    let log = log_of(guard);
    assert!(
        log.lines().any(|l| l.contains("DEBUG")
            && l.contains("passed a frame to the kernel: hook=tc reason=pass_no_route")),
        "the program's debug record in the loader's log:\n{log}"
    );

    // Under `ip netns exec`, /sys/fs/bpf is private to the command: refused, with the way out.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", h0, LOADER, "run", "--config"])
        .arg(&path)
        .args(["--bpffs", "/sys/fs/bpf"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("runs under `ip netns exec`") && stderr.contains("--netns"),
        "{stderr}"
    );
}

/// The loader's control plane against clients and writers that do not behave, on one bed:
/// 100 idle connections to the metrics endpoint do not stop it answering; a route table
/// rewritten in place by a slow writer, or left empty for a moment, never loses a route that
/// the old and new versions both have; `detach` after the loader was SIGKILLed leaves alone a
/// process that now has its pid.
#[test]
fn the_control_plane_holds_against_idle_clients_slow_writers_and_recycled_pids() {
    let Some(topo) = routed_topology(2) else {
        return;
    };
    let h0 = topo.host(0);
    let full = topo.route_table(0, Attach::Tc);
    let path = topo.write_routes(0, &full);
    let metrics_addr = "127.0.0.1:9466";
    let guard = spawn_loader(&run_args(&path, h0, &["--metrics", metrics_addr]));
    wait_for_routes(h0, 3);
    // The endpoint opens once the loader has attached and recorded itself, after the maps.
    netlab::netns::in_netns(h0, || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(metrics_addr).is_err() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "no metrics endpoint");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    })
    .unwrap();

    // 100 clients connect and say nothing; a scraper still gets its answer at once.
    let idle = netlab::netns::in_netns(h0, || {
        (0..100)
            .map(|_| Ok(std::net::TcpStream::connect(metrics_addr)?))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .expect("100 idle connections");
    let started = std::time::Instant::now();
    let metrics = scrape_metrics(h0, metrics_addr);
    assert!(metrics.contains("dataplane_packets_total"));
    eprintln!(
        "metrics answered in {:?} with {} idle connections open",
        started.elapsed(),
        idle.len()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the scrape waited on the idle clients"
    );
    drop(idle);

    // A slow writer rewrites the table in place, a line every 100 ms; then the file stays
    // empty for two seconds (a truncating writer that stalls). The routes both versions have
    // never leave the map.
    let routes_now = || -> BTreeSet<String> { prefixes_of(&routes(h0)) };
    let before = routes_now();
    assert_eq!(before.len(), 3);
    let missing = std::sync::Mutex::new(Vec::new());
    let done = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let now = routes_now();
                if now != before {
                    missing.lock().unwrap().push(now);
                }
                thread::sleep(Duration::from_millis(30));
            }
        });
        use std::io::Write;
        let mut file = std::fs::File::create(&path).unwrap(); // truncates in place
        for line in full.lines() {
            writeln!(file, "{line}").unwrap();
            file.flush().unwrap();
            thread::sleep(Duration::from_millis(100));
        }
        thread::sleep(Duration::from_secs(1));
        std::fs::File::create(&path).unwrap(); // empty, and left so
        thread::sleep(Duration::from_secs(2));
        std::fs::write(&path, &full).unwrap();
        thread::sleep(Duration::from_secs(1));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(
        missing.lock().unwrap().is_empty(),
        "the route map changed while the file was being rewritten: {:?}",
        missing.lock().unwrap()
    );

    // SIGKILL the loader; its pid goes to another process of this namespace (as a recycled
    // pid would); detach must leave that process alone.
    signal(guard.pid(), libc::SIGKILL);
    let log = log_of(guard);
    assert!(
        log.contains("would remove more than half of the routes"),
        "the empty file was seen and held back:\n{log}"
    );
    let mut bystander = topo.hosts[0].ns.spawn("sleep", &["30"]).unwrap();
    let record_path = PathBuf::from(format!("/run/ebpf-dataplane/{}/loader.json", netns_id(h0)));
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).expect("the loader's record")).unwrap();
    record["pid"] = bystander.pid().into();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    detach(h0);
    assert!(
        bystander.running(),
        "detach signalled a process that is not the loader"
    );
    assert!(
        !loader(&["stats", "--netns", h0]).status.success(),
        "the dataplane was detached all the same"
    );
}

/// The loader's name for a network namespace (`net-<inode>`), as its state directory has it.
fn netns_id(netns: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(format!("/run/netns/{netns}"))
        .unwrap()
        .ino();
    format!("net-{ino}")
}
