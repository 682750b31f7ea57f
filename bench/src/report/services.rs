//! Service scaling, kube-proxy against eBPF: one row per engine, one column per service count.
use std::fmt::Write;

use super::table::{self, cell};
use crate::{results::Results, service_scaling::ServicePoint};

/// A table of the service sweep: title, the measure, digits.
type ServiceTable = (&'static str, fn(&ServicePoint) -> f64, usize);

const TABLES: [ServiceTable; 7] = [
    (
        "New connection, whole transaction p50, µs",
        |p| p.connect.p50_us,
        1,
    ),
    ("New connection, p99, µs", |p| p.connect.p99_us, 1),
    (
        "New connections per second (one at a time)",
        |p| p.connections_per_s,
        0,
    ),
    (
        "Kernel-level CPU per new connection, µs",
        |p| p.cpu_us_per_connection,
        1,
    ),
    (
        "Established stream: kernel-level CPU per Gbit/s, % of one CPU",
        |p| p.stream_cpu_pct_per_gbps,
        2,
    ),
    ("Loading all N services, ms", |p| p.load_ms, 1),
    ("Applying one endpoint change at N, ms", |p| p.change_ms, 1),
];

pub(super) fn section(r: &Results) -> String {
    let s = &r.settings;
    let mut t = String::new();
    writeln!(t, "\n## Service scaling (kube-proxy against eBPF)\n").unwrap();
    writeln!(
        t,
        "The client's host holds N services of three backends each that the traffic never asks \
         for, and the two it does, last in kube-proxy's `KUBE-SERVICES` order (its iptables \
         mode matches that chain rule by rule: the worst case; its nftables mode looks the \
         service up in one verdict map; the eBPF programs in one hash). Engines: \
         `kube-proxy-iptables` (kube-proxy's chains, `statistic` random endpoint choice, DNAT, \
         loaded with iptables-restore), `kube-proxy-nftables` (its `service-ips` map and \
         `numgen random` verdict maps, nft -f), `ebpf` (the dataplane's service maps, TC). \
         New connections: {} per point one after another (netperf's TCP_CRR: connect, a byte \
         each way, close); stream: TCP at {} Mbit/s through a service for {} s; the endpoint \
         change adds a backend to the measured service the way each engine does it \
         (kube-proxy's partial iptables restore with `KUBE-SERVICES` whole, its nftables \
         transaction of the one service's chains, the loader's map diff).\n",
        s.service_connections, s.service_rate_mbps, s.duration_s
    )
    .unwrap();
    for (title, f, digits) in TABLES {
        let rows = s.service_engines.iter().map(|e| {
            let cells = s.service_counts.iter();
            (
                e.name(),
                cells.map(move |n| cell(r.service_spread(*e, *n, f), false, digits)),
            )
        });
        table::titled(&mut t, title, "engine \\ services", &s.service_counts, rows);
    }
    writeln!(
        t,
        "\nWhat to take from it: a connection's cost in kube-proxy's iptables mode grows with \
         the services ahead of its own in `KUBE-SERVICES`, and every endpoint change rewrites \
         that chain; the nftables mode and the eBPF maps look a service up in one step, so \
         their per-connection cost stays flat, and what differs between those two is the base \
         cost of the path and the time to load or change services. An established connection \
         meets none of this (conntrack or the flow maps carry it)."
    )
    .unwrap();
    t
}
