//! report.md: the tables, drawn from results.json alone (so `bench report DIR` redraws them).
use std::fmt::Write;

use crate::{
    measure::Point,
    modes::Mode,
    policy_scaling::{Engine, ScalingPoint},
    results::{Results, Spread},
};

fn cell(s: Option<Spread>, flagged: bool, digits: usize) -> String {
    match s {
        None => "-".into(),
        Some(s) => {
            let flag = if flagged { " ⚑" } else { "" };
            format!(
                "{:.d$} ({:.d$}-{:.d$}){flag}",
                s.median,
                s.min,
                s.max,
                d = digits
            )
        }
    }
}

fn rate_name(rate: u64) -> String {
    if rate == 0 {
        "max".into()
    } else {
        format!("{rate}")
    }
}

/// The title and header rows of a table with one column per rate.
fn rate_header(t: &mut String, title: &str, rates: &[u64]) {
    writeln!(t, "\n#### {title}\n").unwrap();
    write!(t, "| mode \\ Mbit/s |").unwrap();
    for rate in rates {
        write!(t, " {} |", rate_name(*rate)).unwrap();
    }
    writeln!(t, "\n|---|{}", "---|".repeat(rates.len())).unwrap();
}

/// A table: one row per mode, one column per rate, cells from `f` (a spread and whether the
/// point missed its rate).
fn rate_table(
    r: &Results,
    title: &str,
    f: impl Fn(Mode, u64) -> (Option<Spread>, bool),
    digits: usize,
) -> String {
    let mut t = String::new();
    let rates = &r.settings.rates_mbps;
    rate_header(&mut t, title, rates);
    for mode in r.modes() {
        write!(t, "| {} |", mode.name()).unwrap();
        for rate in rates {
            let (s, flagged) = f(mode, *rate);
            write!(t, " {} |", cell(s, flagged, digits)).unwrap();
        }
        writeln!(t).unwrap();
    }
    t
}

/// A table of one measure of the points of `protocol`, flagged where the rate was not held
/// if `flag` is set.
fn measure_table(
    r: &Results,
    protocol: &str,
    title: &str,
    measure: fn(&Point) -> f64,
    flag: bool,
    digits: usize,
) -> String {
    rate_table(
        r,
        title,
        |m, rate| {
            let flagged = flag && r.any_off_target(m, protocol, rate);
            (r.spread(m, protocol, rate, measure), flagged)
        },
        digits,
    )
}

