//! Service scaling: what a connection to a service costs as the number of services grows,
//! for kube-proxy's iptables mode, its nftables mode and the eBPF dataplane's service maps.
//!
//! Host 0 (the client's) holds N services of three backends each that the traffic never
//! asks for, and two it does, named to come last in kube-proxy's `KUBE-SERVICES` order (the
//! chain is matched rule by rule: the worst case): `zz-connect`, three backends on the
//! server's workload, and `zz-stream`, one backend, its iperf3 server. kube-proxy's renderings
//! ([`netlab::kube_proxy`]) go into host 0's nat table on Calico's wiring without netfilter
//! rules (`kernel-routed`); the eBPF engine's services into host 0's maps (`ebpf-routed-tc`).
//!
//! Measured per point:
//! - the time to load all N services (render and restore, or parse and write the maps);
//! - new connections, one at a time, many in a row (netperf's TCP_CRR: connect, a byte each
//!   way, close): p50 and p99 of the whole transaction, connections per second, and
//!   kernel-level CPU per connection;
//! - an established connection's stream (TCP, paced): kernel-level CPU per Gbit/s;
//! - the time to apply one endpoint change at N (a fourth backend for `zz-connect`), done
//!   the way each engine does it: kube-proxy's partial iptables restore (`KUBE-SERVICES` whole
//!   and the service's chains), its nftables transaction (the service's chains only), the
//!   loader's map diff.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Instant,
};

use anyhow::{Context, Result};
use dataplane::model::services::{self, Service, Services};
use netlab::{
    kube_proxy,
    probe::{self, Latency},
    traffic::{self, Proto},
};

use crate::{
    modes::{Bed, Mode},
    softirq::SoftirqMeter,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceEngine {
    /// kube-proxy's iptables mode through `iptables-restore` (Debian's: the nf_tables backend).
    Iptables,
    /// kube-proxy's nftables mode through `nft -f`.
    Nftables,
    /// The eBPF dataplane (TC) with the services in its maps.
    Ebpf,
}

impl ServiceEngine {
    pub const ALL: [ServiceEngine; 3] = [
        ServiceEngine::Iptables,
        ServiceEngine::Nftables,
        ServiceEngine::Ebpf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServiceEngine::Iptables => "kube-proxy-iptables",
            ServiceEngine::Nftables => "kube-proxy-nftables",
            ServiceEngine::Ebpf => "ebpf",
        }
    }
}

/// One engine, one service count, one repetition.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ServicePoint {
    pub engine: ServiceEngine,
    /// Services the traffic does not ask for (two more carry it).
    pub services: usize,
    pub repetition: u32,
    /// Milliseconds to load every service.
    pub load_ms: f64,
    /// Milliseconds to apply one endpoint change.
    pub change_ms: f64,
    /// New connections, one at a time: the whole transaction, µs.
    pub connect: Latency,
    pub connections_per_s: f64,
    /// Kernel-level CPU per new connection, µs.
    pub cpu_us_per_connection: f64,
    /// The established stream: offered and achieved rate, and kernel-level CPU (% of one CPU)
    /// per Gbit/s.
    pub stream_rate_mbps: u64,
    pub stream_achieved_mbps: f64,
    pub stream_cpu_pct_per_gbps: f64,
}

/// The service new connections go to, and its backends' ports on the server.
const CONNECT_VIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
const CONNECT_PORT: u16 = 7100;
const CONNECT_BACKEND_PORTS: [u16; 3] = [7101, 7102, 7103];
/// The backend the endpoint change adds (nothing listens on it: it is never measured).
const ADDED_BACKEND_PORT: u16 = 7104;
/// The service the stream goes through.
const STREAM_VIP: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);

/// `count` services the traffic never asks for (10.96.0.0/16, three unreachable backends
/// each in 10.244.0.0/16), then the two it does, whose backends are on `server`.
pub fn services(count: usize, server: Ipv4Addr) -> Services {
    let mut text = String::with_capacity(count * 110);
    for i in 0..count {
        let b = |k: usize| {
            let n = i * 3 + k;
            format!("10.244.{}.{}:8080", n / 256 % 256, n % 256)
        };
        text.push_str(&format!(
            "service svc-{i:05} 10.96.{}.{}:80 tcp {} {} {}\n",
            i / 256 % 256,
            i % 256,
            b(0),
            b(1),
            b(2)
        ));
    }
    let backends: Vec<String> = CONNECT_BACKEND_PORTS
        .iter()
        .map(|p| format!("{server}:{p}"))
        .collect();
    text.push_str(&format!(
        "service zz-connect {CONNECT_VIP}:{CONNECT_PORT} tcp {}\n",
        backends.join(" ")
    ));
    let port = traffic::iperf3_port();
    text.push_str(&format!(
        "service zz-stream {STREAM_VIP}:{port} tcp {server}:{port}\n"
    ));
    services::parse(&text).expect("the generated services parse")
}

/// The services after one endpoint change: `zz-connect` gets a fourth backend.
fn changed(services: &Services, server: Ipv4Addr) -> (Services, Service) {
    let mut after = services.clone();
    let connect = after
        .services
        .get_mut("zz-connect")
        .expect("the generated services have zz-connect");
    connect
        .backends
        .push(SocketAddrV4::new(server, ADDED_BACKEND_PORT));
    let connect = connect.clone();
    (after, connect)
}

