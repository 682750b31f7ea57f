//! Bandwidth and loss: unpaced TCP's rate, UDP's loss and jitter at one rate.
use std::fmt::Write;

use super::table::{self, cell};
use crate::results::Results;

pub(super) fn section(r: &Results) -> String {
    let mut t = String::new();
    writeln!(t, "\n## Bandwidth and loss\n").unwrap();
    let loss_rate = r
        .settings
        .rates_mbps
        .iter()
        .copied()
        .find(|r| *r >= 100)
        .unwrap_or(0);
    table::header(
        &mut t,
        "mode",
        [
            "max TCP Gbit/s".into(),
            format!("UDP loss % at {loss_rate} Mbit/s"),
            format!("UDP jitter ms at {loss_rate} Mbit/s"),
        ],
    );
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
        table::row(
            &mut t,
            mode.name(),
            [
                cell(max_tcp, false, 2),
                cell(loss, false, 3),
                cell(jitter, false, 4),
            ],
        );
    }
    t
}
