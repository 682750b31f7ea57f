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

const CHARTS: [&str; 5] = [
    "cpu_vs_rate_udp",
    "cpu_vs_rate_tcp",
    "above_floor_udp",
    "above_floor_tcp",
    "latency",
];
/// Charts of the policy scaling sweep (legend: engines).
const POLICY_CHARTS: [&str; 2] = ["policy_new_flow_latency", "policy_cpu_per_gbps"];

#[test]
fn quick_bench_writes_every_output() {
    netlab::root_or_skip!();
    let dir = std::env::temp_dir().join(format!("dpt-bench-quick-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(BENCH)
        .args(["--quick", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench --quick failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r = Results::load(&dir).expect("results.json parses");
    assert_eq!(r.schema, SCHEMA_VERSION);
    let modes = r.settings.modes.len();
    let per_mode = r.settings.rates_mbps.len() * r.settings.protocols.len() + 1;
    assert_eq!(
        r.points.len(),
        modes * per_mode * r.settings.repetitions as usize
    );
    assert_eq!(
        r.latency.len(),
        modes * r.settings.latency_sizes.len() * r.settings.repetitions as usize
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
    }
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
    let s = &r.settings;
    assert_eq!(
        r.policy_scaling.len(),
        s.policy_rules.len() * s.policy_engines.len() * s.repetitions as usize
    );
    assert!(!s.policy_rules.is_empty() && s.policy_engines.len() == 4);
    for p in &r.policy_scaling {
        assert!(!p.backend.is_empty(), "{p:?}");
        assert!(
            p.new_flows.samples > 0 && p.established.samples > 0,
            "{p:?}"
        );
        assert_eq!(
            p.engine == bench::policy_scaling::Engine::Ebpf,
            p.bpf_ns_per_run > 0.0,
            "{p:?}"
        );
    }

    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert!(csv.starts_with("mode,protocol,rate_mbps,repetition"));
    assert_eq!(csv.lines().count(), r.points.len() + 1);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for heading in [
        "kernel-level CPU above the floor",
        "Bandwidth, loss, latency",
        "off their target rate",
        "Policy rule scaling",
        "iptables v1.8",
    ] {
        assert!(report.contains(heading), "report.md lacks {heading:?}");
    }
    for chart in CHARTS {
        assert_png(&dir.join(format!("{chart}.png")));
        assert_svg(&dir.join(format!("{chart}.svg")));
    }
    for chart in POLICY_CHARTS {
        assert_png(&dir.join(format!("{chart}.png")));
        let svg = std::fs::read_to_string(dir.join(format!("{chart}.svg"))).unwrap();
        assert!(
            svg.contains("nftables-sets") && svg.contains("iptables-legacy"),
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