/// Builds a bed whose client host holds `count` + 2 services with `engine`; returns it, the
/// services, and how long loading them took (ms).
pub fn build(engine: ServiceEngine, count: usize) -> Result<(Bed, Services, f64)> {
    let mode = match engine {
        ServiceEngine::Ebpf => Mode::EbpfRoutedTc,
        _ => Mode::KernelRouted,
    };
    let mut bed = Bed::build(mode, 0)?;
    let services = services(count, bed.server_addr);
    let started = Instant::now();
    match engine {
        ServiceEngine::Ebpf => {
            bed.dataplanes[0].apply_services(&services)?;
        }
        ServiceEngine::Iptables => bed.host(0).context("two-host bed")?.feed(
            "iptables-restore",
            &[],
            &kube_proxy::iptables(&services),
        )?,
        ServiceEngine::Nftables => bed.host(0).context("two-host bed")?.feed(
            "nft",
            &["-f", "-"],
            &kube_proxy::nftables(&services),
        )?,
    }
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok((bed, services, load_ms))
}

/// Applies the endpoint change the way `engine` does; returns how long it took (ms).
fn apply_change(bed: &mut Bed, engine: ServiceEngine, services: &Services) -> Result<f64> {
    let (after, changed) = changed(services, bed.server_addr);
    let started = Instant::now();
    match engine {
        ServiceEngine::Ebpf => {
            bed.dataplanes[0].apply_services(&after)?;
        }
        ServiceEngine::Iptables => bed.host(0).context("two-host bed")?.feed(
            "iptables-restore",
            &["--noflush"],
            &kube_proxy::iptables_endpoints_changed(&after, &changed),
        )?,
        ServiceEngine::Nftables => bed.host(0).context("two-host bed")?.feed(
            "nft",
            &["-f", "-"],
            &kube_proxy::nftables_endpoints_changed(&changed),
        )?,
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

/// Measures one point on a built bed (and applies the endpoint change last).
#[allow(clippy::too_many_arguments)]
pub fn measure(
    mut bed: Bed,
    services: &Services,
    meter: &SoftirqMeter,
    engine: ServiceEngine,
    load_ms: f64,
    repetition: u32,
    duration: u32,
    stream_rate_mbps: u64,
    connections: usize,
) -> Result<ServicePoint> {
    let count = services.services.len() - 2;
    let backends: Vec<SocketAddrV4> = CONNECT_BACKEND_PORTS
        .iter()
        .map(|p| SocketAddrV4::new(bed.server_addr, *p))
        .collect();
    let before = meter.read()?;
    let (connect, connections_per_s) = probe::tcp_crr(
        bed.client(),
        bed.server(),
        &backends,
        SocketAddrV4::new(CONNECT_VIP, CONNECT_PORT),
        connections,
    )
    .with_context(|| format!("{} with {count} services: connections", engine.name()))?;
    let spent = meter.read()?.since(&before).total_ns();
    // The warm-up's connections are in the meter's time too: count them.
    let cpu_us_per_connection = spent as f64 / (connections + probe::CRR_WARM_UP) as f64 / 1e3;

    let before = meter.read()?;
    let stream = traffic::iperf3_via(
        bed.client(),
        bed.server(),
        bed.server_addr,
        STREAM_VIP,
        Proto::TcpAt {
            bits_per_second: stream_rate_mbps * 1_000_000,
        },
        duration,
    )
    .with_context(|| format!("{} with {count} services: stream", engine.name()))?;
    let spent = meter.read()?.since(&before).total_ns();
    let achieved_mbps = stream.bits_per_second / 1e6;
    let cpu_pct = spent as f64 / (duration as f64 * 1e9) * 100.0;

    let change_ms = apply_change(&mut bed, engine, services)?;
    Ok(ServicePoint {
        engine,
        services: count,
        repetition,
        load_ms,
        change_ms,
        connect,
        connections_per_s,
        cpu_us_per_connection,
        stream_rate_mbps,
        stream_achieved_mbps: achieved_mbps,
        stream_cpu_pct_per_gbps: if achieved_mbps > 0.0 {
            cpu_pct / (achieved_mbps / 1000.0)
        } else {
            f64::NAN
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::model::services::Transport;

    #[test]
    fn the_generated_services_put_the_measured_ones_last() {
        let server = Ipv4Addr::new(198, 18, 2, 2);
        let s = services(1000, server);
        assert_eq!(s.services.len(), 1002);
        let last: Vec<&str> = s
            .services
            .keys()
            .rev()
            .take(2)
            .map(String::as_str)
            .collect();
        assert_eq!(last, ["zz-stream", "zz-connect"]);
        let reached = s.backends_of(SocketAddrV4::new(CONNECT_VIP, CONNECT_PORT), Transport::Tcp);
        assert_eq!(reached.len(), 3);
        assert!(reached.iter().all(|b| *b.ip() == server));
        // No generated service shadows another's address, and 30,000 still fit.
        assert_eq!(services(30_000, server).services.len(), 30_002);
    }

    #[test]
    fn the_change_adds_one_backend_to_the_measured_service() {
        let server = Ipv4Addr::new(198, 18, 2, 2);
        let s = services(10, server);
        let (after, changed) = changed(&s, server);
        assert_eq!(changed.backends.len(), 4);
        assert_eq!(after.backend_count(), s.backend_count() + 1);
    }
}
