//! One measured point: traffic at a target rate through a bed, with the CPU it cost, read
//! three ways side by side (see README, "Bench").
use std::time::Instant;

use anyhow::{Context, Result};
use netlab::traffic::{IperfResult, Proto, iperf3};

use crate::{
    modes::Bed,
    softirq::{SoftirqMeter, SoftirqTime},
};

/// A point whose achieved rate is further than this from its target is flagged.
pub const RATE_TOLERANCE: f64 = 0.02;

/// UDP datagram payload the bench sends (iperf3 `-l`).
pub const UDP_PAYLOAD: u64 = 1400;

/// The protocol name of the small-packet points.
pub const SMALL_PACKETS: &str = "udp-small";

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub mode: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Target rate; 0 for TCP unpaced (maximum bandwidth).
    pub rate_mbps: u64,
    pub repetition: u32,
    pub duration_s: f64,
    /// What the receiver got.
    pub achieved_mbps: f64,
    /// Achieved rate more than 2 % off the target (never set for unpaced TCP).
    pub off_target: bool,
    /// (1) Kernel level: time in NET_RX and NET_TX softirq, all CPUs, and as % of one CPU.
    pub softirq_net_rx_ns: u64,
    pub softirq_net_tx_ns: u64,
    pub softirq_cpu_pct: f64,
    /// (2) The eBPF programs' own run time (BPF stats), all hosts; 0 for kernel modes.
    pub bpf_run_ns: u64,
    pub bpf_run_count: u64,
    pub bpf_ns_per_run: f64,
    /// (3) Whole machine busy time from /proc/stat, % of one CPU (2 CPUs: up to 200 %).
    pub machine_busy_pct: f64,
    /// The traffic generator's own time (iperf3 client and server, user + system), % of one CPU.
    pub generator_cpu_pct: f64,
    pub packets: u64,
    pub lost_packets: u64,
    pub jitter_ms: f64,
    pub retransmits: u64,
    /// Packets the client's interface sent and the server's received (device counters):
    /// what the path actually carried, whatever the generator reported.
    pub client_tx_packets: u64,
    pub server_rx_packets: u64,
    /// Kernel-level CPU per packet the server received, ns (softirq time / server_rx_packets).
    pub softirq_ns_per_packet: f64,
    /// CPU time stolen by the hypervisor during the point, % of one CPU (/proc/stat `steal`).
    pub steal_pct: f64,
    /// On floor points: the mode whose point this one was measured beside (its pair for the
    /// above-floor figures); empty otherwise.
    #[serde(default)]
    pub beside: String,
}

/// A point with more steal than this (% of one CPU) is flagged: the hypervisor took time
/// the dataplane may have needed.
pub const STEAL_FLAG_PCT: f64 = 1.0;

/// The softirq meter read beside /proc/stat's softirq column over one long window.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MeterCheck {
    pub mode: String,
    pub seconds: f64,
    /// The meter over every softirq vector, and over NET_RX + NET_TX alone, % of one CPU.
    pub meter_all_pct: f64,
    pub meter_net_pct: f64,
    /// /proc/stat's softirq column over the same window, % of one CPU, and the ticks it saw
    /// (all CPUs): its sampling resolution.
    pub proc_stat_pct: f64,
    pub ticks: u64,
}

/// The whole machine's time from /proc/stat's `cpu` line, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
    pub softirq: u64,
    pub steal: u64,
}

pub fn proc_stat() -> Result<CpuTicks> {
    let text = std::fs::read_to_string("/proc/stat")?;
    parse_proc_stat(text.lines().next().unwrap_or_default())
}

/// `cpu  user nice system idle iowait irq softirq steal ...`
fn parse_proc_stat(line: &str) -> Result<CpuTicks> {
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    anyhow::ensure!(v.len() >= 8, "unexpected /proc/stat: {line}");
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Ok(CpuTicks {
        busy: total - idle,
        total,
        softirq: v[6],
        steal: v[7],
    })
}

