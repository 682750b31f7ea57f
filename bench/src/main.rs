//! The bench: two hosts forwarded by the kernel (Calico-style routed, Flannel-style VXLAN) and
//! by the eBPF programs (XDP and TC, routed and VXLAN), measured side by side in one run, modes
//! interleaved per repetition.
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
    topology::{Options, Overlay, Topology},
    traffic::{IperfResult, Proto, iperf3},
};
use clap::Parser;
use dataplane::{
    config::{self, Attach},
    ebpf::Dataplane,
    resolve::{self, LiveSystem},
    stats,
};

/// Kernel vs eBPF forwarding between two hosts made of network namespaces, routed
/// (calico-style) and VXLAN (flannel-style), eBPF at XDP and at TC: cross-host TCP. Writes
/// results.json and report.md to the output directory.
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

/// Who forwards between the workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// Calico-style: the kernel routes (ip_forward, FORWARD ACCEPT); no eBPF.
    CalicoRouted,
    EbpfRoutedXdp,
    EbpfRoutedTc,
    /// Flannel-style: kernel vxlan devices (port 8472) on both hosts; no eBPF.
    FlannelVxlan,
    EbpfVxlanXdp,
    EbpfVxlanTc,
}

/// Flannel's VXLAN port, used by every VXLAN mode so that they differ only in who forwards.
const VXLAN_PORT: u16 = 8472;

impl Mode {
    const ALL: [Mode; 6] = [
        Mode::CalicoRouted,
        Mode::EbpfRoutedXdp,
        Mode::EbpfRoutedTc,
        Mode::FlannelVxlan,
        Mode::EbpfVxlanXdp,
        Mode::EbpfVxlanTc,
    ];

    fn attach(self) -> Option<Attach> {
        match self {
            Mode::CalicoRouted | Mode::FlannelVxlan => None,
            Mode::EbpfRoutedXdp | Mode::EbpfVxlanXdp => Some(Attach::Xdp),
            Mode::EbpfRoutedTc | Mode::EbpfVxlanTc => Some(Attach::Tc),
        }
    }

    fn overlay(self) -> Overlay {
        match self {
            Mode::CalicoRouted | Mode::EbpfRoutedXdp | Mode::EbpfRoutedTc => Overlay::Routed,
            _ => Overlay::Vxlan { port: VXLAN_PORT },
        }
    }

    /// The kernel mode the eBPF mode replaces.
    fn baseline(self) -> Mode {
        match self.overlay() {
            Overlay::Routed => Mode::CalicoRouted,
            Overlay::Vxlan { .. } => Mode::FlannelVxlan,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::CalicoRouted => "calico-routed",
            Mode::EbpfRoutedXdp => "ebpf-routed-xdp",
            Mode::EbpfRoutedTc => "ebpf-routed-tc",
            Mode::FlannelVxlan => "flannel-vxlan",
            Mode::EbpfVxlanXdp => "ebpf-vxlan-xdp",
            Mode::EbpfVxlanTc => "ebpf-vxlan-tc",
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

    let modes = Mode::ALL;
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
    let topo = Topology::build(&Options {
        workloads_per_host: 1,
        xdp_ready: mode.attach() == Some(Attach::Xdp),
        overlay: mode.overlay(),
    })?;
    if mode == Mode::FlannelVxlan {
        topo.make_kernel_vxlan_host(0)?;
        topo.make_kernel_vxlan_host(1)?;
    }
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
    let median_of = |mode: Mode| {
        by_mode
            .get(&mode)
            .map(|v| median_min_max(v.iter().map(|s| s.iperf.bits_per_second).collect()).0)
    };
    let mut r = String::new();
    writeln!(
        r,
        "# Forwarding between two hosts: kernel vs eBPF (XDP, TC), routed and VXLAN\n"
    )
    .unwrap();
    writeln!(
        r,
        "Cross-host TCP, one iperf3 stream for {} s, {} repetition(s), modes interleaved; \
         two hosts and one workload each in network namespaces (Calico-style wiring). \
         eBPF modes run with `iptables -P FORWARD DROP` on both hosts. VXLAN modes use port \
         {VXLAN_PORT} and workload MTU 1450; `vs kernel` compares each mode with the kernel \
         mode it replaces (calico-routed, flannel-vxlan).\n",
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
            None => "- (kernel)".into(),
        };
        let ratio = median_of(mode.baseline())
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
