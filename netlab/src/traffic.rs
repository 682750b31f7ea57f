//! Traffic between namespaces: ping and iperf3 (parsed from its JSON output).
use std::{net::Ipv4Addr, thread, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::netns::Netns;

/// Pings `to` until `count` echoes are answered, 0.2 s apart, giving up after `count` + 3
/// seconds (time for ARP on every hop); true if `count` answers came.
pub fn ping(from: &Netns, to: Ipv4Addr, count: u32) -> Result<bool> {
    let deadline = (count + 3).to_string();
    let out = from
        .command("ping")
        .args([
            "-q",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-w",
            &deadline,
            &to.to_string(),
        ])
        .output()
        .context("running ping")?;
    if !out.status.success() {
        // Said, not failed: some callers expect no answer.
        eprintln!(
            "ping {to} from {}: no {count} answers: {} {}",
            from.name(),
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .replace('\n', " | "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.status.success())
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Proto {
    /// TCP as fast as it goes.
    Tcp,
    /// TCP paced by iperf3 to a target rate in bits per second.
    TcpAt { bits_per_second: u64 },
    /// UDP at a target rate in bits per second, 1400-byte datagrams.
    Udp { bits_per_second: u64 },
    /// UDP as fast as the sender goes (`-b 0`), `payload`-byte datagrams.
    UdpFlood { payload: u64 },
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IperfResult {
    pub bits_per_second: f64,
    pub bytes: u64,
    /// UDP only: datagrams sent and lost.
    pub packets: u64,
    pub lost_packets: u64,
    /// TCP only.
    pub retransmits: u64,
    /// UDP only, as the receiver saw it.
    pub jitter_ms: f64,
}

/// Runs iperf3 from `client` to a one-off server in `server` at `server_addr`.
pub fn iperf3(
    client: &Netns,
    server: &Netns,
    server_addr: Ipv4Addr,
    proto: Proto,
    seconds: u32,
) -> Result<IperfResult> {
    iperf3_via(client, server, server_addr, server_addr, proto, seconds)
}

/// The port [`iperf3`]'s server listens on (one per process, so that two runs of the bench
/// never meet).
pub fn iperf3_port() -> u16 {
    5201 + (std::process::id() % 1000) as u16
}

/// As [`iperf3`], the client connecting to `via` (a service address that leads to the
/// server), on the same port.
pub fn iperf3_via(
    client: &Netns,
    server: &Netns,
    server_addr: Ipv4Addr,
    via: Ipv4Addr,
    proto: Proto,
    seconds: u32,
) -> Result<IperfResult> {
    let bind = server_addr.to_string();
    let addr = via.to_string();
    let port = iperf3_port().to_string();
    let srv = server.spawn("iperf3", &["-s", "-1", "-B", &bind, "-p", &port])?;
    let mut args = vec![
        // A bound on the client, whatever happens to the path: the run plus 30 s.
        (seconds + 30).to_string(),
        "iperf3".into(),
        "-J".into(),
        "-c".into(),
        addr.clone(),
        "-p".into(),
        port.clone(),
        "-t".into(),
        seconds.to_string(),
        "--connect-timeout".into(),
        "2000".into(),
    ];
    if let Proto::TcpAt { bits_per_second } = proto {
        args.extend(["-b".into(), bits_per_second.to_string()]);
    }
    if let Proto::Udp { bits_per_second } = proto {
        args.extend([
            "-u".into(),
            "-l".into(),
            "1400".into(),
            "-b".into(),
            bits_per_second.to_string(),
        ]);
    }
    if let Proto::UdpFlood { payload } = proto {
        args.extend([
            "-u".into(),
            "-l".into(),
            payload.to_string(),
            "-b".into(),
            "0".into(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The server may take a moment to listen: retry a refused connection a few times.
    // (iperf3 3.12 reports some errors in its JSON while exiting 0: read both.)
    let mut last_error = String::new();
    for _ in 0..30 {
        let out = client
            .command("timeout")
            .args(&args)
            .output()
            .context("running iperf3")?;
        let text = String::from_utf8_lossy(&out.stdout);
        match parse(&text, proto) {
            Ok(result) if out.status.success() => {
                drop(srv);
                return Ok(result);
            }
            Ok(_) => {
                last_error = format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr))
            }
            Err(e) => last_error = format!("{e:#}"),
        }
        if !last_error.contains("Connection refused") {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("iperf3 to {addr} failed: {last_error}")
}

fn parse(text: &str, proto: Proto) -> Result<IperfResult> {
    let v: Value = serde_json::from_str(text).context("iperf3 printed no JSON")?;
    if let Some(error) = v["error"].as_str() {
        bail!("iperf3: {error}");
    }
    let end = &v["end"];
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    Ok(match proto {
        Proto::Tcp | Proto::TcpAt { .. } => IperfResult {
            bits_per_second: num(&end["sum_received"]["bits_per_second"]),
            bytes: num(&end["sum_received"]["bytes"]) as u64,
            retransmits: num(&end["sum_sent"]["retransmits"]) as u64,
            ..Default::default()
        },
        Proto::Udp { .. } | Proto::UdpFlood { .. } => IperfResult {
            bits_per_second: num(&end["sum"]["bits_per_second"]),
            bytes: num(&end["sum"]["bytes"]) as u64,
            packets: num(&end["sum"]["packets"]) as u64,
            lost_packets: num(&end["sum"]["lost_packets"]) as u64,
            jitter_ms: num(&end["sum"]["jitter_ms"]),
            ..Default::default()
        },
    })
}
