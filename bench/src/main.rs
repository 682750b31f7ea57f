//! The bench: CPU per throughput from 5 Mbit/s to 1 Gbit/s for the kernel's dataplanes
//! (Calico-style routed, Flannel-style vxlan and host-gw, macvlan) and ours (eBPF routed and
//! VXLAN, at XDP and at TC), against a bare veth floor, side by side in one run.
use std::{
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use bench::{
    charts,
    measure::{self, Point},
    modes::{Bed, Mode},
    policy_scaling::{self, Engine, ScalingPoint},
    report,
    results::{LatencyPoint, Results, SCHEMA_VERSION, Settings},
    softirq::SoftirqMeter,
};
use clap::{Args, Parser, Subcommand};
use netlab::{
    netns::sweep_stale,
    probe,
    traffic::{Proto, ping},
};

/// Measures what forwarding costs: the kernel's dataplanes and the eBPF ones, at fixed rates,
/// CPU accounted in the kernel. Writes results.json, results.csv, report.md and charts (PNG,
/// SVG) to a directory it prints. Needs root (namespaces, eBPF).
#[derive(Parser, Debug)]
#[command(name = "bench", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Redraw report.md and the charts from an existing results.json, without measuring.
    Report {
        /// The directory holding results.json.
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A short run (under 3 minutes): floor, calico, flannel-vxlan and the eBPF TC modes,
    /// three rates, one repetition of 1 s.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Every mode and rate, 3 repetitions of 5 s (longer than the default's 20 minutes).
    #[arg(long)]
    full: bool,
    /// Modes to measure, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    modes: Option<Vec<String>>,
    /// Offered rates in Mbit/s, comma-separated.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Repetitions of every point.
    #[arg(long)]
    repetitions: Option<u32>,
    /// Seconds of traffic per point.
    #[arg(long)]
    duration: Option<u32>,
    /// Policy rules in each Calico workload chain that the traffic does not match.
    #[arg(long, default_value_t = 10)]
    calico_rules: usize,
    /// Rule counts of the policy scaling sweep (rules the traffic does not match; each
    /// policy also has the one that allows it), comma-separated.
    #[arg(long, value_delimiter = ',')]
    policy_rules: Option<Vec<usize>>,
    /// Engines of the policy scaling sweep: iptables-nft, iptables-legacy, nftables-sets,
    /// ebpf (default: all).
    #[arg(long, value_delimiter = ',')]
    policy_engines: Option<Vec<String>>,
    /// Leave the policy scaling sweep out.
    #[arg(long)]
    no_policy: bool,
    /// Output directory (default: bench-out/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

const ALL_RATES: [u64; 7] = [5, 10, 50, 100, 500, 800, 1000];
/// The default run's rates (the full grid under `--full`): the run-time pass made room.
const DEFAULT_RATES: [u64; 5] = [5, 50, 100, 500, 1000];
/// Seconds of traffic per point of the run-time pass.
const RUN_TIME_PASS_S: u32 = 1;
const POLICY_RULES: [usize; 5] = [0, 10, 100, 1_000, 10_000];
/// The policy sweep's stream: well within what every engine forwards on this machine.
const POLICY_RATE_MBPS: u64 = 500;
const LATENCY_SIZES: [usize; 3] = [50, 100, 500];

fn settings(a: &RunArgs) -> Result<Settings> {
    let (modes, rates, repetitions, duration, latency_count) = if a.quick {
        (
            vec![
                Mode::Floor,
                Mode::Calico,
                Mode::FlannelVxlan,
                Mode::EbpfRoutedTc,
                Mode::EbpfVxlanTc,
            ],
            vec![10, 100, 1000],
            1,
            1,
            300,
        )
    } else if a.full {
        (Mode::ALL.to_vec(), ALL_RATES.to_vec(), 3, 5, 2000)
    } else {
        (Mode::ALL.to_vec(), DEFAULT_RATES.to_vec(), 3, 2, 1000)
    };
    let modes = match &a.modes {
        Some(names) => names
            .iter()
            .map(|n| Mode::parse(n))
            .collect::<Result<Vec<_>>>()?,
        None => modes,
    };
    let rates = a.rates.clone().unwrap_or(rates);
    anyhow::ensure!(
        rates.iter().all(|r| (1..=100_000).contains(r)),
        "rates are Mbit/s from 1 to 100000"
    );
    anyhow::ensure!(!modes.is_empty(), "no modes to measure");
    let policy_rules = if a.no_policy {
        vec![]
    } else {
        a.policy_rules.clone().unwrap_or_else(|| {
            if a.quick {
                vec![0, 1_000]
            } else {
                POLICY_RULES.to_vec()
            }
        })
    };
    anyhow::ensure!(
        policy_rules.iter().all(|n| *n <= 100_000),
        "--policy-rules: at most 100000 rules"
    );
    let policy_engines = match &a.policy_engines {
        Some(names) => names
            .iter()
            .map(|n| {
                Engine::ALL
                    .into_iter()
                    .find(|e| e.name() == n)
                    .ok_or_else(|| anyhow::anyhow!("unknown policy engine `{n}`"))
            })
            .collect::<Result<Vec<_>>>()?,
        None => Engine::ALL.to_vec(),
    };
    Ok(Settings {
        modes,
        rates_mbps: rates,
        protocols: vec!["udp".into(), "tcp".into()],
        repetitions: a.repetitions.unwrap_or(repetitions).max(1),
        duration_s: a.duration.unwrap_or(duration).max(1),
        calico_rules: a.calico_rules,
        latency_sizes: LATENCY_SIZES.to_vec(),
        latency_count,
        policy_rules,
        policy_engines,
        policy_rate_mbps: POLICY_RATE_MBPS,
    })
}

/// The policy rule scaling sweep: every engine at every rule count, interleaved within each
/// repetition, each point on a fresh bed.
fn policy_sweep(settings: &Settings, meter: &SoftirqMeter) -> Result<Vec<ScalingPoint>> {
    let mut points = Vec::new();
    let total =
        settings.policy_rules.len() * settings.policy_engines.len() * settings.repetitions as usize;
    for repetition in 0..settings.repetitions {
        for &rules in &settings.policy_rules {
            for &engine in &settings.policy_engines {
                eprint!(
                    "\r[policy {}/{total}] rep {}/{} {:<16} {:>6} rules   ",
                    points.len() + 1,
                    repetition + 1,
                    settings.repetitions,
                    engine.name(),
                    rules
                );
                let (bed, apply_ms) = policy_scaling::build(engine, rules)
                    .with_context(|| format!("{} with {rules} rules", engine.name()))?;
                points.push(
                    policy_scaling::measure(
                        &bed,
                        meter,
                        engine,
                        rules,
                        apply_ms,
                        repetition,
                        settings.duration_s,
                        settings.policy_rate_mbps,
                        settings.latency_count,
                    )
                    .with_context(|| format!("{} with {rules} rules", engine.name()))?,
                );
            }
        }
    }
    if total > 0 {
        eprintln!();
    }
    Ok(points)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Report { dir }) => {
            let results = Results::load(&dir)?;
            write_outputs(&results, &dir)
        }
        None => run(&cli.run),
    }
}

