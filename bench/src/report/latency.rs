//! qperf-style TCP latency, laid out as the published comparison's table.
use std::fmt::Write;

use super::table::{self, cell};
use crate::{modes::Mode, results::Results};

/// Published figures this table is laid out to be read against.
const SEED_LATENCY: &str = "A published CNI comparison measured qperf `tcp_lat` (TCP, one \
    message in flight, half round trip) between hosts: Calico 0.046 ms, Flannel (vxlan) \
    0.379 ms. Its hosts were real machines on a real network; ours are namespaces on one VM, \
    so compare the ratio between modes, not the absolute figures.";

pub(super) fn section(r: &Results) -> String {
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
    let columns = s.latency_sizes.iter().flat_map(|size| {
        [
            format!("{size} B p50 µs"),
            format!("{size} B p50 ms"),
            format!("{size} B p99 µs"),
        ]
    });
    table::header(&mut t, "mode", columns.chain(["seeds (qperf, ms)".into()]));
    for mode in r.modes() {
        let cells = s.latency_sizes.iter().flat_map(|size| {
            let p50 = r.latency_spread(mode, *size, |l| l.p50_us);
            let p99 = r.latency_spread(mode, *size, |l| l.p99_us);
            let ms = p50
                .map(|x| format!("{:.3}", x.median / 1e3))
                .unwrap_or_else(|| "-".into());
            [cell(p50, false, 1), ms, cell(p99, false, 1)]
        });
        let seed = match mode {
            Mode::Calico => "0.046",
            Mode::FlannelVxlan => "0.379",
            _ => "",
        };
        table::row(&mut t, mode.name(), cells.chain([seed.into()]));
    }
    t
}
