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
    time::Duration,
};

use anyhow::{Context, Result};
use dataplane::kernel::inspect::{self as stats, KernelIds};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};
use tracing::warn;

/// Counters the loader itself keeps.
#[derive(Default)]
pub struct LoaderCounters {
    pub apply_errors: AtomicU64,
    /// Feed routes left out at the last resolution for want of a next hop's MAC.
    pub unresolved_routes: AtomicU64,
    /// 1 while this host has withdrawn from its prefix (another host holds it), else 0.
    pub prefix_withdrawn: AtomicU64,
    /// Times the route sources were planned afresh (something changed, or a retry was due).
    pub plans: AtomicU64,
    /// Route table lines left out at the last resolution (a next hop that does not answer, an
    /// interface that is missing, and the lines that depend on them).
    pub unresolved_table_lines: AtomicU64,
    /// Tables refused because they did not fit a map, by map.
    map_full: Mutex<BTreeMap<&'static str, u64>>,
    /// Cluster records refused, by reason.
    refused_records: Mutex<BTreeMap<&'static str, u64>>,
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

    pub fn count_refused_record(&self, reason: &'static str) {
        let mut refused = self
            .refused_records
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *refused.entry(reason).or_default() += 1;
    }

    fn refused_records(&self) -> BTreeMap<&'static str, u64> {
        self.refused_records
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
        "Route table changes refused (parse or map errors).",
    )?;
    writeln!(
        t,
        "dataplane_route_table_apply_errors_total {}",
        loader.apply_errors.load(Ordering::Relaxed)
    )?;
    family(
        &mut t,
        "dataplane_feed_routes_unresolved",
        "gauge",
        "Routes of the kernel and cluster feeds left out at the last resolution because they \
         could not be resolved (their next hop does not answer ARP...).",
    )?;
    writeln!(
        t,
        "dataplane_feed_routes_unresolved {}",
        loader.unresolved_routes.load(Ordering::Relaxed)
    )?;
    family(
        &mut t,
        "dataplane_cluster_prefix_withdrawn",
        "gauge",
        "1 while this host's prefix is another host's (it was away longer than its lease): the \
         host withdraws from it instead of serving it twice.",
    )?;
    writeln!(
        t,
        "dataplane_cluster_prefix_withdrawn {}",
        loader.prefix_withdrawn.load(Ordering::Relaxed)
    )?;
    family(
        &mut t,
        "dataplane_route_plans_total",
        "counter",
        "Times the loader planned its route sources afresh (a source or the host changed, a plugin \
         asked, or a retry was due); a neighbour the plan does not use changes nothing.",
    )?;
    writeln!(
        t,
        "dataplane_route_plans_total {}",
        loader.plans.load(Ordering::Relaxed)
    )?;
    family(
        &mut t,
        "dataplane_route_table_lines_unresolved",
        "gauge",
        "Route table lines left out at the last resolution because this host cannot realise \
         them now (a next hop that does not answer ARP, a missing interface, and the lines \
         through them); their packets go to the kernel, and they are tried again.",
    )?;
    writeln!(
        t,
        "dataplane_route_table_lines_unresolved {}",
        loader.unresolved_table_lines.load(Ordering::Relaxed)
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
    family(
        &mut t,
        "dataplane_cluster_records_refused_total",
        "counter",
        "Cluster records refused (not routed), by reason; own_record_overwritten counts this \
         host's record written back after another writer changed or removed it.",
    )?;
    for (reason, n) in loader.refused_records() {
        writeln!(
            t,
            "dataplane_cluster_records_refused_total{{reason=\"{reason}\"}} {n}"
        )?;
    }
    Ok(t)
}

/// How long a client may take to send its request, and to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a request that is read: a scrape's request line and headers fit.
const MAX_REQUEST: usize = 8192;

/// Binds `addr` (in the host's network namespace) and serves until the process ends: each
/// connection in a task of its own, with read and write timeouts and a bounded request, the
/// rendering (map reads) off the runtime's threads. An idle or slow client holds only its
/// own connection.
pub async fn serve(addr: SocketAddr, ids: KernelIds, loader: Arc<LoaderCounters>) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    let ids = Arc::new(ids);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(answer(socket, ids.clone(), loader.clone()));
        }
    });
    Ok(())
}

/// Answers one connection (one request, then close).
async fn answer(mut socket: TcpStream, ids: Arc<KernelIds>, loader: Arc<LoaderCounters>) {
    let Ok(Some(request)) = timeout(CLIENT_TIMEOUT, read_request(&mut socket)).await else {
        return; // too slow, too big, or gone: nothing to answer
    };
    let (status, body) = if request.starts_with("GET /metrics") {
        let rendered = tokio::task::spawn_blocking(move || {
            let names = dataplane::system::netinfo::links()
                .map(|l| l.into_iter().map(|l| (l.ifindex, l.name)).collect())
                .unwrap_or_default();
            render(&ids, &names, &loader)
        })
        .await;
        match rendered {
            Ok(Ok(body)) => ("200 OK", body),
            Ok(Err(e)) => {
                warn!(error = %e, "rendering metrics");
                ("500 Internal Server Error", format!("{e:#}\n"))
            }
            Err(e) => ("500 Internal Server Error", format!("{e}\n")),
        }
    } else {
        ("404 Not Found", "try GET /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = timeout(CLIENT_TIMEOUT, socket.write_all(response.as_bytes())).await;
}

/// Reads a request up to the end of its headers; None if the client closes first or sends
/// more than [`MAX_REQUEST`] bytes without ending them.
async fn read_request(socket: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
    }
}