/// Clock ticks per second (USER_HZ, what /proc/stat counts in).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf takes a constant name by value and returns a number: no pointers, no
    // memory of ours, safe from any thread; _SC_CLK_TCK is always defined on Linux.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// Received and sent packets of `dev` in `ns` (its stats64 counters).
pub fn link_packets(ns: &netlab::netns::Netns, dev: &str) -> Result<(u64, u64)> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing `ip -s -j link show dev {dev}`"))?;
    let stats = &v[0]["stats64"];
    let count = |dir: &str| {
        stats[dir]["packets"]
            .as_u64()
            .with_context(|| format!("{dev} has no {dir} packet counter"))
    };
    Ok((count("rx")?, count("tx")?))
}

/// The interface every bed's workloads send and receive on.
pub const WORKLOAD_IF: &str = "eth0";

/// User + system time of this process's reaped children, in seconds.
fn children_cpu_s() -> f64 {
    // SAFETY: rusage is a plain C struct of integers (timevals and longs): all zero bytes is a
    // valid value of it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live, writable rusage of this frame, of the size and
    // alignment the kernel writes; nothing else holds it. getrusage fails only on a bad
    // pointer or `who` (neither here), and then leaves it zeroed.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn bpf_stats(bed: &Bed) -> Result<(u64, u64)> {
    let mut sum = (0, 0);
    for dp in &bed.dataplanes {
        let (t, c) = dp.run_stats()?;
        sum = (sum.0 + t, sum.1 + c);
    }
    Ok(sum)
}

/// The programs' run time and run count (summed over the bed's dataplanes) while `proto`
/// traffic crosses `bed` for `duration` seconds, BPF run-time statistics on for just that
/// long. A pass of its own: the statistics cost two clock reads per program run, which the
/// CPU points must not carry.
pub fn run_time(bed: &Bed, proto: Proto, duration: u32) -> Result<(u64, u64)> {
    let _stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF statistics")?;
    let before = bpf_stats(bed)?;
    iperf3(bed.client(), bed.server(), bed.server_addr, proto, duration)?;
    let after = bpf_stats(bed)?;
    Ok((after.0 - before.0, after.1 - before.1))
}

/// The softirq meter beside /proc/stat's softirq column: UDP at 1 Gbit/s through `bed` for
/// `seconds`, both read before and after. Without IRQ time accounting /proc/stat samples at
/// the tick (a tick that lands in softirq charges its whole jiffy there), so the two agree
/// only over a long window, and the column covers every softirq vector: the meter's sum over
/// all vectors is the like-for-like figure.
pub fn meter_check(bed: &Bed, meter: &SoftirqMeter, seconds: u32) -> Result<MeterCheck> {
    let proto = Proto::Udp {
        bits_per_second: 1_000_000_000,
    };
    let (all0, net0, stat0) = (meter.read_all_vectors()?, meter.read()?, proc_stat()?);
    let started = Instant::now();
    iperf3(bed.client(), bed.server(), bed.server_addr, proto, seconds)?;
    let (all1, net1, stat1) = (meter.read_all_vectors()?, meter.read()?, proc_stat()?);
    let elapsed = started.elapsed().as_secs_f64();
    let pct = |ns: u64| ns as f64 / (elapsed * 1e9) * 100.0;
    let ticks = stat1.total - stat0.total;
    Ok(MeterCheck {
        mode: bed.mode.name().to_string(),
        seconds: elapsed,
        meter_all_pct: pct(all1 - all0),
        meter_net_pct: pct(net1.since(&net0).total_ns()),
        proc_stat_pct: (stat1.softirq - stat0.softirq) as f64 / ticks_per_second() / elapsed
            * 100.0,
        ticks,
    })
}