pub fn render(r: &Results) -> String {
    let s = &r.settings;
    let mut t = String::new();
    writeln!(
        t,
        "# Bench: CPU per throughput, kernel vs eBPF dataplanes\n"
    )
    .unwrap();
    writeln!(
        t,
        "Kernel {}, {} CPUs. Modes: {}. Rates {:?} Mbit/s, {} repetition(s) of {} s per point, modes \
         interleaved within each repetition, each mode on a fresh topology per repetition; traffic \
         cross-host (client workload on host 0, server on host 1; floor: a bare veth pair). TCP and \
         UDP (1400-byte datagrams) from iperf3 at fixed rates. Cells: median (min-max) over \
         repetitions; ⚑ marks a point whose achieved rate was more than 2 % off its target in at \
         least one repetition: read it as not holding its rate.\n",
        r.kernel,
        r.cpus,
        s.modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
        s.rates_mbps,
        s.repetitions,
        s.duration_s
    )
    .unwrap();
    writeln!(
        t,
        "CPU is read three ways. **Kernel level** (the headline): nanoseconds spent in the NET_RX \
         and NET_TX softirqs on all CPUs, from raw tracepoint programs on softirq_entry/exit, as % \
         of one CPU. It is the network stack's own work wherever the kernel ran it; this kernel has \
         no IRQ time accounting and ticks at 250 Hz, so /proc/stat charges softirq work done on the \
         way out of a syscall to the task that ran it (often iperf3). **BPF run time**: our programs' \
         own time per run from the kernel's BPF statistics. **Machine busy**: /proc/stat, whole \
         machine, % of one CPU (up to {}00 %), with the traffic generator's own time (iperf3 client \
         and server, from getrusage: precise) beside it: most of the machine time is the \
         generator's, not the dataplane's. /proc/stat samples at the tick, and work paced in step \
         with the tick (iperf3's pacing timers) can escape it: where it reads below the \
         generator's own time, it missed work. Context only.\n",
        r.cpus
    )
    .unwrap();
    writeln!(
        t,
        "TCP and UDP are shown apart: in calico, flannel-*, macvlan and the eBPF TC modes a TCP \
         stream rides on GSO/TSO (a few large packets); the eBPF XDP modes on veth give GSO up and \
         carry the same stream in many MTU-sized frames, so their TCP cost is a packet-count effect, \
         not a per-packet one. Compare per-packet costs on UDP.\n"
    )
    .unwrap();

    for protocol in &s.protocols {
        let p = protocol.as_str();
        writeln!(t, "\n## {}\n", p.to_uppercase()).unwrap();
        t.push_str(&rate_table(
            r,
            &format!(
                "{p}: kernel-level CPU above the floor, % of one CPU (the dataplane's own cost)"
            ),
            |m, rate| (r.above_floor(m, p, rate), r.any_off_target(m, p, rate)),
            2,
        ));
        // Ratios of the eBPF modes to the kernel mode they replace, above the floor.
        rate_header(
            &mut t,
            &format!("{p}: eBPF above floor / kernel baseline above floor (median)"),
            &s.rates_mbps,
        );
        for mode in r.modes() {
            let Some(base) = mode.baseline() else {
                continue;
            };
            write!(t, "| {} / {} |", mode.name(), base.name()).unwrap();
            for rate in &s.rates_mbps {
                let ratio = match (r.above_floor(mode, p, *rate), r.above_floor(base, p, *rate)) {
                    (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}", a.median / b.median),
                    _ => "-".into(),
                };
                write!(t, " {ratio} |").unwrap();
            }
            writeln!(t).unwrap();
        }
        t.push_str(&measure_table(
            r,
            p,
            &format!("{p}: kernel-level CPU (NET_RX + NET_TX softirq), % of one CPU"),
            |x| x.softirq_cpu_pct,
            true,
            2,
        ));
        // Kernel modes run no program: their cells stay empty rather than 0.
        t.push_str(&rate_table(
            r,
            &format!("{p}: BPF run time per program run, ns (eBPF modes)"),
            |m, rate| {
                (
                    m.attach()
                        .and_then(|_| r.spread(m, p, rate, |x| x.bpf_ns_per_run)),
                    false,
                )
            },
            0,
        ));
        t.push_str(&measure_table(
            r,
            p,
            &format!("{p}: whole machine busy (/proc/stat), % of one CPU"),
            |x| x.machine_busy_pct,
            true,
            1,
        ));
        t.push_str(&measure_table(
            r,
            p,
            &format!("{p}: traffic generator (iperf3) time, % of one CPU"),
            |x| x.generator_cpu_pct,
            false,
            1,
        ));
        t.push_str(&measure_table(
            r,
            p,
            &format!("{p}: achieved rate, Mbit/s"),
            |x| x.achieved_mbps,
            true,
            1,
        ));
    }

    writeln!(t, "\n## Bandwidth, loss, latency\n").unwrap();
    writeln!(
        t,
        "| mode | max TCP Gbit/s | UDP loss % at 100 Mbit/s | UDP jitter ms at 100 Mbit/s |"
    )
    .unwrap();
    writeln!(t, "|---|---|---|---|").unwrap();
    for mode in r.modes() {
        let max_tcp = r.spread(mode, "tcp", 0, |p| p.achieved_mbps / 1000.0);
        let loss = r.spread(mode, "udp", 100, |p| {
            if p.packets > 0 {
                p.lost_packets as f64 / p.packets as f64 * 100.0
            } else {
                f64::NAN
            }
        });
        let jitter = r.spread(mode, "udp", 100, |p| p.jitter_ms);
        writeln!(
            t,
            "| {} | {} | {} | {} |",
            mode.name(),
            cell(max_tcp, false, 2),
            cell(loss, false, 3),
            cell(jitter, false, 4)
        )
        .unwrap();
    }
    if !s.latency_sizes.is_empty() {
        writeln!(
            t,
            "\nRequest-response latency (UDP echo, {} round trips per size and repetition), µs, p50 / p99:\n",
            s.latency_count
        )
        .unwrap();
        write!(t, "| mode |").unwrap();
        for size in &s.latency_sizes {
            write!(t, " {size} B p50 | {size} B p99 |").unwrap();
        }
        writeln!(t, "\n|---|{}", "---|---|".repeat(s.latency_sizes.len())).unwrap();
        for mode in r.modes() {
            write!(t, "| {} |", mode.name()).unwrap();
            for size in &s.latency_sizes {
                let p50 = r.latency_spread(mode, *size, |l| l.p50_us);
                let p99 = r.latency_spread(mode, *size, |l| l.p99_us);
                write!(t, " {} | {} |", cell(p50, false, 1), cell(p99, false, 1)).unwrap();
            }
            writeln!(t).unwrap();
        }
    }

    if !s.policy_rules.is_empty() {
        t.push_str(&policy_section(r));
    }

    let flagged: Vec<String> = r
        .points
        .iter()
        .filter(|p| p.off_target)
        .map(|p| {
            format!(
                "{} {} {} Mbit/s rep {}: {:.1} Mbit/s",
                p.mode, p.protocol, p.rate_mbps, p.repetition, p.achieved_mbps
            )
        })
        .collect();
    writeln!(t, "\n## Points off their target rate (more than 2 %)\n").unwrap();
    if flagged.is_empty() {
        writeln!(t, "None.").unwrap();
    } else {
        for f in flagged {
            writeln!(t, "- {f}").unwrap();
        }
    }
    writeln!(
        t,
        "\nCharts: cpu_vs_rate_<proto>, above_floor_<proto>, latency, policy_new_flow_latency, \
         policy_cpu_per_gbps (PNG and SVG). Raw data: results.json, results.csv."
    )
    .unwrap();
    t
}

/// A table of the policy sweep: title, the measure, digits.
type ScalingTable = (&'static str, fn(&ScalingPoint) -> f64, usize);

/// The policy rule scaling tables: one row per engine, one column per rule count.
fn policy_section(r: &Results) -> String {
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
    let header = |t: &mut String, title: &str| {
        writeln!(t, "\n#### {title}\n").unwrap();
        write!(t, "| engine \\ rules |").unwrap();
        for n in &s.policy_rules {
            write!(t, " {n} |").unwrap();
        }
        writeln!(t, "\n|---|{}", "---|".repeat(s.policy_rules.len())).unwrap();
    };
    let tables: [ScalingTable; 6] = [
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
    for (title, f, digits) in tables {
        header(&mut t, title);
        for engine in &s.policy_engines {
            if title.starts_with("eBPF") && *engine != Engine::Ebpf {
                continue;
            }
            write!(t, "| {} |", engine.name()).unwrap();
            for n in &s.policy_rules {
                write!(
                    t,
                    " {} |",
                    cell(r.scaling_spread(*engine, *n, f), false, digits)
                )
                .unwrap();
            }
            writeln!(t).unwrap();
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
