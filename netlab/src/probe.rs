//! Request-response latency between two namespaces: a UDP echo server and a client that sends
//! one message, waits for its echo, and times the round trip (what netperf's UDP_RR measures;
//! iperf3 cannot).
use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::netns::{Netns, in_netns};

const PORT: u16 = 7007;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub samples: usize,
    pub lost: usize,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// How the client's requests relate to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flows {
    /// All from one socket: one flow, which stateful policy has admitted after its first
    /// request (conntrack's ESTABLISHED, the eBPF flow table).
    One,
    /// Each from a socket of its own (a new source port): every request is a new flow that
    /// the policy rules must judge.
    NewEach,
}

/// `count` round trips of `size`-byte messages from `client` to an echo server in `server`.
pub fn udp_rr(
    client: &Netns,
    server: &Netns,
    server_addr: Ipv4Addr,
    size: usize,
    count: usize,
) -> Result<Latency> {
    udp_rr_flows(client, server, server_addr, size, count, Flows::One)
}

/// As [`udp_rr`], the requests grouped into flows as `flows` says.
pub fn udp_rr_flows(
    client: &Netns,
    server: &Netns,
    server_addr: Ipv4Addr,
    size: usize,
    count: usize,
    flows: Flows,
) -> Result<Latency> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let server_name = server.name().to_string();
    let stop_server = stop.clone();
    let echo = std::thread::spawn(move || -> Result<()> {
        dataplane::system::netns::enter(&server_name)?;
        let socket = UdpSocket::bind((server_addr, PORT)).context("binding the echo server");
        let socket = match socket {
            Ok(s) => s,
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                return Ok(());
            }
        };
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let _ = ready_tx.send(Ok(()));
        let mut buf = vec![0u8; 65536];
        while !stop_server.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        }
        Ok(())
    });
    ready_rx.recv().context("echo server thread")??;
    let result = in_netns(client.name(), || {
        let open = || -> Result<UdpSocket> {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect(SocketAddr::from((server_addr, PORT)))?;
            socket.set_read_timeout(Some(Duration::from_millis(500)))?;
            Ok(socket)
        };
        let mut socket = open()?;
        let message = vec![0x42u8; size];
        let mut buf = vec![0u8; size.max(1) + 64];
        let mut rtts = Vec::with_capacity(count);
        let mut lost = 0;
        for _ in 0..count {
            if flows == Flows::NewEach {
                socket = open()?;
            }
            let start = Instant::now();
            socket.send(&message)?;
            match socket.recv(&mut buf) {
                Ok(_) => rtts.push(start.elapsed().as_secs_f64() * 1e6),
                Err(_) => lost += 1,
            }
        }
        rtts.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| {
            rtts.get(((rtts.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Ok(Latency {
            samples: rtts.len(),
            lost,
            p50_us: pick(0.5),
            p99_us: pick(0.99),
        })
    });
    stop.store(true, Ordering::Relaxed);
    echo.join().expect("echo thread panicked")?;
    result
}
