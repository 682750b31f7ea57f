//! The headline: each eBPF TC mode against the kernel mode it replaces, UDP.
use std::fmt::Write;

use super::table;
use crate::results::{Headline, Results};

pub(super) fn section(r: &Results) -> String {
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
    table::header(&mut t, "eBPF / baseline \\ Mbit/s", rates);
    let mut per_rep = String::new();
    for mode in r.modes() {
        let Some(base) = mode.baseline() else {
            continue;
        };
        let name = format!("{} / {}", mode.name(), base.name());
        let mut cells = Vec::new();
        for rate in rates {
            let Some(h) = r.headline(mode, "udp", *rate) else {
                cells.push("- (no repetition held its rate)".to_string());
                continue;
            };
            cells.push(ratio_cell(&h));
            let each: Vec<String> = h.per_repetition.iter().map(|x| format!("{x:.2}")).collect();
            writeln!(per_rep, "- {name} at {rate} Mbit/s: {}", each.join(", ")).unwrap();
        }
        table::row(&mut t, &name, cells);
    }
    if !per_rep.is_empty() {
        writeln!(t, "\nEach repetition's own above-floor ratio:\n\n{per_rep}").unwrap();
    }
    t
}

/// The ratio above the floor and raw, each with its interval, the repetitions counted and
/// those left out.
fn ratio_cell(h: &Headline) -> String {
    let left_out = if h.excluded > 0 {
        format!(", {} rep. left out", h.excluded)
    } else {
        String::new()
    };
    format!(
        "**{:.2}** [{:.2}-{:.2}]; raw {:.2} [{:.2}-{:.2}]; n={}{left_out}",
        h.ratio,
        h.low,
        h.high,
        h.raw,
        h.raw_low,
        h.raw_high,
        h.per_repetition.len()
    )
}
