//! Points the reader should discount: off their rate, or with time stolen.
use std::fmt::Write;

use crate::{
    measure::{Point, STEAL_FLAG_PCT},
    results::Results,
};

/// Steal above which a point is listed by name (the others are counted).
const STEAL_LIST_PCT: f64 = 5.0;

/// A point's mode, and for a floor point the mode it was measured beside.
fn point_name(p: &Point) -> String {
    if p.beside.is_empty() {
        p.mode.clone()
    } else {
        format!("{} (beside {})", p.mode, p.beside)
    }
}

pub(super) fn section(r: &Results) -> String {
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
        STEAL_FLAG_PCT
    )
    .unwrap();
    let stolen: Vec<&Point> = all().filter(|p| p.steal_pct > STEAL_FLAG_PCT).collect();
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
