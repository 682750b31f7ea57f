//! `--metrics ADDR`: the dataplane's counters in Prometheus text format over plain HTTP.
//!
//! A deliberately small responder (read the request, answer GET /metrics, close): the
//! endpoint serves one scraper a few times a minute, which does not justify an HTTP stack
//! as a dependency.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context, Result};
use dataplane::kernel::inspect::{self as stats, KernelIds};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tracing::warn;

/// Counters the loader itself keeps.
#[derive(Default)]
pub struct LoaderCounters {
    pub apply_errors: AtomicU64,
    /// Tables refused because they did not fit a map, by map.
    map_full: Mutex<BTreeMap<&'static str, u64>>,
}

impl LoaderCounters {
    pub fn count_map_full(&self, map: &'static str) {
        let mut full = self.map_full.lock().unwrap_or_else(|e| e.into_inner());
        *full.entry(map).or_default() += 1;
    }

    fn map_full(&self) -> BTreeMap<&'static str, u64> {
        self.map_full
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Writes the `# HELP` and `# TYPE` lines that open a metric family.
fn family(t: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(t, "# HELP {name} {help}")?;
    writeln!(t, "# TYPE {name} {kind}")
}

/// Renders every metric.
pub fn render(
    ids: &KernelIds,
    ifnames: &BTreeMap<u32, String>,
    loader: &LoaderCounters,
) -> Result<String> {
    let st = stats::read(ids)?;
    let fills = stats::map_fill(ids)?;
    let mut t = String::new();
    family(
        &mut t,
        "dataplane_packets_total",
        "counter",
        "Frames seen by the eBPF programs, by hook and outcome (rx counts every frame).",
    )?;
    for (hook, counters) in &st.hooks {
        for (name, value) in counters {
            writeln!(
                t,
                "dataplane_packets_total{{hook=\"{hook}\",counter=\"{name}\"}} {value}"
            )?;
        }
    }
    family(
        &mut t,
        "dataplane_forwarded_by_egress_total",
        "counter",
        "Frames forwarded out of each interface.",
    )?;
    for (ifindex, value) in &st.forwarded_by_egress {
        let name = ifnames.get(ifindex).map(String::as_str).unwrap_or("");
        writeln!(
            t,
            "dataplane_forwarded_by_egress_total{{ifindex=\"{ifindex}\",ifname=\"{name}\"}} {value}"
        )?;
    }
    family(
        &mut t,
        "dataplane_policy_denied_total",
        "counter",
        "Packets denied by a workload's policy, by workload and direction.",
    )?;
    for d in &st.policy_denied {
        writeln!(
            t,
            "dataplane_policy_denied_total{{workload=\"{}\",direction=\"{}\"}} {}",
            d.workload, d.direction, d.packets
        )?;
    }
    family(
        &mut t,
        "dataplane_map_entries",
        "gauge",
        "Entries in each map; compare with dataplane_map_capacity (a full map refuses updates).",
    )?;
    for f in &fills {
        writeln!(
            t,
            "dataplane_map_entries{{map=\"{}\"}} {}",
            f.name, f.entries
        )?;
    }
    family(
        &mut t,
        "dataplane_map_capacity",
        "gauge",
        "Maximum entries of each map.",
    )?;
    for f in &fills {
        writeln!(
            t,
            "dataplane_map_capacity{{map=\"{}\"}} {}",
            f.name, f.capacity
        )?;
    }
    let routes = fills
        .iter()
        .find(|f| f.name == dataplane::common::maps::map_names::ROUTES)
        .map(|f| f.entries)
        .unwrap_or(0);
    family(
        &mut t,
        "dataplane_routes_installed",
        "gauge",
        "Routes in the route map.",
    )?;
    writeln!(t, "dataplane_routes_installed {routes}")?;
    family(
        &mut t,
        "dataplane_route_table_apply_errors_total",
        "counter",
        "Route table changes refused (parse, resolution or map errors).",
    )?;
    writeln!(
        t,
        "dataplane_route_table_apply_errors_total {}",
        loader.apply_errors.load(Ordering::Relaxed)
    )?;
    family(
        &mut t,
        "dataplane_map_full_total",
        "counter",
        "Route table changes refused whole because they needed more entries than a map holds.",
    )?;
    for (map, n) in loader.map_full() {
        writeln!(t, "dataplane_map_full_total{{map=\"{map}\"}} {n}")?;
    }
    Ok(t)
}

/// Binds `addr` (in the host's network namespace) and serves until the process ends.
pub async fn serve(addr: SocketAddr, ids: KernelIds, loader: Arc<LoaderCounters>) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let mut buf = [0u8; 2048];
            let n = socket.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /metrics") {
                let names = dataplane::system::netinfo::links()
                    .map(|l| l.into_iter().map(|l| (l.ifindex, l.name)).collect())
                    .unwrap_or_default();
                match render(&ids, &names, &loader) {
                    Ok(body) => ("200 OK", body),
                    Err(e) => {
                        warn!(error = %e, "rendering metrics");
                        ("500 Internal Server Error", format!("{e:#}\n"))
                    }
                }
            } else {
                ("404 Not Found", "try GET /metrics\n".to_string())
            };
            let response = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    Ok(())
}
