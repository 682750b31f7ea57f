//! How this was measured: how the figures were made, for a reviewer to check.
use std::fmt::Write;

use crate::{
    measure::{RATE_TOLERANCE, STEAL_FLAG_PCT},
    results::Results,
};

pub(super) fn section(r: &Results) -> String {
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
            RATE_TOLERANCE * 100.0,
            STEAL_FLAG_PCT
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
