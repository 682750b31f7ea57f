//! The bench: the routed topology forwarded by the kernel (Calico-style), by the eBPF programs
//! at XDP, and at TC, measured side by side in one run, modes interleaved per repetition.
//!
//! For now it measures cross-host TCP throughput (iperf3) and counts what the programs
//! forwarded; the CPU-per-rate matrix, the VXLAN modes and the charts come with the bench issue.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::PathBuf,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use bench::{
    netns::{in_netns, sweep_stale},
    topology::{Options, Routed},
    traffic::{IperfResult, Proto, iperf3},
};
use clap::Parser;
use dataplane::{
    config::{self, Attach},
    ebpf::Dataplane,
    resolve::{self, LiveSystem},
    stats,
};

/// Routed forwarding: kernel vs eBPF at XDP vs eBPF at TC, cross-host TCP through two hosts
/// made of network namespaces. Writes results.json and report.md to the output directory.
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Args {
    /// Repetitions of each mode (modes interleaved within a repetition).
    #[arg(long, default_value_t = 3)]
    repetitions: u32,
    /// Seconds of traffic per measurement.
    #[arg(long, default_value_t = 5)]
    duration: u32,
    /// Output directory (default: bench-out/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// One repetition of 2 seconds: a smoke run.
    #[arg(long)]
    quick: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// The kernel forwards (ip_forward, FORWARD ACCEPT); no eBPF.
    Kernel,
    EbpfXdp,
    EbpfTc,
}

impl Mode {
    fn attach(self) -> Option<Attach> {
        match self {
            Mode::Kernel => None,
            Mode::EbpfXdp => Some(Attach::Xdp),
            Mode::EbpfTc => Some(Attach::Tc),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::EbpfXdp => "ebpf-xdp",
            Mode::EbpfTc => "ebpf-tc",
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct Sample {
    mode: Mode,
    protocol: &'static str,
    repetition: u32,
    duration_s: u32,
    iperf: IperfResult,
    /// Frames the eBPF programs of both hosts forwarded during the run (None for kernel).
    forwarded_frames: Option<u64>,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.repetitions = 1;
        args.duration = 2;
    }
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "the bench needs root (namespaces, eBPF)"
    );
    sweep_stale();
    let out = args.out.clone().unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        PathBuf::from("bench-out").join(t.to_string())
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let modes = [Mode::Kernel, Mode::EbpfXdp, Mode::EbpfTc];
    let total = modes.len() as u32 * args.repetitions;
    let started = Instant::now();
    let mut samples = Vec::new();
    for repetition in 0..args.repetitions {
        for mode in modes {
            let n = samples.len() as u32 + 1;
            eprintln!(
                "[{n}/{total}] {} repetition {} ({:.0} s elapsed)",
                mode.name(),
                repetition + 1,
                started.elapsed().as_secs_f64()
            );
            samples.push(measure(mode, repetition, args.duration)?);
        }
    }

    let report = report(&samples, &args);
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&samples)?,
    )?;
    std::fs::write(out.join("report.md"), &report)?;
    println!("{report}");
    println!("results in {}", out.display());
    Ok(())
}

/// One measurement on a fresh topology: the XDP mode gets the workload wiring it needs, the
/// others leave workloads at a container runtime's default offloads.
fn measure(mode: Mode, repetition: u32, duration: u32) -> Result<Sample> {
    let topo = Routed::build(&Options {
        workloads_per_host: 1,
        xdp_ready: mode == Mode::EbpfXdp,
    })?;
    let mut dataplanes = Vec::new();
    if let Some(attach) = mode.attach() {
        topo.set_kernel_forward_policy("DROP")?;
        for index in 0..topo.hosts.len() {
            let table = config::parse(&topo.route_table(index, attach))
                .map_err(|e| anyhow::anyhow!("generated route table: {e:?}"))?;
            let dp = in_netns(topo.hosts[index].ns.name(), || {
                let plan = resolve::resolve(&table, &LiveSystem)
                    .map_err(|e| anyhow::anyhow!("resolving: {e:?}"))?;
                let mut dp = Dataplane::load()?;
                dp.apply(&plan)?;
                dp.attach(&plan.attachments)?;
                Ok(dp)
            })?;
            dataplanes.push(dp);
        }
    }
    let forwarded = |dps: &[Dataplane]| -> Result<u64> {
        let mut sum = 0;
        for dp in dps {
            sum += stats::read(&dp.kernel_ids()?)?.total("forwarded");
        }
        Ok(sum)
    };
    let before = forwarded(&dataplanes)?;
    let (client, server) = (&topo.hosts[0].workloads[0], &topo.hosts[1].workloads[0]);
    let iperf = iperf3(&client.ns, &server.ns, server.addr, Proto::Tcp, duration)?;
    let after = forwarded(&dataplanes)?;
    Ok(Sample {
        mode,
        protocol: "tcp",
        repetition,
        duration_s: duration,
        iperf,
        forwarded_frames: mode.attach().map(|_| after - before),
    })
}

fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

fn report(samples: &[Sample], args: &Args) -> String {
    let mut by_mode: BTreeMap<Mode, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_mode.entry(s.mode).or_default().push(s);
    }
    let kernel_median = by_mode
        .get(&Mode::Kernel)
        .map(|v| median_min_max(v.iter().map(|s| s.iperf.bits_per_second).collect()).0);
    let mut r = String::new();
    writeln!(r, "# Routed forwarding: kernel vs eBPF (XDP, TC)\n").unwrap();
    writeln!(
        r,
        "Cross-host TCP, one iperf3 stream for {} s, {} repetition(s), modes interleaved; \
         two hosts and one workload each in network namespaces (Calico-style wiring). \
         eBPF modes run with `iptables -P FORWARD DROP` on both hosts.\n",
        args.duration, args.repetitions
    )
    .unwrap();
    writeln!(r, "| mode | TCP Gbit/s median | min | max | vs kernel | retransmits (median) | frames forwarded by eBPF, both hosts (median) |").unwrap();
    writeln!(r, "|---|---|---|---|---|---|---|").unwrap();
    for (mode, v) in &by_mode {
        let (med, min, max) =
            median_min_max(v.iter().map(|s| s.iperf.bits_per_second / 1e9).collect());
        let (retr, _, _) = median_min_max(v.iter().map(|s| s.iperf.retransmits as f64).collect());
        let fwd = match v[0].forwarded_frames {
            Some(_) => format!(
                "{:.0}",
                median_min_max(
                    v.iter()
                        .map(|s| s.forwarded_frames.unwrap_or(0) as f64)
                        .collect()
                )
                .0
            ),
            None => "- (kernel path)".into(),
        };
        let ratio = kernel_median
            .map(|k| format!("{:.2}", med * 1e9 / k))
            .unwrap_or_default();
        writeln!(
            r,
            "| {} | {med:.2} | {min:.2} | {max:.2} | {ratio} | {retr:.0} | {fwd} |",
            mode.name()
        )
        .unwrap();
    }
    writeln!(
        r,
        "\nXDP on veth gives up GSO/TSO (the workload's TX checksum offload must be off for it), so a \
         TCP stream costs it many more, smaller frames; TC keeps GSO and hands packets to the \
         workload with bpf_redirect_peer."
    )
    .unwrap();
    r
}
