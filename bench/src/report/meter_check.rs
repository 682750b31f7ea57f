//! The softirq meter, checked against /proc/stat.
use std::fmt::Write;

use crate::{measure::MeterCheck, results::Results};

/// This kernel's tick rate (CONFIG_HZ=250): what /proc/stat samples at.
const KERNEL_HZ: f64 = 250.0;

/// The ticks that landed in softirq during the check: its share of one CPU times the ticks
/// one CPU took.
fn softirq_ticks(c: &MeterCheck) -> f64 {
    c.proc_stat_pct / 100.0 * c.seconds * KERNEL_HZ
}

/// /proc/stat's relative sampling error, %: 1/√n for n ticks counted.
fn sampling_error_pct(c: &MeterCheck) -> f64 {
    100.0 / softirq_ticks(c).max(1.0).sqrt()
}

pub(super) fn section(r: &Results) -> String {
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
