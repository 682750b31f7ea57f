//! report.md: the tables, drawn from results.json alone (so `bench report DIR` redraws them).
//! One module per section, in the order they appear; the table pieces they share in [`table`].
mod bandwidth;
mod detail;
mod fidelity;
mod flagged;
mod headline;
mod intro;
mod latency;
mod meter_check;
mod method;
mod path_costs;
mod policy;
mod routes;
mod services;
mod small_packets;
mod table;

pub use path_costs::path_costs_table;

use crate::results::Results;

/// The report's last lines: the files written beside it.
const FILES: &str = "\nCharts: headline_ratio_udp, cpu_vs_rate_<proto>, above_floor_<proto>, \
    latency, policy_new_flow_latency, policy_cpu_per_gbps, services_connect_latency, \
    services_cpu_per_connection, services_load_time, services_change_time (PNG and SVG). \
    Raw data: results.json, results.csv.\n";

pub fn render(r: &Results) -> String {
    let s = &r.settings;
    let mut sections = vec![
        intro::section(r),
        headline::section(r),
        small_packets::section(r),
        latency::section(r),
        fidelity::section(r),
        detail::section(r),
        bandwidth::section(r),
    ];
    if !s.policy_rules.is_empty() {
        sections.push(policy::section(r));
    }
    if !s.service_counts.is_empty() {
        sections.push(services::section(r));
    }
    if !r.path_costs.is_empty() {
        sections.push(path_costs::section(r));
    }
    if !s.route_scale.is_empty() {
        sections.push(routes::section(r));
    }
    sections.extend([
        meter_check::section(r),
        flagged::section(r),
        method::section(r),
        FILES.into(),
    ]);
    sections.concat()
}