/// Sends `proto` traffic through `bed` for `duration` seconds and accounts for it (BPF
/// statistics off: the run-time fields are left for [`run_time`] to fill).
pub fn point(
    bed: &Bed,
    meter: &SoftirqMeter,
    proto: Proto,
    repetition: u32,
    duration: u32,
) -> Result<Point> {
    let ticks = ticks_per_second();
    let (_, client_tx0) = link_packets(bed.client(), WORKLOAD_IF)?;
    let (server_rx0, _) = link_packets(bed.server(), WORKLOAD_IF)?;
    let soft0 = meter.read()?;
    let stat0 = proc_stat()?;
    let gen0 = children_cpu_s();
    let started = Instant::now();
    let r: IperfResult = iperf3(bed.client(), bed.server(), bed.server_addr, proto, duration)?;
    let elapsed = started.elapsed().as_secs_f64();
    let gen1 = children_cpu_s();
    let stat1 = proc_stat()?;
    let soft: SoftirqTime = meter.read()?.since(&soft0);
    let (_, client_tx1) = link_packets(bed.client(), WORKLOAD_IF)?;
    let (server_rx1, _) = link_packets(bed.server(), WORKLOAD_IF)?;
    let server_rx_packets = server_rx1 - server_rx0;

    let secs = duration as f64;
    let (protocol, rate_mbps, achieved_mbps) = match proto {
        Proto::Tcp => ("tcp", 0, r.bits_per_second / 1e6),
        Proto::TcpAt { bits_per_second } => {
            ("tcp", bits_per_second / 1_000_000, r.bits_per_second / 1e6)
        }
        Proto::Udp { bits_per_second } => {
            let delivered = r.packets.saturating_sub(r.lost_packets);
            (
                "udp",
                bits_per_second / 1_000_000,
                (delivered * UDP_PAYLOAD * 8) as f64 / secs / 1e6,
            )
        }
        Proto::UdpFlood { payload } => {
            let delivered = r.packets.saturating_sub(r.lost_packets);
            (
                SMALL_PACKETS,
                0,
                (delivered * payload * 8) as f64 / secs / 1e6,
            )
        }
    };
    let off_target = rate_mbps > 0
        && (achieved_mbps - rate_mbps as f64).abs() > RATE_TOLERANCE * rate_mbps as f64;
    Ok(Point {
        mode: bed.mode.name().to_string(),
        protocol: protocol.to_string(),
        rate_mbps,
        repetition,
        duration_s: secs,
        achieved_mbps,
        off_target,
        softirq_net_rx_ns: soft.net_rx_ns,
        softirq_net_tx_ns: soft.net_tx_ns,
        softirq_cpu_pct: soft.total_ns() as f64 / (secs * 1e9) * 100.0,
        bpf_run_ns: 0,
        bpf_run_count: 0,
        bpf_ns_per_run: 0.0,
        // Over the whole iperf3 run (its start-up included), as the generator's time is.
        machine_busy_pct: (stat1.busy - stat0.busy) as f64 / ticks / elapsed * 100.0,
        generator_cpu_pct: (gen1 - gen0) / elapsed * 100.0,
        packets: r.packets,
        lost_packets: r.lost_packets,
        jitter_ms: r.jitter_ms,
        retransmits: r.retransmits,
        client_tx_packets: client_tx1 - client_tx0,
        server_rx_packets,
        softirq_ns_per_packet: if server_rx_packets > 0 {
            soft.total_ns() as f64 / server_rx_packets as f64
        } else {
            f64::NAN
        },
        steal_pct: (stat1.steal - stat0.steal) as f64 / ticks / elapsed * 100.0,
        beside: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_line_gives_busy_softirq_and_steal() {
        let t = parse_proc_stat("cpu  100 5 50 1000 20 3 7 11 0 0").unwrap();
        assert_eq!(t.total, 100 + 5 + 50 + 1000 + 20 + 3 + 7 + 11);
        assert_eq!(t.busy, t.total - 1020);
        assert_eq!((t.softirq, t.steal), (7, 11));
        assert!(parse_proc_stat("cpu 1 2 3").is_err());
    }
}
