//! report.md: the tables, drawn from results.json alone (so `bench report DIR` redraws them).
use std::fmt::Write;

use crate::{
    measure::Point,
    modes::Mode,
    policy_scaling::{Engine, ScalingPoint},
    results::{Results, Spread},
    service_scaling::ServicePoint,
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
    rates: &[u64],
    title: &str,
    f: impl Fn(Mode, u64) -> (Option<Spread>, bool),
    digits: usize,
) -> String {
    let mut t = String::new();
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
        &rates_with_max(r, protocol),
        title,
        |m, rate| {
            let flagged = flag && r.any_off_target(m, protocol, rate);
            (r.spread(m, protocol, rate, measure), flagged)
        },
        digits,
    )
}

/// The columns of a protocol's tables: its paced rates, and for TCP the unpaced `max`.
fn rates_with_max(r: &Results, protocol: &str) -> Vec<u64> {
    let mut rates = r.settings.rates_for(protocol).to_vec();
    if protocol == "tcp" {
        rates.push(0);
    }
    rates
}

/// Published figures this bench's tables are laid out to be read against.
const SEED_LATENCY: &str = "A published CNI comparison measured qperf `tcp_lat` (TCP, one \
    message in flight, half round trip) between hosts: Calico 0.046 ms, Flannel (vxlan) \
    0.379 ms. Its hosts were real machines on a real network; ours are namespaces on one VM, \
    so compare the ratio between modes, not the absolute figures.";
const SEED_PPS: &str = "The XDP paper (Høiland-Jørgensen et al., CoNEXT 2018) forwarded \
    64-byte packets on one core at 1.74 Mpps through Linux's stack and 5.36 Mpps through \
    XDP (one route, real 100 Gbit/s NICs). Here every packet also crosses veth pairs and the \
    generator shares the machine's two cores.";

