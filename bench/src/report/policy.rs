//! Policy rule scaling: one row per engine, one column per rule count, and each engine against
//! its own 0 rules.
use std::fmt::Write;

use super::table::{self, cell};
use crate::{
    policy_scaling::{Engine, ScalingPoint},
    results::Results,
};

/// A table of the policy sweep: title, the measure, digits.
type ScalingTable = (&'static str, fn(&ScalingPoint) -> f64, usize);

const TABLES: [ScalingTable; 7] = [
    (
        "New flows: request-response p50, µs (each request a new flow)",
        |p| p.new_flows.p50_us,
        1,
    ),
    (
        "New flows: request-response p99, µs",
        |p| p.new_flows.p99_us,
        1,
    ),
    (
        "New flows: kernel-level CPU per new flow under a stream of them, µs",
        |p| p.new_flow_cpu_us,
        1,
    ),
    (
        "One established flow: request-response p50, µs",
        |p| p.established.p50_us,
        1,
    ),
    (
        "Stream: kernel-level CPU per Gbit/s, % of one CPU (UDP, fixed rate)",
        |p| p.cpu_pct_per_gbps,
        2,
    ),
    (
        "eBPF program run time per packet, ns",
        |p| p.bpf_ns_per_run,
        0,
    ),
    ("Loading the policy, ms", |p| p.apply_ms, 1),
];

/// Each engine against its own N=0: what the rules add, whatever the engine's base cost.
const RELATIVE: [ScalingTable; 2] = [
    (
        "New flows: p50 change against the engine's own 0 rules, µs",
        |p| p.new_flows.p50_us,
        1,
    ),
    (
        "New flows: CPU per new flow, change against the engine's own 0 rules, µs",
        |p| p.new_flow_cpu_us,
        1,
    ),
];

/// The header's corner: engines down, rule counts across.
const CORNER: &str = "engine \\ rules";

pub(super) fn section(r: &Results) -> String {
    let s = &r.settings;
    let mut t = String::new();
    writeln!(t, "\n## Policy rule scaling\n").unwrap();
    writeln!(
        t,
        "The server's workload has ingress policy: N rules the traffic does not match (deny \
         rules for other peers, checked first, as Calico orders them), one that allows the \
         client, default deny; the same policy for every engine. Engines and backends:\n"
    )
    .unwrap();
    for engine in &s.policy_engines {
        let backend = r
            .policy_scaling
            .iter()
            .find(|p| p.engine == *engine)
            .map(|p| p.backend.as_str())
            .unwrap_or("-");
        writeln!(t, "- `{}`: {backend}", engine.name()).unwrap();
    }
    writeln!(
        t,
        "\nEvery engine is stateful: after a flow's first packet, conntrack (netfilter) or the \
         flow table (eBPF) admits the rest without consulting the rules, so a long stream \
         measures the established path and the rules' cost shows in **new flows**: the \
         request-response test where every request comes from a new source port is judged by \
         the rules each time.\n"
    )
    .unwrap();
    for (title, f, digits) in TABLES {
        // Only the eBPF engine runs a program.
        let ebpf_only = title.starts_with("eBPF");
        let engines = s.policy_engines.iter();
        let rows = engines
            .filter(|e| !ebpf_only || **e == Engine::Ebpf)
            .map(|e| {
                let cells = s.policy_rules.iter();
                (
                    e.name(),
                    cells.map(move |n| cell(r.scaling_spread(*e, *n, f), false, digits)),
                )
            });
        table::titled(&mut t, title, CORNER, &s.policy_rules, rows);
    }
    if let Some(&first) = s.policy_rules.first() {
        for (title, f, digits) in RELATIVE {
            let rows = s.policy_engines.iter().map(|e| {
                let base = r.scaling_spread(*e, first, f).map(|b| b.median);
                let cells =
                    s.policy_rules
                        .iter()
                        .map(move |n| match (base, r.scaling_spread(*e, *n, f)) {
                            (Some(b), Some(x)) => format!("{:+.d$}", x.median - b, d = digits),
                            _ => "-".into(),
                        });
                (e.name(), cells)
            });
            table::titled(&mut t, title, CORNER, &s.policy_rules, rows);
        }
    }
    writeln!(
        t,
        "\nStream: UDP at {} Mbit/s, {} s per point; latency: {} round trips of 100 bytes each way.",
        s.policy_rate_mbps, s.duration_s, s.latency_count
    )
    .unwrap();
    t
}