fn write_outputs(results: &Results, dir: &Path) -> Result<()> {
    results.save(dir)?;
    std::fs::write(dir.join("report.md"), report::render(results))?;
    let charts = charts::draw_all(results, dir)?;
    println!(
        "wrote {}/results.json, results.csv, report.md and {} chart files",
        dir.display(),
        charts.len()
    );
    Ok(())
}

fn run(args: &RunArgs) -> Result<()> {
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "the bench needs root (network namespaces, eBPF)"
    );
    let settings = settings(args)?;
    sweep_stale();
    let out = args.out.clone().unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        PathBuf::from("bench-out").join(t.to_string())
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    println!("bench: writing to {}", out.display());

    let meter = SoftirqMeter::start().context("attaching the softirq timing programs")?;

    let per_bed = settings.rates_mbps.len() * settings.protocols.len() + 1;
    let total = settings.modes.len() * settings.repetitions as usize * per_bed;
    let started = Instant::now();
    let mut points: Vec<Point> = Vec::new();
    let mut latency: Vec<LatencyPoint> = Vec::new();
    for repetition in 0..settings.repetitions {
        for &mode in &settings.modes {
            let bed = Bed::build(mode, settings.calico_rules)
                .with_context(|| format!("building {}", mode.name()))?;
            // Warm up: neighbour entries, and proof of a path before measuring.
            anyhow::ensure!(
                ping(bed.client(), bed.server_addr, 2)?,
                "{}: no connectivity between the workloads",
                mode.name()
            );
            let mut plan: Vec<Proto> = Vec::new();
            for protocol in &settings.protocols {
                for &rate in &settings.rates_mbps {
                    let bps = rate * 1_000_000;
                    plan.push(match protocol.as_str() {
                        "udp" => Proto::Udp {
                            bits_per_second: bps,
                        },
                        _ => Proto::TcpAt {
                            bits_per_second: bps,
                        },
                    });
                }
            }
            plan.push(Proto::Tcp);
            let first_of_bed = points.len();
            for proto in plan.iter().copied() {
                let done = points.len() + 1;
                let elapsed = started.elapsed().as_secs_f64();
                let eta = if done > 1 {
                    elapsed / (done - 1) as f64 * (total - done + 1) as f64
                } else {
                    0.0
                };
                eprint!(
                    "\r[{done}/{total}] rep {}/{} {:<16} {:<28} {:>5.0} s elapsed, ~{:>4.0} s left   ",
                    repetition + 1,
                    settings.repetitions,
                    mode.name(),
                    format!("{proto:?}"),
                    elapsed,
                    eta
                );
                let p = measure::point(&bed, &meter, proto, repetition, settings.duration_s)
                    .with_context(|| format!("{} {proto:?}", mode.name()))?;
                points.push(p);
            }
            // The programs' run time, in a pass of its own with BPF statistics on (1 s a
            // fixed-rate point), written into the points just measured.
            if mode.attach().is_some() {
                for (point, proto) in points[first_of_bed..].iter_mut().zip(&plan) {
                    if matches!(proto, Proto::Tcp) {
                        continue;
                    }
                    let (ns, runs) = measure::run_time(&bed, *proto, RUN_TIME_PASS_S)
                        .with_context(|| format!("{} {proto:?}: run time", mode.name()))?;
                    point.bpf_run_ns = ns;
                    point.bpf_run_count = runs;
                    point.bpf_ns_per_run = if runs > 0 {
                        ns as f64 / runs as f64
                    } else {
                        0.0
                    };
                }
            }
            for &size in &settings.latency_sizes {
                let l = probe::udp_rr(
                    bed.client(),
                    bed.server(),
                    bed.server_addr,
                    size,
                    settings.latency_count,
                )?;
                latency.push(LatencyPoint {
                    mode: mode.name().to_string(),
                    size,
                    repetition,
                    latency: l,
                });
            }
        }
    }
    eprintln!();
    let policy_scaling = policy_sweep(&settings, &meter)?;
    let results = Results {
        schema: SCHEMA_VERSION,
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        settings,
        points,
        latency,
        policy_scaling,
    };
    write_outputs(&results, &out)?;
    let off = results.points.iter().filter(|p| p.off_target).count();
    println!(
        "done in {:.0} s: {} points, {} off their target rate; report: {}",
        started.elapsed().as_secs_f64(),
        results.points.len(),
        off,
        out.join("report.md").display()
    );
    Ok(())
}