/// The headline: each eBPF TC mode against the kernel mode it replaces, UDP.
fn headline_section(r: &Results) -> String {
    let mut t = String::new();
    let rates = &r.settings.rates_mbps;
    writeln!(
        t,
        "\n## Headline: eBPF against the kernel mode it replaces (UDP)\n"
    )
    .unwrap();
    writeln!(
        t,
        "Kernel-level CPU per packet the server received, above the floor measured beside \
         each point: mean over repetitions of the eBPF mode / mean of the baseline, with its \
         95 % bootstrap interval (repetitions resampled, {} resamples) in brackets; `raw` is \
         the same ratio without subtracting the floor. Repetitions where any of the four \
         points (mode, baseline, and the floor beside each) missed its rate are left out and \
         counted. Lower is better; 1 is the same cost. The XDP modes have no ratio: on veth \
         they run with changed offloads that neither the floor nor the baselines have.\n",
        2000
    )
    .unwrap();
    write!(t, "| eBPF / baseline \\ Mbit/s |").unwrap();
    for rate in rates {
        write!(t, " {rate} |").unwrap();
    }
    writeln!(t, "\n|---|{}", "---|".repeat(rates.len())).unwrap();
    let mut per_rep = String::new();
    for mode in r.modes() {
        let Some(base) = mode.baseline() else {
            continue;
        };
        write!(t, "| {} / {} |", mode.name(), base.name()).unwrap();
        for rate in rates {
            match r.headline(mode, "udp", *rate) {
                Some(h) => {
                    let left_out = if h.excluded > 0 {
                        format!(", {} rep. left out", h.excluded)
                    } else {
                        String::new()
                    };
                    write!(
                        t,
                        " **{:.2}** [{:.2}-{:.2}]; raw {:.2} [{:.2}-{:.2}]; n={}{left_out} |",
                        h.ratio,
                        h.low,
                        h.high,
                        h.raw,
                        h.raw_low,
                        h.raw_high,
                        h.per_repetition.len()
                    )
                    .unwrap();
                    writeln!(
                        per_rep,
                        "- {} / {} at {rate} Mbit/s: {}",
                        mode.name(),
                        base.name(),
                        h.per_repetition
                            .iter()
                            .map(|x| format!("{x:.2}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                    .unwrap();
                }
                None => write!(t, " - (no repetition held its rate) |").unwrap(),
            }
        }
        writeln!(t).unwrap();
    }
    if !per_rep.is_empty() {
        writeln!(t, "\nEach repetition's own above-floor ratio:\n\n{per_rep}").unwrap();
    }
    t
}

/// What each measured mode has of its product and what it lacks.
fn modes_section(r: &Results) -> String {
    let mut t = String::from("\n## The modes\n\n| mode | has | lacks |\n|---|---|---|\n");
    for mode in r.modes() {
        let (has, lacks) = mode.fidelity();
        writeln!(t, "| {} | {has} | {lacks} |", mode.name()).unwrap();
    }
    t
}

/// Small packets at the generator's maximum rate.
fn small_packet_section(r: &Results) -> String {
    use crate::measure::SMALL_PACKETS as P;
    let mut t = String::new();
    writeln!(
        t,
        "\n## Small packets: {}-byte frames, as fast as one sender goes\n",
        r.settings.small_payload + 46
    )
    .unwrap();
    writeln!(
        t,
        "UDP with {} bytes of payload (14 Ethernet + 20 IPv4 + 8 UDP + payload + 4 FCS), one \
         iperf3 sender unpaced, {} s per repetition, beside a floor point. Packets are counted \
         on the devices: sent by the client's interface, received by the server's. **Forwarding \
         capacity** is packets per second per core of kernel-level CPU spent forwarding: 10⁹ / \
         (softirq ns per packet above the floor), the XDP paper's measure. {SEED_PPS}\n",
        r.settings.small_payload, r.settings.duration_s
    )
    .unwrap();
    writeln!(
        t,
        "| mode | sent kpps | received kpps | lost on the path % | not read by the receiver % | softirq CPU % | ns/packet | ns/packet above floor | Mpps per core forwarding |"
    )
    .unwrap();
    writeln!(t, "|---|---|---|---|---|---|---|---|---|").unwrap();
    let spread = |mode: Mode, f: &dyn Fn(&crate::measure::Point) -> f64| {
        Spread::of(
            r.small_packets
                .iter()
                .filter(|p| p.mode == mode.name() && p.protocol == P)
                .map(f)
                .collect(),
        )
    };
    for mode in r.modes() {
        let kpps = |n: u64, p: &crate::measure::Point| n as f64 / p.duration_s / 1e3;
        let sent = spread(mode, &|p| kpps(p.client_tx_packets, p));
        let received = spread(mode, &|p| kpps(p.server_rx_packets, p));
        let path_loss = spread(mode, &|p| {
            (p.client_tx_packets.saturating_sub(p.server_rx_packets)) as f64
                / p.client_tx_packets.max(1) as f64
                * 100.0
        });
        let unread = spread(mode, &|p| {
            let delivered = p.packets.saturating_sub(p.lost_packets);
            p.server_rx_packets.saturating_sub(delivered) as f64 / p.server_rx_packets.max(1) as f64
                * 100.0
        });
        let cpu = spread(mode, &|p| p.softirq_cpu_pct);
        let ns = spread(mode, &|p| p.softirq_ns_per_packet);
        let (above, capacity) = if mode == Mode::Floor {
            (None, None)
        } else {
            let above = r.above_floor_per_packet(mode, P, 0);
            let capacity = Spread::of(
                r.paired(mode, P, 0, |p| p.softirq_ns_per_packet)
                    .into_iter()
                    .map(|(_, m, f, _)| if m > f { 1e3 / (m - f) } else { f64::NAN })
                    .collect(),
            );
            (above, capacity)
        };
        writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            mode.name(),
            cell(sent, false, 0),
            cell(received, false, 0),
            cell(path_loss, false, 1),
            cell(unread, false, 1),
            cell(cpu, false, 1),
            cell(ns, false, 0),
            cell(above, false, 0),
            cell(capacity, false, 2)
        )
        .unwrap();
    }
    writeln!(
        t,
        "\nWhere the packets stop: `lost on the path` is what the client's interface sent and the \
         server's never received (a queue on the way overflowed: the forwarding could not keep \
         up); `not read` is what reached the server's interface but not iperf3 (its socket \
         buffer overflowed: the receiver, not the dataplane). With both near zero the sender \
         is the limit, and the per-packet figures, not the rate, carry the comparison."
    )
    .unwrap();
    t
}

/// qperf-style TCP latency, laid out as the published comparison's table.
fn latency_section(r: &Results) -> String {
    let s = &r.settings;
    let mut t = String::new();
    writeln!(
        t,
        "\n## Latency: TCP request/response (qperf `tcp_lat` style)\n"
    )
    .unwrap();
    writeln!(
        t,
        "One TCP connection (Nagle off), one message in flight, the server echoing each; {} \
         timed transactions per size and repetition after 50 of warm-up; **half** the round trip, \
         as qperf reports it, in µs (ms in the seeds' unit beside). Median over repetitions of \
         each repetition's p50 and p99. {SEED_LATENCY}\n",
        s.latency_count
    )
    .unwrap();
    write!(t, "| mode |").unwrap();
    for size in &s.latency_sizes {
        write!(t, " {size} B p50 µs | {size} B p50 ms | {size} B p99 µs |").unwrap();
    }
    writeln!(t, " seeds (qperf, ms) |").unwrap();
    writeln!(
        t,
        "|---|{}---|",
        "---|---|---|".repeat(s.latency_sizes.len())
    )
    .unwrap();
    for mode in r.modes() {
        write!(t, "| {} |", mode.name()).unwrap();
        for size in &s.latency_sizes {
            let p50 = r.latency_spread(mode, *size, |l| l.p50_us);
            let p99 = r.latency_spread(mode, *size, |l| l.p99_us);
            let ms = p50
                .map(|x| format!("{:.3}", x.median / 1e3))
                .unwrap_or_else(|| "-".into());
            write!(
                t,
                " {} | {ms} | {} |",
                cell(p50, false, 1),
                cell(p99, false, 1)
            )
            .unwrap();
        }
        let seed = match mode {
            Mode::Calico => "0.046",
            Mode::FlannelVxlan => "0.379",
            _ => "",
        };
        writeln!(t, " {seed} |").unwrap();
    }
    t
}

/// The per-path program costs as a table: one row per path, TC and XDP side by side.
pub fn path_costs_table(costs: &[dataplane::kernel::path_costs::PathCost]) -> String {
    let mut t = String::from(
        "| path | TC ns per run, p50 (p10-p90) | XDP ns per run, p50 (p10-p90) |\n|---|---|---|\n",
    );
    let mut paths: Vec<&str> = Vec::new();
    for c in costs {
        if !paths.contains(&c.path.as_str()) {
            paths.push(&c.path);
        }
    }
    for path in paths {
        let at = |hook: &str| {
            costs
                .iter()
                .find(|c| c.path == path && c.hook == hook)
                .map(|c| format!("{:.0} ({:.0}-{:.0})", c.p50_ns, c.p10_ns, c.p90_ns))
                .unwrap_or_else(|| "-".into())
        };
        writeln!(t, "| {path} | {} | {} |", at("tc"), at("xdp")).unwrap();
    }
    t
}

fn path_costs_section(r: &Results) -> String {
    let mut t = String::from("\n## The programs' cost per path (BPF_PROG_TEST_RUN)\n\n");
    writeln!(
        t,
        "Each path's program run on crafted frames of the synthetic host (a local workload, a \
         routed and a VXLAN remote prefix, a UDP service; 74-byte UDP frames, the policy and \
         service paths' 58, the VXLAN one 124), {} \
         runs per path and hook (the paths taking turns), each a fresh copy of the frame and its \
         verdict checked; the kernel's timing of the program alone, ns, p50 (p10-p90) of the \
         quietest batch of 2000 runs (noise only adds time). No traffic, so the figure moves with the \
         code, not with the machine's load: this is the table that shows a hot-path change. \
         `bench paths` prints it alone in seconds.\n",
        r.settings.path_runs
    )
    .unwrap();
    t.push_str(&path_costs_table(&r.path_costs));
    t
}

/// The route table's scale: loading N prefixes, and a packet's cost with them in the map.
fn route_scale_section(r: &Results) -> String {
    let s = &r.settings;
    let mut t = String::new();
    writeln!(t, "\n## Route table scale\n").unwrap();
    writeln!(
        t,
        "`ebpf-routed-tc` with N /32 prefixes the traffic never matches added to both hosts' \
         tables (the route map sized to hold them), UDP at {} Mbit/s. Load: host 0's table \
         parsed, resolved against the kernel (one neighbour query per next hop) and written \
         into the maps, ms. Per packet: the programs' run time (a pass with BPF statistics on) \
         and kernel-level CPU per packet received (statistics off), ns. Median (min-max) over \
         repetitions.\n",
        crate::route_scale::RATE_MBPS
    )
    .unwrap();
    writeln!(
        t,
        "| prefixes added | routes in the map | parse ms | resolve ms | write to maps ms | BPF ns per run | softirq ns per packet |"
    )
    .unwrap();
    writeln!(t, "|---|---|---|---|---|---|---|").unwrap();
    for &extra in &s.route_scale {
        let f = |g: fn(&crate::route_scale::RouteScalePoint) -> f64| r.route_scale_spread(extra, g);
        writeln!(
            t,
            "| {extra} | {} | {} | {} | {} | {} | {} |",
            cell(f(|p| p.load.routes as f64), false, 0),
            cell(f(|p| p.load.parse_ms), false, 1),
            cell(f(|p| p.load.resolve_ms), false, 1),
            cell(f(|p| p.load.apply_ms), false, 1),
            cell(f(|p| p.bpf_ns_per_run), false, 0),
            cell(f(|p| p.softirq_ns_per_packet), false, 0)
        )
        .unwrap();
    }
    t
}

/// This kernel's tick rate (CONFIG_HZ=250): what /proc/stat samples at.
const KERNEL_HZ: f64 = 250.0;

/// The ticks that landed in softirq during the check: its share of one CPU times the ticks
/// one CPU took.
fn softirq_ticks(c: &crate::measure::MeterCheck) -> f64 {
    c.proc_stat_pct / 100.0 * c.seconds * KERNEL_HZ
}

/// /proc/stat's relative sampling error, %: 1/√n for n ticks counted.
fn sampling_error_pct(c: &crate::measure::MeterCheck) -> f64 {
    100.0 / softirq_ticks(c).max(1.0).sqrt()
}

/// The softirq meter against /proc/stat.
fn meter_check_section(r: &Results) -> String {
    let mut t = String::from("\n## The softirq meter, checked\n\n");
    match &r.meter_check {
        None => writeln!(t, "Not run (`--meter-check 0` or `--quick`).").unwrap(),
        Some(c) => {
            let agreement = if c.proc_stat_pct > 0.0 {
                format!(
                    "{:+.1} %",
                    (c.meter_all_pct / c.proc_stat_pct - 1.0) * 100.0
                )
            } else {
                "- (/proc/stat saw no softirq)".into()
            };
            writeln!(
                t,
                "UDP at 1 Gbit/s through `{}` for {:.1} s. The meter (raw tracepoints on \
                 softirq_entry/exit, every vector): **{:.2} %** of one CPU; /proc/stat's softirq \
                 column over the same window: **{:.2} %** ({} jiffies of machine time). Meter \
                 against /proc/stat: **{agreement}**, where /proc/stat's own sampling error is \
                 about ±{:.1} %. The network vectors alone (the bench's figure): {:.2} %. \
                 /proc/stat here counts whole ticks (no IRQ time accounting): a tick that lands \
                 in softirq charges its jiffy there, so over a long window it estimates the time \
                 the meter measures, with the error of counting n ≈ {:.0} ticks at this \
                 kernel's {KERNEL_HZ} Hz (1/√n).",
                c.mode,
                c.seconds,
                c.meter_all_pct,
                c.proc_stat_pct,
                c.ticks,
                sampling_error_pct(c),
                c.meter_net_pct,
                softirq_ticks(c)
            )
            .unwrap();
        }
    }
    t
}

/// How the figures were made, for a reviewer to check.
fn method_section(r: &Results) -> String {
    let s = &r.settings;
    let mut t = String::from("\n## How this was measured\n\n");
    let lines = [
        format!(
            "Run: {} repetition(s); in each, the modes in a shuffled order (seed {}, \
             `--seed` repeats it), every mode on a fresh bed; within a mode, its points in a \
             shuffled order. {} s of traffic per point. Took {:.0} s.",
            s.repetitions, s.order_seed, s.duration_s, r.duration_s
        ),
        "Floor: two namespaces on one veth pair, built once and left idle between its points; \
         a floor point is measured beside every point of every mode (same protocol and rate, \
         immediately before or after it, which one drawn), and the above-floor figures \
         subtract that point's floor, repetition by repetition."
            .into(),
        "CPU: nanoseconds in the NET_RX and NET_TX softirqs on all CPUs, from raw tracepoint \
         programs on softirq_entry/exit (the bench's own probe, checked against /proc/stat \
         below), BPF run-time statistics off. The programs' run time per run comes from a \
         separate 1 s pass per paced point with the statistics on."
            .into(),
        "Per packet: softirq time / packets the server's interface received (device \
         counters), so a point that delivered fewer packets is not credited with less work. \
         On TCP the device counts GSO segments, not wire packets: TCP is compared per Gbit/s, \
         not per packet."
            .into(),
        format!(
            "Rate held: a UDP or paced TCP point more than {} % off its rate is flagged (⚑) and \
             left out of the headline. Steal: /proc/stat's steal column per point; points with \
             more than {} % of a CPU stolen are listed below.",
            crate::measure::RATE_TOLERANCE * 100.0,
            crate::measure::STEAL_FLAG_PCT
        ),
        format!(
            "Intervals: 95 % percentile bootstrap over repetitions (pairs kept together). With \
             {} repetition(s) an interval lies within the range of the single repetitions' \
             ratios: read it as the spread of the evidence, not as a precise confidence \
             level.",
            s.repetitions
        ),
        "Offloads: every mode runs with the kernel's defaults on its interfaces except the XDP \
         modes (GRO on, workload TX checksum off: XDP on veth needs them), which therefore \
         have no ratio."
            .into(),
    ];
    for l in lines {
        writeln!(t, "- {l}").unwrap();
    }
    t
}

/// A point's mode, and for a floor point the mode it was measured beside.
fn point_name(p: &crate::measure::Point) -> String {
    if p.beside.is_empty() {
        p.mode.clone()
    } else {
        format!("{} (beside {})", p.mode, p.beside)
    }
}

/// Steal above which a point is listed by name (the others are counted).
const STEAL_LIST_PCT: f64 = 5.0;

/// Points the reader should discount: off their rate, or with time stolen.
fn flagged_section(r: &Results) -> String {
    let mut t = String::new();
    let all = || r.points.iter().chain(&r.small_packets);
    writeln!(t, "\n## Points off their target rate (more than 2 %)\n").unwrap();
    let off: Vec<String> = all()
        .filter(|p| p.off_target)
        .map(|p| {
            format!(
                "{} {} {} Mbit/s rep {}: {:.1} Mbit/s",
                point_name(p),
                p.protocol,
                p.rate_mbps,
                p.repetition,
                p.achieved_mbps
            )
        })
        .collect();
    if off.is_empty() {
        writeln!(t, "None.").unwrap();
    }
    for f in off {
        writeln!(t, "- {f}").unwrap();
    }
    writeln!(
        t,
        "\n## Points with steal (more than {} % of a CPU)\n",
        crate::measure::STEAL_FLAG_PCT
    )
    .unwrap();
    let stolen: Vec<&crate::measure::Point> = all()
        .filter(|p| p.steal_pct > crate::measure::STEAL_FLAG_PCT)
        .collect();
    if stolen.is_empty() {
        writeln!(t, "None.").unwrap();
    } else {
        writeln!(
            t,
            "{} of {} points; those with more than {STEAL_LIST_PCT} % of a CPU stolen:\n",
            stolen.len(),
            all().count()
        )
        .unwrap();
        for p in stolen.iter().filter(|p| p.steal_pct > STEAL_LIST_PCT) {
            writeln!(
                t,
                "- {} {} {} rep {}: {:.1} %",
                point_name(p),
                p.protocol,
                p.rate_mbps,
                p.repetition,
                p.steal_pct
            )
            .unwrap();
        }
    }
    t
}

pub fn render(r: &Results) -> String {
    let s = &r.settings;
    let mut t = String::new();
    writeln!(t, "# Bench: CPU per packet, kernel vs eBPF dataplanes\n").unwrap();
    writeln!(
        t,
        "Kernel {}, {} CPUs. Modes: {}. UDP (1400-byte datagrams) at {:?} Mbit/s, TCP paced at \
         {:?} Mbit/s and unpaced (`max`), from iperf3; {} repetition(s) of {} s per point. \
         Traffic crosses hosts (client workload on host 0, server on host 1; floor: a bare veth \
         pair). Cells: median (min-max) over repetitions; ⚑ marks a point that missed its \
         rate by more than 2 % in at least one repetition. How every figure was made: the last \
         section.\n",
        r.kernel,
        r.cpus,
        s.modes
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        s.rates_mbps,
        s.tcp_rates_mbps,
        s.repetitions,
        s.duration_s
    )
    .unwrap();
    t.push_str(&headline_section(r));
    t.push_str(&small_packet_section(r));
    t.push_str(&latency_section(r));
    t.push_str(&modes_section(r));
    writeln!(
        t,
        "\nTCP and UDP are shown apart: in the kernel modes and the eBPF TC modes a TCP stream \
         rides on GSO/TSO (a few large packets); the eBPF XDP modes on veth give GSO up and \
         carry the same stream in many MTU-sized frames, so their TCP cost is a packet-count \
         effect, not a per-packet one. Compare per-packet costs on UDP.\n"
    )
    .unwrap();

    for protocol in &s.protocols {
        let p = protocol.as_str();
        let rates = rates_with_max(r, p);
        writeln!(t, "\n## {} in detail\n", p.to_uppercase()).unwrap();
        t.push_str(&rate_table(
            r,
            &rates,
            &format!(
                "{p}: kernel-level CPU above the floor beside it, % of one CPU (the dataplane's own cost)"
            ),
            |m, rate| {
                if m == Mode::Floor {
                    (None, false)
                } else {
                    (r.above_floor(m, p, rate), r.any_off_target(m, p, rate))
                }
            },
            2,
        ));
        if p == "udp" {
            t.push_str(&measure_table(
                r,
                p,
                "udp: kernel-level CPU per packet received, ns",
                |x| x.softirq_ns_per_packet,
                true,
                0,
            ));
            t.push_str(&rate_table(
                r,
                &rates,
                "udp: kernel-level CPU per packet above the floor beside it, ns",
                |m, rate| {
                    if m == Mode::Floor {
                        (None, false)
                    } else {
                        (
                            r.above_floor_per_packet(m, p, rate),
                            r.any_off_target(m, p, rate),
                        )
                    }
                },
                0,
            ));
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
            &rates,
            &format!("{p}: BPF run time per program run, ns (eBPF modes, separate pass)"),
            |m, rate| {
                // Unpaced TCP gets no run-time pass: no cell rather than a 0.
                let runs: Vec<f64> = r
                    .points_at(m, p, rate)
                    .into_iter()
                    .filter(|x| x.bpf_run_count > 0)
                    .map(|x| x.bpf_ns_per_run)
                    .collect();
                (m.attach().and_then(|_| Spread::of(runs)), false)
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

    writeln!(t, "\n## Bandwidth and loss\n").unwrap();
    let loss_rate = s
        .rates_mbps
        .iter()
        .copied()
        .find(|r| *r >= 100)
        .unwrap_or(0);
    writeln!(
        t,
        "| mode | max TCP Gbit/s | UDP loss % at {loss_rate} Mbit/s | UDP jitter ms at {loss_rate} Mbit/s |"
    )
    .unwrap();
    writeln!(t, "|---|---|---|---|").unwrap();
    for mode in r.modes() {
        let max_tcp = r.spread(mode, "tcp", 0, |p| p.achieved_mbps / 1000.0);
        let loss = r.spread(mode, "udp", loss_rate, |p| {
            if p.packets > 0 {
                p.lost_packets as f64 / p.packets as f64 * 100.0
            } else {
                f64::NAN
            }
        });
        let jitter = r.spread(mode, "udp", loss_rate, |p| p.jitter_ms);
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

    if !s.policy_rules.is_empty() {
        t.push_str(&policy_section(r));
    }
    if !s.service_counts.is_empty() {
        t.push_str(&service_section(r));
    }

    if !r.path_costs.is_empty() {
        t.push_str(&path_costs_section(r));
    }
    if !s.route_scale.is_empty() {
        t.push_str(&route_scale_section(r));
    }
    t.push_str(&meter_check_section(r));
    t.push_str(&flagged_section(r));
    t.push_str(&method_section(r));
    writeln!(
        t,
        "\nCharts: headline_ratio_udp, cpu_vs_rate_<proto>, above_floor_<proto>, latency, \
         policy_new_flow_latency, policy_cpu_per_gbps, services_connect_latency, \
         services_cpu_per_connection, services_load_time, services_change_time (PNG and SVG). \
         Raw data: results.json, results.csv."
    )
    .unwrap();
    t
}

/// A table of the service sweep: title, the measure, digits.
type ServiceTable = (&'static str, fn(&ServicePoint) -> f64, usize);

/// The service scaling tables: one row per engine, one column per service count.
fn service_section(r: &Results) -> String {
    let s = &r.settings;
    let mut t = String::new();
    writeln!(t, "\n## Service scaling (kube-proxy against eBPF)\n").unwrap();
    writeln!(
        t,
        "The client's host holds N services of three backends each that the traffic never asks \
         for, and the two it does, last in kube-proxy's `KUBE-SERVICES` order (its iptables \
         mode matches that chain rule by rule: the worst case; its nftables mode looks the \
         service up in one verdict map; the eBPF programs in one hash). Engines: \
         `kube-proxy-iptables` (kube-proxy's chains, `statistic` random endpoint choice, DNAT, \
         loaded with iptables-restore), `kube-proxy-nftables` (its `service-ips` map and \
         `numgen random` verdict maps, nft -f), `ebpf` (the dataplane's service maps, TC). \
         New connections: {} per point one after another (netperf's TCP_CRR: connect, a byte \
         each way, close); stream: TCP at {} Mbit/s through a service for {} s; the endpoint \
         change adds a backend to the measured service the way each engine does it \
         (kube-proxy's partial iptables restore with `KUBE-SERVICES` whole, its nftables \
         transaction of the one service's chains, the loader's map diff).\n",
        s.service_connections, s.service_rate_mbps, s.duration_s
    )
    .unwrap();
    let tables: [ServiceTable; 7] = [
        (
            "New connection, whole transaction p50, µs",
            |p| p.connect.p50_us,
            1,
        ),
        ("New connection, p99, µs", |p| p.connect.p99_us, 1),
        (
            "New connections per second (one at a time)",
            |p| p.connections_per_s,
            0,
        ),
        (
            "Kernel-level CPU per new connection, µs",
            |p| p.cpu_us_per_connection,
            1,
        ),
        (
            "Established stream: kernel-level CPU per Gbit/s, % of one CPU",
            |p| p.stream_cpu_pct_per_gbps,
            2,
        ),
        ("Loading all N services, ms", |p| p.load_ms, 1),
        ("Applying one endpoint change at N, ms", |p| p.change_ms, 1),
    ];
    for (title, f, digits) in tables {
        writeln!(t, "\n#### {title}\n").unwrap();
        write!(t, "| engine \\ services |").unwrap();
        for n in &s.service_counts {
            write!(t, " {n} |").unwrap();
        }
        writeln!(t, "\n|---|{}", "---|".repeat(s.service_counts.len())).unwrap();
        for engine in &s.service_engines {
            write!(t, "| {} |", engine.name()).unwrap();
            for n in &s.service_counts {
                let spread = r.service_spread(*engine, *n, f);
                write!(t, " {} |", cell(spread, false, digits)).unwrap();
            }
            writeln!(t).unwrap();
        }
    }
    writeln!(
        t,
        "\nWhat to take from it: a connection's cost in kube-proxy's iptables mode grows with \
         the services ahead of its own in `KUBE-SERVICES`, and every endpoint change rewrites \
         that chain; the nftables mode and the eBPF maps look a service up in one step, so \
         their per-connection cost stays flat, and what differs between those two is the base \
         cost of the path and the time to load or change services. An established connection \
         meets none of this (conntrack or the flow maps carry it)."
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
    let tables: [ScalingTable; 7] = [
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
    // Each engine against its own N=0: what the rules add, whatever the engine's base cost.
    let relative: [ScalingTable; 2] = [
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
    if let Some(&first) = s.policy_rules.first() {
        for (title, f, digits) in relative {
            header(&mut t, title);
            for engine in &s.policy_engines {
                write!(t, "| {} |", engine.name()).unwrap();
                let base = r.scaling_spread(*engine, first, f).map(|b| b.median);
                for n in &s.policy_rules {
                    let cell = match (base, r.scaling_spread(*engine, *n, f)) {
                        (Some(b), Some(x)) => format!("{:+.d$}", x.median - b, d = digits),
                        _ => "-".into(),
                    };
                    write!(t, " {cell} |").unwrap();
                }
                writeln!(t).unwrap();
            }
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
