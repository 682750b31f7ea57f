//! `bench --quick` end to end (root): every output is written and has the documented shape.
//! Figures are not checked (they are measurements), only presence and schema; then `bench
//! report` redraws the report and charts from results.json alone.
use std::{path::Path, process::Command};

use bench::results::{Results, SCHEMA_VERSION};

const BENCH: &str = env!("CARGO_BIN_EXE_bench");

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert!(bytes.len() > 10_000, "{} is nearly empty", path.display());
}

fn assert_svg(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.contains("<svg") && text.contains("</svg>"),
        "{} is not an SVG",
        path.display()
    );
    assert!(
        text.contains("ebpf-routed-tc"),
        "{} has no legend entry for ebpf-routed-tc",
        path.display()
    );
}

/// Charts of every quick run (the quick run paces UDP only: no TCP rate charts).
const CHARTS: [&str; 3] = ["cpu_vs_rate_udp", "above_floor_udp", "latency"];
/// Charts of the policy scaling sweep (legend: engines).
const POLICY_CHARTS: [&str; 2] = ["policy_new_flow_latency", "policy_cpu_per_gbps"];
/// Charts of the service scaling sweep (legend: engines).
const SERVICE_CHARTS: [&str; 4] = [
    "services_connect_latency",
    "services_cpu_per_connection",
    "services_load_time",
    "services_change_time",
];

