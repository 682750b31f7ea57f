//! What the loader says of a host's dataplane: its route map, counters, program IDs and
//! metrics, and waiting for the route map to change.

use std::{
    thread,
    time::{Duration, Instant},
};

use dataplane::{kernel::inspect::Stats, model::route_table::Attach};

use super::loader_proc::{loader, loader_json, wait_until_up};

/// `loader routes --json` for a host.
pub fn routes(netns: &str) -> Vec<serde_json::Value> {
    loader_json("routes", netns)
}

/// `loader routes --json` for a host, empty while it fails (until a dataplane is pinned).
pub fn routes_or_none(netns: &str) -> Vec<serde_json::Value> {
    let out = loader(&["routes", "--json", "--netns", netns]);
    if out.status.success() {
        serde_json::from_slice(&out.stdout).unwrap()
    } else {
        vec![]
    }
}

/// The prefixes of a route table, in its order.
pub fn prefixes_of<C: FromIterator<String>>(table: &[serde_json::Value]) -> C {
    table
        .iter()
        .map(|r| r["prefix"].as_str().unwrap().to_string())
        .collect()
}

pub fn has_route(table: &[serde_json::Value], prefix: &str) -> bool {
    table.iter().any(|r| r["prefix"] == prefix)
}

pub fn stats(netns: &str) -> Stats {
    loader_json("stats", netns)
}

/// The hook the programs of `attach` count under (`tc` or `xdp`).
pub fn hook_of(attach: Attach) -> &'static str {
    if attach == Attach::Tc { "tc" } else { "xdp" }
}

/// A counter of one hook, by name.
pub fn counter(s: &Stats, hook: &str, name: &str) -> u64 {
    s.hooks[hook][name]
}

pub fn forwarded(s: &Stats, hook: &str) -> u64 {
    s.hooks[hook]["forwarded"]
}

/// The kernel ID of `program` in the loader running in `netns`.
pub fn program_id(netns: &str, program: &str) -> u64 {
    let status: serde_json::Value = loader_json("status", netns);
    status["ids"]["programs"][program]
        .as_u64()
        .expect("program id in status")
}

/// Waits up to `within` for `loader routes` of `netns` to satisfy `ok`; returns whether it did.
pub fn routes_become(
    netns: &str,
    within: Duration,
    ok: impl Fn(&[serde_json::Value]) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        // Until a dataplane is pinned, `loader routes` fails: that counts as not yet.
        if ok(&routes_or_none(netns)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to 30 s for `netns`'s route map to satisfy `ok` (`what` says how, for the
/// failure) and its loader to have attached.
pub fn wait_for_table(netns: &str, what: &str, ok: impl Fn(&[serde_json::Value]) -> bool) {
    assert!(
        routes_become(netns, Duration::from_secs(30), ok),
        "{netns}: the route map never {what}"
    );
    wait_until_up(netns);
}

/// Waits up to 30 s for `netns`'s route map to hold `n` routes and its loader to have
/// attached.
pub fn wait_for_routes(netns: &str, n: usize) {
    wait_for_table(netns, &format!("held {n} routes"), |t| t.len() == n);
}

/// Asserts that `prefix` shows in (or, `present` false, leaves) `netns`'s route map within a
/// second, as the loader promises for every change of its sources.
pub fn assert_route_within_a_second(netns: &str, prefix: &str, present: bool) {
    assert!(
        routes_become(netns, Duration::from_secs(1), |t| has_route(t, prefix)
            == present),
        "{netns}: {prefix} {} the route map within a second",
        if present {
            "did not enter"
        } else {
            "did not leave"
        }
    );
}

/// GET /metrics from `addr` inside `netns`.
pub fn scrape_metrics(netns: &str, addr: &str) -> String {
    use std::io::{Read, Write};
    let addr = addr.to_string();
    netlab::netns::in_netns(netns, move || {
        let mut stream = std::net::TcpStream::connect(&addr)?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        anyhow::ensure!(
            response.starts_with("HTTP/1.0 200 OK"),
            "metrics answered: {response}"
        );
        Ok(response)
    })
    .expect("scraping the metrics")
}

/// Asserts that every one of `lines` is a line of the scraped `metrics`.
pub fn assert_metrics_have(metrics: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            metrics.lines().any(|l| l == *line),
            "metrics lack {line:?}:\n{metrics}"
        );
    }
}

/// Fields `a` and `b` (strings) of every one of `records` (routes, services), in order.
pub fn field_pairs(records: &[serde_json::Value], a: &str, b: &str) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| (r[a].as_str().unwrap().into(), r[b].as_str().unwrap().into()))
        .collect()
}
