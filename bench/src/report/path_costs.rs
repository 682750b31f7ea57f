//! The programs' cost per path, BPF_PROG_TEST_RUN on crafted frames: the table alone is what
//! `bench paths` prints.
use std::fmt::Write;

use dataplane::kernel::path_costs::PathCost;

use super::table;
use crate::results::Results;

pub(super) fn section(r: &Results) -> String {
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

/// The per-path program costs as a table: one row per path, TC and XDP side by side.
pub fn path_costs_table(costs: &[PathCost]) -> String {
    let mut t = String::new();
    table::header(
        &mut t,
        "path",
        [
            "TC ns per run, p50 (p10-p90)",
            "XDP ns per run, p50 (p10-p90)",
        ],
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
        table::row(&mut t, path, [at("tc"), at("xdp")]);
    }
    t
}
