//! The route table's scale: loading N prefixes, and a packet's cost with them in the map.
use std::fmt::Write;

use super::table::{self, cell};
use crate::{
    results::Results,
    route_scale::{RATE_MBPS, RouteScalePoint},
};

pub(super) fn section(r: &Results) -> String {
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
        RATE_MBPS
    )
    .unwrap();
    table::header(
        &mut t,
        "prefixes added",
        [
            "routes in the map",
            "parse ms",
            "resolve ms",
            "write to maps ms",
            "BPF ns per run",
            "softirq ns per packet",
        ],
    );
    for &extra in &r.settings.route_scale {
        let f = |g: fn(&RouteScalePoint) -> f64| r.route_scale_spread(extra, g);
        table::row(
            &mut t,
            extra,
            [
                cell(f(|p| p.load.routes as f64), false, 0),
                cell(f(|p| p.load.parse_ms), false, 1),
                cell(f(|p| p.load.resolve_ms), false, 1),
                cell(f(|p| p.load.apply_ms), false, 1),
                cell(f(|p| p.bpf_ns_per_run), false, 0),
                cell(f(|p| p.softirq_ns_per_packet), false, 0),
            ],
        );
    }
    t
}
