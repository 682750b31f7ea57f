//! Request-response latency between two namespaces: a UDP echo server and a client that sends
//! one message, waits for its echo, and times the round trip (what netperf's UDP_RR measures;
//! iperf3 cannot); and the same over one TCP connection, reported as qperf's `tcp_lat` does.
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::netns::{Netns, in_netns};

const PORT: u16 = 7007;
const TCP_PORT: u16 = 7008;
/// Transactions run before timing starts (connection slow start, neighbour entries, caches).
const TCP_WARM_UP: usize = 50;

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

/// qperf's `tcp_lat`: one TCP connection (Nagle off), one `size`-byte message in flight, the
/// server sends back `size` bytes for each; `count` transactions timed after a warm-up. The
/// figures are **half** round trips (one-way latency as qperf reports it), in µs.
pub fn tcp_rr(
    client: &Netns,
    server: &Netns,
    server_addr: Ipv4Addr,
    size: usize,
    count: usize,
) -> Result<Latency> {
    anyhow::ensure!(size > 0, "tcp_rr needs a message of at least one byte");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let server_name = server.name().to_string();
    let echo = std::thread::spawn(move || -> Result<()> {
        let listener = (|| -> Result<TcpListener> {
            dataplane::system::netns::enter(&server_name)?;
            pin_to_probe_cpu()?;
            let listener = TcpListener::bind((server_addr, TCP_PORT))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })()
        .context("binding the TCP echo server");
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                return Ok(());
            }
        };
        let _ = ready_tx.send(Ok(()));
        // Polled, so that a client that never connects cannot leave this thread waiting.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    anyhow::ensure!(Instant::now() < deadline, "no client connected in 5 s");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e.into()),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = vec![0u8; size];
        // Until the client closes: read one message, send one back.
        while conn.read_exact(&mut buf).is_ok() {
            conn.write_all(&buf)?;
        }
        Ok(())
    });
    ready_rx.recv().context("TCP echo server thread")??;
    let result = in_netns(client.name(), || {
        pin_to_probe_cpu()?;
        let mut conn = TcpStream::connect_timeout(
            &SocketAddr::from((server_addr, TCP_PORT)),
            Duration::from_secs(2),
        )
        .context("connecting to the TCP echo server")?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let message = vec![0x42u8; size];
        let mut buf = vec![0u8; size];
        let mut half_rtts = Vec::with_capacity(count);
        for i in 0..TCP_WARM_UP + count {
            let start = Instant::now();
            conn.write_all(&message)?;
            conn.read_exact(&mut buf).context("reading the echo")?;
            if i >= TCP_WARM_UP {
                half_rtts.push(start.elapsed().as_secs_f64() * 1e6 / 2.0);
            }
        }
        Ok(summarise(half_rtts, 0))
    });
    echo.join().expect("TCP echo thread panicked")?;
    result
}

/// Connections made before the timed ones: the first fill neighbour entries and caches.
pub const CRR_WARM_UP: usize = 20;

/// netperf's TCP_CRR: `count` connections one after another from `client` to `target` (a
/// service's address, or a server itself), each a connect, one byte each way and the
/// client's close; served in `server` by listeners at every one of `backends`. Returns the
/// latency of a whole transaction (connect to close, µs, not halved) and the connections per
/// second of the timed run. Both ends pinned to one CPU, as [`tcp_rr`].
pub fn tcp_crr(
    client: &Netns,
    server: &Netns,
    backends: &[std::net::SocketAddrV4],
    target: std::net::SocketAddrV4,
    count: usize,
) -> Result<(Latency, f64)> {
    let listeners: Vec<TcpListener> = in_netns(server.name(), || {
        backends
            .iter()
            .map(|b| {
                let l = TcpListener::bind(b)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .collect::<Result<_>>()
    })
    .context("binding the connection servers")?;
    let done = Arc::new(AtomicBool::new(false));
    let server_done = done.clone();
    let server_thread = std::thread::spawn(move || -> Result<()> {
        use std::os::fd::AsRawFd;
        pin_to_probe_cpu()?;
        let mut byte = [0u8; 1];
        let mut fds: Vec<libc::pollfd> = listeners
            .iter()
            .map(|l| libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        while !server_done.load(Ordering::Relaxed) {
            // Asleep until a connection arrives (or 100 ms pass, to notice the end).
            // SAFETY: `fds` is a live, initialised array of `fds.len()` pollfds that poll(2)
            // may write `revents` into; nothing else uses it during the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            if ready <= 0 {
                continue;
            }
            for (listener, fd) in listeners.iter().zip(&fds) {
                if fd.revents & libc::POLLIN == 0 {
                    continue;
                }
                if let Ok((mut conn, _)) = listener.accept() {
                    conn.set_nonblocking(false)?;
                    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
                    // One byte in, one out, then the client's close.
                    if conn.read_exact(&mut byte).is_ok() {
                        let _ = conn.write_all(&byte);
                        let _ = conn.read(&mut byte);
                    }
                }
            }
        }
        Ok(())
    });
    let result = in_netns(client.name(), || {
        pin_to_probe_cpu()?;
        let mut took = Vec::with_capacity(count);
        let mut started = Instant::now();
        for i in 0..CRR_WARM_UP + count {
            if i == CRR_WARM_UP {
                started = Instant::now();
            }
            let start = Instant::now();
            let mut conn =
                TcpStream::connect_timeout(&SocketAddr::V4(target), Duration::from_secs(2))
                    .with_context(|| format!("connection {i} to {target}"))?;
            conn.set_nodelay(true)?;
            conn.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut byte = [0x42u8; 1];
            conn.write_all(&byte)?;
            conn.read_exact(&mut byte)
                .with_context(|| format!("the answer on connection {i} to {target}"))?;
            drop(conn);
            if i >= CRR_WARM_UP {
                took.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        let per_second = count as f64 / started.elapsed().as_secs_f64();
        Ok((summarise(took, 0), per_second))
    });
    done.store(true, Ordering::Relaxed);
    server_thread.join().expect("connection server panicked")?;
    result
}

/// The CPU both ends of a request-response probe run on. Pinned to one CPU, every
/// transaction takes the same path through the scheduler (the reply's softirq and the
/// wake-up on the CPU that sent the request): what differs between modes is then the
/// dataplane, not where the two threads happened to land (unpinned, the same mode's p50 moved
/// between 9 and 40 µs from run to run here).
const PROBE_CPU: usize = 0;

/// Pins the calling thread to [`PROBE_CPU`].
fn pin_to_probe_cpu() -> Result<()> {
    // SAFETY: `cpu_set_t` is a plain bit array, for which all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `PROBE_CPU` is below the set's capacity (CPU_SETSIZE, 1024), and `set` is ours.
    unsafe { libc::CPU_SET(PROBE_CPU, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed, only read by the call; pid 0
    // is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    anyhow::ensure!(
        rc == 0,
        "pinning the probe to CPU {PROBE_CPU}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// p50 and p99 of `samples` (µs).
fn summarise(mut samples: Vec<f64>, lost: usize) -> Latency {
    samples.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Latency {
        samples: samples.len(),
        lost,
        p50_us: pick(0.5),
        p99_us: pick(0.99),
    }
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
        pin_to_probe_cpu()?;
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
        pin_to_probe_cpu()?;
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
        Ok(summarise(rtts, lost))
    });
    stop.store(true, Ordering::Relaxed);
    echo.join().expect("echo thread panicked")?;
    result
}
