//! Each protocol in detail: CPU against rate, one row per mode, one column per rate.
use std::fmt::Write;

use super::table::{self, cell};
use crate::{
    measure::Point,
    modes::Mode,
    results::{Results, Spread},
};

pub(super) fn section(r: &Results) -> String {
    let mut t = String::new();
    writeln!(
        t,
        "\nTCP and UDP are shown apart: in the kernel modes and the eBPF TC modes a TCP stream \
         rides on GSO/TSO (a few large packets); the eBPF XDP modes on veth give GSO up and \
         carry the same stream in many MTU-sized frames, so their TCP cost is a packet-count \
         effect, not a per-packet one. Compare per-packet costs on UDP.\n"
    )
    .unwrap();
    for protocol in &r.settings.protocols {
        t.push_str(&protocol_section(r, protocol));
    }
    t
}

/// One protocol's tables.
fn protocol_section(r: &Results, p: &str) -> String {
    let rates = rates_with_max(r, p);
    let mut t = format!("\n## {} in detail\n\n", p.to_uppercase());
    t.push_str(&rate_table(
        r,
        &rates,
        &format!(
            "{p}: kernel-level CPU above the floor beside it, % of one CPU (the dataplane's own cost)"
        ),
        above_floor(r, p, Results::above_floor),
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
            above_floor(r, p, Results::above_floor_per_packet),
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
    t
}

/// The cells of a figure above the floor beside each point, flagged where the mode's point
/// missed its rate; none for the floor itself.
fn above_floor<'a>(
    r: &'a Results,
    p: &'a str,
    figure: fn(&Results, Mode, &str, u64) -> Option<Spread>,
) -> impl Fn(Mode, u64) -> (Option<Spread>, bool) + 'a {
    move |m, rate| {
        if m == Mode::Floor {
            (None, false)
        } else {
            (figure(r, m, p, rate), r.any_off_target(m, p, rate))
        }
    }
}

/// The columns of a protocol's tables: its paced rates, and for TCP the unpaced `max`.
fn rates_with_max(r: &Results, protocol: &str) -> Vec<u64> {
    let mut rates = r.settings.rates_for(protocol).to_vec();
    if protocol == "tcp" {
        rates.push(0);
    }
    rates
}

fn rate_name(rate: u64) -> String {
    if rate == 0 {
        "max".into()
    } else {
        format!("{rate}")
    }
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
    let f = &f;
    let rows = r.modes().into_iter().map(|mode| {
        let cells = rates.iter().map(move |rate| {
            let (s, flagged) = f(mode, *rate);
            cell(s, flagged, digits)
        });
        (mode.name(), cells)
    });
    let mut t = String::new();
    let columns = rates.iter().map(|rate| rate_name(*rate));
    table::titled(&mut t, title, "mode \\ Mbit/s", columns, rows);
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
