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
}

/// Busy and total jiffies of the whole machine (/proc/stat's `cpu` line).
fn proc_stat() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text.lines().next().unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    anyhow::ensure!(v.len() >= 5, "unexpected /proc/stat: {line}");
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Ok((total - idle, total))
}

/// User + system time of this process's reaped children, in seconds.
fn children_cpu_s() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
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

/// Sends `proto` traffic through `bed` for `duration` seconds and accounts for it (BPF
/// statistics off: the run-time fields are left for [`run_time`] to fill).
pub fn point(
    bed: &Bed,
    meter: &SoftirqMeter,
    proto: Proto,
    repetition: u32,
    duration: u32,
) -> Result<Point> {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let soft0 = meter.read()?;
    let (busy0, _) = proc_stat()?;
    let gen0 = children_cpu_s();
    let started = Instant::now();
    let r: IperfResult = iperf3(bed.client(), bed.server(), bed.server_addr, proto, duration)?;
    let elapsed = started.elapsed().as_secs_f64();
    let gen1 = children_cpu_s();
    let (busy1, _) = proc_stat()?;
    let soft: SoftirqTime = meter.read()?.since(&soft0);

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
        machine_busy_pct: (busy1 - busy0) as f64 / ticks / elapsed * 100.0,
        generator_cpu_pct: (gen1 - gen0) / elapsed * 100.0,
        packets: r.packets,
        lost_packets: r.lost_packets,
        jitter_ms: r.jitter_ms,
        retransmits: r.retransmits,
    })
}
