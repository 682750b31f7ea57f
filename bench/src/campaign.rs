//! The measuring order of a run: per repetition, the modes in a shuffled order, each on a
//! fresh bed; within a mode, its points in a shuffled order, each beside a floor point at the
//! same protocol and rate (which of the two goes first is drawn too), so that every
//! above-floor figure subtracts a floor measured seconds away, not minutes.
use std::time::Instant;

use anyhow::{Context, Result};
use netlab::{
    probe,
    traffic::{Proto, ping},
};

use crate::{
    measure::{self, MeterCheck, Point},
    modes::{Bed, Mode},
    results::{LatencyPoint, Settings},
    softirq::SoftirqMeter,
};

/// Seconds of traffic per point of the BPF run-time pass.
const RUN_TIME_PASS_S: u32 = 1;

/// What the campaign measured.
pub struct Measured {
    pub points: Vec<Point>,
    pub small_packets: Vec<Point>,
    pub latency: Vec<LatencyPoint>,
    pub meter_check: Option<MeterCheck>,
}

/// Every point a mode block measures: UDP at each rate, paced TCP at each TCP rate, unpaced
/// TCP.
fn plan(settings: &Settings) -> Vec<Proto> {
    let udp = settings.rates_mbps.iter().map(|r| Proto::Udp {
        bits_per_second: r * 1_000_000,
    });
    let tcp = settings.tcp_rates_mbps.iter().map(|r| Proto::TcpAt {
        bits_per_second: r * 1_000_000,
    });
    udp.chain(tcp).chain([Proto::Tcp]).collect()
}

/// Progress on stderr, with an estimate of the time left.
struct Progress {
    started: Instant,
    done: usize,
    total: usize,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if self.done > 1 {
            elapsed / (self.done - 1) as f64 * (self.total + 1 - self.done) as f64
        } else {
            0.0
        };
        eprint!(
            "\r[{}/{}] {what:<60} {elapsed:>5.0} s elapsed, ~{left:>4.0} s left   ",
            self.done, self.total
        );
    }
}

/// A mode's point and the floor's beside it, in a drawn order.
fn pair(
    bed: &Bed,
    floor: &Bed,
    meter: &SoftirqMeter,
    proto: Proto,
    repetition: u32,
    duration: u32,
    floor_first: bool,
) -> Result<(Point, Point)> {
    let measure = |b: &Bed| measure::point(b, meter, proto, repetition, duration);
    let (mine, mut beside) = if floor_first {
        let f = measure(floor)?;
        (measure(bed)?, f)
    } else {
        let m = measure(bed)?;
        (m, measure(floor)?)
    };
    beside.beside = bed.mode.name().to_string();
    Ok((mine, beside))
}

pub fn run(settings: &Settings, meter: &SoftirqMeter) -> Result<Measured> {
    let mut rng = fastrand::Rng::with_seed(settings.order_seed);
    let floor = Bed::build(Mode::Floor, 0).context("building the floor")?;
    anyhow::ensure!(
        ping(floor.client(), floor.server_addr, 2)?,
        "floor: no connectivity"
    );
    let others: Vec<Mode> = settings
        .modes
        .iter()
        .copied()
        .filter(|m| *m != Mode::Floor)
        .collect();
    let plan = plan(settings);
    let mut progress = Progress {
        started: Instant::now(),
        done: 0,
        total: settings.repetitions as usize * others.len() * (plan.len() + 1),
    };
    let mut m = Measured {
        points: Vec::new(),
        small_packets: Vec::new(),
        latency: Vec::new(),
        meter_check: None,
    };
    let flood = Proto::UdpFlood {
        payload: settings.small_payload,
    };
    for repetition in 0..settings.repetitions {
        let mut order = others.clone();
        rng.shuffle(&mut order);
        for &mode in &order {
            let bed = Bed::build(mode, settings.calico_rules)
                .with_context(|| format!("building {}", mode.name()))?;
            // Warm up: neighbour entries, and proof of a path before measuring.
            anyhow::ensure!(
                ping(bed.client(), bed.server_addr, 2)?,
                "{}: no connectivity between the workloads",
                mode.name()
            );
            let mut points = plan.clone();
            rng.shuffle(&mut points);
            let first_of_bed = m.points.len();
            for proto in points.iter().copied() {
                progress.step(&format!(
                    "rep {}/{} {} {proto:?}",
                    repetition + 1,
                    settings.repetitions,
                    mode.name()
                ));
                let (mine, beside) = pair(
                    &bed,
                    &floor,
                    meter,
                    proto,
                    repetition,
                    settings.duration_s,
                    rng.bool(),
                )
                .with_context(|| format!("{} {proto:?}", mode.name()))?;
                m.points.push(mine);
                m.points.push(beside);
            }
            progress.step(&format!(
                "rep {} {} small packets",
                repetition + 1,
                mode.name()
            ));
            let (mine, beside) = pair(
                &bed,
                &floor,
                meter,
                flood,
                repetition,
                settings.duration_s,
                rng.bool(),
            )
            .with_context(|| format!("{}: small packets", mode.name()))?;
            m.small_packets.push(mine);
            m.small_packets.push(beside);
            // The programs' run time, in a pass of its own with BPF statistics on (1 s a
            // paced point), written into the points just measured.
            if mode.attach().is_some() {
                for (point, proto) in m.points[first_of_bed..].iter_mut().step_by(2).zip(&points) {
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
            m.latency
                .extend(latency(&bed, settings, repetition).with_context(|| mode.name())?);
        }
        m.latency
            .extend(latency(&floor, settings, repetition).context("floor")?);
    }
    eprintln!();
    if settings.meter_check_s > 0 {
        let mode = if others.contains(&Mode::Calico) {
            Mode::Calico
        } else {
            Mode::Floor
        };
        eprintln!(
            "meter check: {} s of UDP at 1 Gbit/s through {}",
            settings.meter_check_s,
            mode.name()
        );
        let bed = if mode == Mode::Floor {
            None
        } else {
            Some(Bed::build(mode, settings.calico_rules)?)
        };
        let bed = bed.as_ref().unwrap_or(&floor);
        m.meter_check = Some(measure::meter_check(bed, meter, settings.meter_check_s)?);
    }
    Ok(m)
}

/// qperf-style TCP request/response latency at every message size, on `bed`.
fn latency(bed: &Bed, settings: &Settings, repetition: u32) -> Result<Vec<LatencyPoint>> {
    settings
        .latency_sizes
        .iter()
        .map(|&size| {
            Ok(LatencyPoint {
                mode: bed.mode.name().to_string(),
                size,
                repetition,
                latency: probe::tcp_rr(
                    bed.client(),
                    bed.server(),
                    bed.server_addr,
                    size,
                    settings.latency_count,
                )?,
            })
        })
        .collect()
}