#[test]
fn quick_bench_writes_every_output() {
    netlab::root_or_skip!();
    let dir = std::env::temp_dir().join(format!("dpt-bench-quick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(BENCH)
        // A short meter check too, so that its path runs here.
        .args([
            "--quick",
            "--meter-check",
            "3",
            "--out",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench --quick failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r = Results::load(&dir).expect("results.json parses");
    assert_eq!(r.schema, SCHEMA_VERSION);
    let s = &r.settings;
    // Every mode but the floor measures its plan, each point with a floor point beside it.
    let others = s.modes.len() - 1;
    let plan = s.rates_mbps.len() + s.tcp_rates_mbps.len() + 1;
    let reps = s.repetitions as usize;
    assert_eq!(r.points.len(), others * plan * 2 * reps);
    for p in r.points.iter().filter(|p| p.mode != "floor") {
        let beside = r.floor_beside(p, &r.points);
        assert!(beside.is_some(), "no floor point beside {p:?}");
    }
    assert!(
        r.points
            .iter()
            .filter(|p| p.mode == "floor")
            .all(|p| s.modes.iter().any(|m| m.name() == p.beside)),
        "a floor point beside no measured mode"
    );
    assert_eq!(r.latency.len(), (others + 1) * s.latency_sizes.len() * reps);
    assert!(
        r.latency
            .iter()
            .all(|l| l.latency.samples == s.latency_count),
        "a latency run lost transactions"
    );
    for p in &r.points {
        assert!(
            p.duration_s > 0.0 && (p.protocol == "tcp" || p.protocol == "udp"),
            "{p:?}"
        );
        assert!(
            p.achieved_mbps.is_finite() && p.softirq_cpu_pct.is_finite(),
            "{p:?}"
        );
        // The devices carried the traffic, counted in both namespaces.
        assert!(
            p.server_rx_packets > 0 && p.client_tx_packets >= p.server_rx_packets / 2,
            "{p:?}"
        );
        assert!(p.softirq_ns_per_packet > 0.0, "{p:?}");
    }
    // Small packets: every mode, each beside a floor point.
    assert_eq!(r.small_packets.len(), others * 2 * reps);
    for p in &r.small_packets {
        assert_eq!(p.protocol, bench::measure::SMALL_PACKETS);
        assert!(p.server_rx_packets > 10_000, "{p:?}");
    }
    // Route scale: every count, the map holding the bed's handful plus the count.
    assert_eq!(r.route_scale.len(), s.route_scale.len() * reps);
    let handful = r
        .route_scale
        .iter()
        .find(|p| p.extra_routes == 0)
        .expect("a point without extra routes")
        .load
        .routes;
    for p in &r.route_scale {
        assert_eq!(p.load.routes, handful + p.extra_routes, "{p:?}");
        assert!(
            p.bpf_ns_per_run > 0.0 && p.softirq_ns_per_packet > 0.0,
            "{p:?}"
        );
    }
    // Per-path program costs: ten paths at both hooks, each timed.
    assert_eq!(r.path_costs.len(), 20, "{:?}", r.path_costs);
    assert!(
        r.path_costs
            .iter()
            .all(|c| c.p50_ns > 0.0 && c.runs == s.path_runs),
        "{:?}",
        r.path_costs
    );
    let check = r.meter_check.as_ref().expect("the meter check ran");
    assert!(
        check.meter_all_pct >= check.meter_net_pct && check.meter_net_pct > 0.0 && check.ticks > 0,
        "{check:?}"
    );
    // eBPF modes report BPF run time; kernel modes do not.
    let ebpf_runs: u64 = r
        .points
        .iter()
        .filter(|p| p.mode.starts_with("ebpf"))
        .map(|p| p.bpf_run_count)
        .sum();
    let kernel_runs: u64 = r
        .points
        .iter()
        .filter(|p| !p.mode.starts_with("ebpf"))
        .map(|p| p.bpf_run_count)
        .sum();
    assert!(
        ebpf_runs > 0 && kernel_runs == 0,
        "BPF runs: eBPF modes {ebpf_runs}, kernel modes {kernel_runs}"
    );

    // The policy sweep: every engine at every rule count; the eBPF engine reports its run
    // time, and every point's allowed client got its answers.
    assert_eq!(
        r.policy_scaling.len(),
        s.policy_rules.len() * s.policy_engines.len() * s.repetitions as usize
    );
    assert!(!s.policy_rules.is_empty() && s.policy_engines.len() == 6);
    for p in &r.policy_scaling {
        assert!(!p.backend.is_empty(), "{p:?}");
        assert!(
            p.new_flows.samples > 0 && p.established.samples > 0 && p.new_flow_cpu_us > 0.0,
            "{p:?}"
        );
        assert_eq!(
            p.engine == bench::policy_scaling::Engine::Ebpf,
            p.bpf_ns_per_run > 0.0,
            "{p:?}"
        );
    }

    // The service sweep: every engine at every count; every connection answered through the
    // service, the stream carried, the load and the change timed.
    assert_eq!(
        r.service_scaling.len(),
        s.service_counts.len() * s.service_engines.len() * s.repetitions as usize
    );
    assert!(!s.service_counts.is_empty() && s.service_engines.len() == 3);
    for p in &r.service_scaling {
        assert_eq!(p.connect.samples, s.service_connections, "{p:?}");
        assert!(
            p.connections_per_s > 0.0
                && p.cpu_us_per_connection > 0.0
                && p.stream_achieved_mbps > 0.0
                && p.load_ms > 0.0
                && p.change_ms > 0.0,
            "{p:?}"
        );
    }

    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert!(csv.starts_with("mode,protocol,rate_mbps,repetition"));
    assert_eq!(
        csv.lines().count(),
        r.points.len() + r.small_packets.len() + 1
    );
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for heading in [
        "## Headline: eBPF against the kernel mode it replaces",
        "## Small packets",
        "## Latency: TCP request/response",
        "## The modes",
        "kernel-level CPU above the floor",
        "kernel-level CPU per packet above the floor",
        "## Bandwidth and loss",
        "## The softirq meter, checked",
        "## Route table scale",
        "## The programs' cost per path",
        "off their target rate",
        "## Points with steal",
        "## How this was measured",
        "Policy rule scaling",
        "change against the engine's own 0 rules",
        "iptables v1.8",
        "## Service scaling (kube-proxy against eBPF)",
        "Applying one endpoint change at N, ms",
    ] {
        assert!(report.contains(heading), "report.md lacks {heading:?}");
    }
    for chart in CHARTS {
        assert_png(&dir.join(format!("{chart}.png")));
        assert_svg(&dir.join(format!("{chart}.svg")));
    }
    // The headline chart exists whenever a ratio does (a point may miss its rate).
    let ratios = r.settings.rates_mbps.iter().any(|rate| {
        r.headline(bench::modes::Mode::EbpfRoutedTc, "udp", *rate)
            .is_some()
    });
    if ratios {
        assert_png(&dir.join("headline_ratio_udp.png"));
        assert_svg(&dir.join("headline_ratio_udp.svg"));
    }
    for chart in POLICY_CHARTS {
        assert_png(&dir.join(format!("{chart}.png")));
        let svg = std::fs::read_to_string(dir.join(format!("{chart}.svg"))).unwrap();
        assert!(
            svg.contains("nftables-sets")
                && svg.contains("iptables-legacy")
                && svg.contains("iptables-ipset")
                && svg.contains("nftables-linear"),
            "{chart}.svg legend"
        );
    }

    for chart in SERVICE_CHARTS {
        assert_png(&dir.join(format!("{chart}.png")));
        let svg = std::fs::read_to_string(dir.join(format!("{chart}.svg"))).unwrap();
        assert!(
            svg.contains("kube-proxy-iptables") && svg.contains("kube-proxy-nftables"),
            "{chart}.svg legend"
        );
    }

    // Redraw from results.json alone.
    std::fs::remove_file(dir.join("report.md")).unwrap();
    for chart in CHARTS {
        std::fs::remove_file(dir.join(format!("{chart}.png"))).unwrap();
    }
    let out = Command::new(BENCH)
        .args(["report", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench report failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("report.md")).unwrap(),
        report,
        "redrawn report differs"
    );
    for chart in CHARTS {
        assert_png(&dir.join(format!("{chart}.png")));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
