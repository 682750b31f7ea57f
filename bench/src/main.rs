//! The bench: CPU per throughput from 5 Mbit/s to 1 Gbit/s for the kernel's dataplanes
//! (Calico-style routed, Flannel-style vxlan and host-gw, macvlan) and ours (eBPF routed and
//! VXLAN, at XDP and at TC), against a bare veth floor, side by side in one run.
use std::{
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use bench::{
    campaign, charts,
    modes::Mode,
    policy_scaling::{self, Engine, ScalingPoint},
    report,
    results::{Results, SCHEMA_VERSION, Settings},
    route_scale::{self, RouteScalePoint},
    service_scaling::{self, ServiceEngine, ServicePoint},
    softirq::SoftirqMeter,
};
use clap::{Args, Parser, Subcommand};
use dataplane::kernel::path_costs::PathCost;
use netlab::netns::{Netns, in_netns, sweep_stale};

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
    /// Only the per-path program costs (BPF_PROG_TEST_RUN on crafted frames, a few seconds):
    /// prints the table, to see a change to the hot path without a bench run.
    Paths {
        /// Runs per path and hook.
        #[arg(long, default_value_t = PATH_RUNS)]
        runs: usize,
    },
    /// Redraw report.md and the charts from an existing results.json, without measuring.
    Report {
        /// The directory holding results.json.
        dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A short run (under 2 minutes): floor, calico, flannel-vxlan and the eBPF TC modes,
    /// two UDP rates, one repetition of 1 s, no meter check.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Every mode and rate (UDP and paced TCP), 5 repetitions of 5 s, every policy rule count
    /// (an hour or more).
    #[arg(long)]
    full: bool,
    /// Modes to measure, comma-separated (default: the headline modes; the floor is always
    /// added).
    #[arg(long, value_delimiter = ',')]
    modes: Option<Vec<String>>,
    /// UDP rates in Mbit/s, comma-separated.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Paced TCP rates in Mbit/s, comma-separated (default: none; unpaced TCP is always
    /// measured; `--full`: the full grid).
    #[arg(long, value_delimiter = ',')]
    tcp_rates: Option<Vec<u64>>,
    /// Seed of the shuffled measuring order (default: from the clock; printed and kept in
    /// results.json, so that a run's order can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Route-scale sweep: prefixes added to the eBPF bed's handful, comma-separated
    /// (default 0,1000000; an empty value skips it).
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    route_scale: Option<Vec<usize>>,
    /// Seconds of the softirq meter's check against /proc/stat (0: skip; default 30).
    #[arg(long)]
    meter_check: Option<u32>,
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
    /// Engines of the policy scaling sweep: iptables-nft, iptables-legacy, iptables-ipset,
    /// nftables-sets, nftables-linear, ebpf (default: all).
    #[arg(long, value_delimiter = ',')]
    policy_engines: Option<Vec<String>>,
    /// Leave the policy scaling sweep out.
    #[arg(long)]
    no_policy: bool,
    /// Service counts of the service scaling sweep (services the traffic does not ask for,
    /// three backends each; two more carry it), comma-separated (default 0,1000,10000;
    /// `--full`: 0,100,1000,10000,30000).
    #[arg(long, value_delimiter = ',')]
    services: Option<Vec<usize>>,
    /// Engines of the service scaling sweep: kube-proxy-iptables, kube-proxy-nftables, ebpf
    /// (default: all).
    #[arg(long, value_delimiter = ',')]
    service_engines: Option<Vec<String>>,
    /// Leave the service scaling sweep out.
    #[arg(long)]
    no_services: bool,
    /// Output directory (default: bench-out/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
}

const ALL_RATES: [u64; 7] = [5, 10, 50, 100, 500, 800, 1000];
/// The default run's UDP rates (the full grid under `--full`).
const DEFAULT_RATES: [u64; 4] = [5, 100, 500, 1000];
const POLICY_RULES: [usize; 5] = [0, 10, 100, 1_000, 10_000];
/// The default policy sweep's rule counts (every one of POLICY_RULES under `--full`).
const DEFAULT_POLICY_RULES: [usize; 3] = [0, 100, 10_000];
/// The policy sweep's stream: well within what every engine forwards on this machine.
const POLICY_RATE_MBPS: u64 = 500;
const SERVICE_COUNTS: [usize; 5] = [0, 100, 1_000, 10_000, 30_000];
/// The default service sweep's counts (every one of SERVICE_COUNTS under `--full`).
const DEFAULT_SERVICE_COUNTS: [usize; 3] = [0, 1_000, 10_000];
/// The service sweep's established stream (TCP, paced), as the policy sweep's.
const SERVICE_RATE_MBPS: u64 = 500;
const LATENCY_SIZES: [usize; 3] = [50, 100, 500];
/// 18 bytes of UDP payload: 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 18 + 4 (FCS) = 64 bytes.
const SMALL_PAYLOAD: u64 = 18;
/// Runs per path and hook of the per-path cost table.
const PATH_RUNS: usize = 20_000;
/// The meter check's window: at 250 Hz on 2 CPUs, 15,000 ticks sampled.
const METER_CHECK_S: u32 = 30;

fn settings(a: &RunArgs) -> Result<Settings> {
    struct Shape {
        modes: Vec<Mode>,
        rates: Vec<u64>,
        tcp_rates: Vec<u64>,
        repetitions: u32,
        duration: u32,
        latency_count: usize,
        policy_rules: Vec<usize>,
        service_counts: Vec<usize>,
        service_connections: usize,
        meter_check_s: u32,
        route_scale: Vec<usize>,
        path_runs: usize,
    }
    let shape = if a.quick {
        Shape {
            modes: vec![
                Mode::Floor,
                Mode::Calico,
                Mode::FlannelVxlan,
                Mode::EbpfRoutedTc,
                Mode::EbpfVxlanTc,
            ],
            rates: vec![100, 1000],
            tcp_rates: vec![],
            repetitions: 1,
            duration: 1,
            latency_count: 300,
            policy_rules: vec![0, 1_000],
            service_counts: vec![0, 1_000],
            service_connections: 200,
            meter_check_s: 0,
            route_scale: vec![0, 100_000],
            path_runs: 2_000,
        }
    } else if a.full {
        Shape {
            modes: Mode::ALL.to_vec(),
            rates: ALL_RATES.to_vec(),
            tcp_rates: ALL_RATES.to_vec(),
            repetitions: 5,
            duration: 5,
            latency_count: 2000,
            policy_rules: POLICY_RULES.to_vec(),
            service_counts: SERVICE_COUNTS.to_vec(),
            service_connections: 2000,
            meter_check_s: METER_CHECK_S * 2,
            route_scale: vec![0, 10_000, 100_000, 1_000_000],
            path_runs: PATH_RUNS * 5,
        }
    } else {
        Shape {
            modes: Mode::DEFAULT.to_vec(),
            rates: DEFAULT_RATES.to_vec(),
            tcp_rates: vec![],
            repetitions: 3,
            duration: 2,
            latency_count: 1000,
            policy_rules: DEFAULT_POLICY_RULES.to_vec(),
            service_counts: DEFAULT_SERVICE_COUNTS.to_vec(),
            service_connections: 1000,
            meter_check_s: METER_CHECK_S,
            route_scale: vec![0, 1_000_000],
            path_runs: PATH_RUNS,
        }
    };
    let mut modes = match &a.modes {
        Some(names) => names
            .iter()
            .map(|n| Mode::parse(n))
            .collect::<Result<Vec<_>>>()?,
        None => shape.modes,
    };
    // Every above-floor figure needs the floor measured beside it.
    if !modes.contains(&Mode::Floor) {
        modes.insert(0, Mode::Floor);
    }
    let rates = a.rates.clone().unwrap_or(shape.rates);
    let tcp_rates = a.tcp_rates.clone().unwrap_or(shape.tcp_rates);
    anyhow::ensure!(
        rates
            .iter()
            .chain(&tcp_rates)
            .all(|r| (1..=100_000).contains(r)),
        "rates are Mbit/s from 1 to 100000"
    );
    let policy_rules = if a.no_policy {
        vec![]
    } else {
        a.policy_rules.clone().unwrap_or(shape.policy_rules)
    };
    anyhow::ensure!(
        policy_rules.iter().all(|n| *n <= 100_000),
        "--policy-rules: at most 100000 rules"
    );
    let policy_engines = engines(&a.policy_engines, &Engine::ALL, Engine::name, "policy")?;
    let service_counts = if a.no_services {
        vec![]
    } else {
        a.services.clone().unwrap_or(shape.service_counts)
    };
    anyhow::ensure!(
        service_counts.iter().all(|n| *n <= 60_000),
        "--services: at most 60000 services (10.96.0.0/16 holds the generated ones)"
    );
    let service_engines = engines(
        &a.service_engines,
        &ServiceEngine::ALL,
        ServiceEngine::name,
        "service",
    )?;
    let order_seed = a.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    Ok(Settings {
        modes,
        rates_mbps: rates,
        tcp_rates_mbps: tcp_rates,
        protocols: vec!["udp".into(), "tcp".into()],
        repetitions: a.repetitions.unwrap_or(shape.repetitions).max(1),
        duration_s: a.duration.unwrap_or(shape.duration).max(1),
        calico_rules: a.calico_rules,
        order_seed,
        small_payload: SMALL_PAYLOAD,
        meter_check_s: a.meter_check.unwrap_or(shape.meter_check_s),
        route_scale: a.route_scale.clone().unwrap_or(shape.route_scale),
        path_runs: shape.path_runs,
        latency_sizes: LATENCY_SIZES.to_vec(),
        latency_count: shape.latency_count,
        policy_rules,
        policy_engines,
        policy_rate_mbps: POLICY_RATE_MBPS,
        service_counts,
        service_engines,
        service_connections: shape.service_connections,
        service_rate_mbps: SERVICE_RATE_MBPS,
    })
}

/// The engines `names` asks for among `all` (every one without `names`); `what` names the
/// sweep in the error.
fn engines<E: Copy>(
    names: &Option<Vec<String>>,
    all: &[E],
    name: fn(E) -> &'static str,
    what: &str,
) -> Result<Vec<E>> {
    match names {
        Some(names) => names
            .iter()
            .map(|n| {
                all.iter()
                    .copied()
                    .find(|e| name(*e) == n)
                    .ok_or_else(|| anyhow::anyhow!("unknown {what} engine `{n}`"))
            })
            .collect(),
        None => Ok(all.to_vec()),
    }
}

/// The per-path program costs, measured in a network namespace of their own.
fn path_costs(runs: usize) -> Result<Vec<PathCost>> {
    if runs == 0 {
        return Ok(vec![]);
    }
    let ns = Netns::create("paths")?;
    in_netns(ns.name(), || {
        Ok(dataplane::kernel::path_costs::measure(runs)?)
    })
    .context("measuring the per-path program costs")
}

/// The route-scale sweep: every route count per repetition, in a shuffled order.
fn route_sweep(settings: &Settings, meter: &SoftirqMeter) -> Result<Vec<RouteScalePoint>> {
    let mut rng = fastrand::Rng::with_seed(settings.order_seed ^ 0x5eed);
    let mut points = Vec::new();
    for repetition in 0..settings.repetitions {
        let mut counts = settings.route_scale.clone();
        rng.shuffle(&mut counts);
        for extra in counts {
            eprint!(
                "\r[routes] rep {}/{} {extra:>8} more routes   ",
                repetition + 1,
                settings.repetitions
            );
            points.push(route_scale::measure(
                extra,
                repetition,
                meter,
                settings.duration_s,
            )?);
        }
    }
    if !points.is_empty() {
        eprintln!();
    }
    Ok(points)
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

/// The service scaling sweep: every engine at every service count, in a shuffled order within
/// each repetition, each point on a fresh bed.
fn service_sweep(settings: &Settings, meter: &SoftirqMeter) -> Result<Vec<ServicePoint>> {
    let mut rng = fastrand::Rng::with_seed(settings.order_seed ^ 0x5e4f1ce);
    let mut points = Vec::new();
    let total = settings.service_counts.len()
        * settings.service_engines.len()
        * settings.repetitions as usize;
    for repetition in 0..settings.repetitions {
        let mut order: Vec<(usize, ServiceEngine)> = settings
            .service_counts
            .iter()
            .flat_map(|n| settings.service_engines.iter().map(move |e| (*n, *e)))
            .collect();
        rng.shuffle(&mut order);
        for (count, engine) in order {
            eprint!(
                "\r[services {}/{total}] rep {}/{} {:<20} {:>6} services   ",
                points.len() + 1,
                repetition + 1,
                settings.repetitions,
                engine.name(),
                count
            );
            let what = || format!("{} with {count} services", engine.name());
            let (bed, services, load_ms) =
                service_scaling::build(engine, count).with_context(what)?;
            points.push(
                service_scaling::measure(
                    bed,
                    &services,
                    meter,
                    engine,
                    load_ms,
                    repetition,
                    settings.duration_s,
                    settings.service_rate_mbps,
                    settings.service_connections,
                )
                .with_context(what)?,
            );
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
        Some(Command::Paths { runs }) => {
            anyhow::ensure!(is_root(), "the bench needs root (eBPF)");
            print!("{}", report::path_costs_table(&path_costs(runs)?));
            Ok(())
        }
        Some(Command::Report { dir }) => {
            let results = Results::load(&dir)?;
            write_outputs(&results, &dir)
        }
        None => run(&cli.run),
    }
}

/// Whether this process runs with root's effective user id.
fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, reads no memory of ours and always succeeds.
    unsafe { libc::geteuid() == 0 }
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
    anyhow::ensure!(is_root(), "the bench needs root (network namespaces, eBPF)");
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
    println!(
        "bench: writing to {} (order seed {})",
        out.display(),
        settings.order_seed
    );

    let meter = SoftirqMeter::start().context("attaching the softirq timing programs")?;
    let started = Instant::now();
    eprintln!(
        "per-path program costs: {} runs per path and hook",
        settings.path_runs
    );
    let path_costs = path_costs(settings.path_runs)?;
    let measured = campaign::run(&settings, &meter)?;
    let route_scale = route_sweep(&settings, &meter)?;
    let policy_scaling = policy_sweep(&settings, &meter)?;
    let service_scaling = service_sweep(&settings, &meter)?;
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
        duration_s: started.elapsed().as_secs_f64(),
        settings,
        points: measured.points,
        latency: measured.latency,
        small_packets: measured.small_packets,
        meter_check: measured.meter_check,
        route_scale,
        path_costs,
        policy_scaling,
        service_scaling,
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
