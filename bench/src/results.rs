//! What a bench run produced (results.json, documented in README "Bench"), its CSV, and the
//! summaries the report and charts are drawn from.
use std::path::Path;

use anyhow::{Context, Result};
use netlab::probe::Latency;

use crate::{
    measure::{MeterCheck, Point, SMALL_PACKETS},
    modes::Mode,
    policy_scaling::{Engine, ScalingPoint},
    service_scaling::{ServiceEngine, ServicePoint},
};

pub const SCHEMA_VERSION: u32 = 4;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub modes: Vec<Mode>,
    /// UDP rates (1400-byte datagrams).
    pub rates_mbps: Vec<u64>,
    /// TCP paced rates (empty by default: TCP is measured unpaced, `max`).
    pub tcp_rates_mbps: Vec<u64>,
    pub protocols: Vec<String>,
    pub repetitions: u32,
    pub duration_s: u32,
    pub calico_rules: usize,
    /// Seed of the mode and point order (shuffled per repetition) and of the bootstrap.
    pub order_seed: u64,
    /// Small packets: UDP payload bytes (18: a 64-byte Ethernet frame with its FCS).
    pub small_payload: u64,
    /// The softirq meter's check against /proc/stat: seconds of UDP at 1 Gbit/s (0: none).
    pub meter_check_s: u32,
    /// Route-table scale: prefixes added to a handful (empty: not measured).
    #[serde(default)]
    pub route_scale: Vec<usize>,
    /// Runs per path of the per-path cost table (0: not measured).
    #[serde(default)]
    pub path_runs: usize,
    /// qperf-style TCP request/response: message sizes and transactions per size.
    pub latency_sizes: Vec<usize>,
    pub latency_count: usize,
    /// Policy rule scaling: rule counts (empty: not measured), engines, the stream's rate.
    pub policy_rules: Vec<usize>,
    pub policy_engines: Vec<Engine>,
    pub policy_rate_mbps: u64,
    /// Service scaling: service counts (empty: not measured), engines, new connections per
    /// point, the established stream's rate.
    #[serde(default)]
    pub service_counts: Vec<usize>,
    #[serde(default)]
    pub service_engines: Vec<ServiceEngine>,
    #[serde(default)]
    pub service_connections: usize,
    #[serde(default)]
    pub service_rate_mbps: u64,
}

impl Settings {
    /// The paced rates measured for `protocol` (TCP's unpaced `max`, rate 0, not included).
    pub fn rates_for(&self, protocol: &str) -> &[u64] {
        match protocol {
            "tcp" => &self.tcp_rates_mbps,
            _ => &self.rates_mbps,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LatencyPoint {
    pub mode: String,
    pub size: usize,
    pub repetition: u32,
    #[serde(flatten)]
    pub latency: Latency,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Results {
    pub schema: u32,
    pub started_unix: u64,
    pub kernel: String,
    pub cpus: usize,
    /// Wall-clock seconds the run took (measurement only, not the build).
    pub duration_s: f64,
    pub settings: Settings,
    pub points: Vec<Point>,
    pub latency: Vec<LatencyPoint>,
    /// Small packets at the generator's maximum rate (protocol `udp-small`).
    pub small_packets: Vec<Point>,
    pub meter_check: Option<MeterCheck>,
    #[serde(default)]
    pub route_scale: Vec<crate::route_scale::RouteScalePoint>,
    /// Each packet path's program run time on crafted frames (BPF_PROG_TEST_RUN).
    #[serde(default)]
    pub path_costs: Vec<dataplane::kernel::path_costs::PathCost>,
    pub policy_scaling: Vec<ScalingPoint>,
    #[serde(default)]
    pub service_scaling: Vec<ServicePoint>,
}

/// An eBPF mode against its baseline at one protocol and rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Headline {
    /// Mean above-floor cost per packet of the mode / of the baseline, over the repetitions
    /// where all four points held their rate, and its 95 % bootstrap interval.
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
    /// The same without subtracting the floor.
    pub raw: f64,
    pub raw_low: f64,
    pub raw_high: f64,
    /// Each repetition's own above-floor ratio, in repetition order.
    pub per_repetition: Vec<f64>,
    /// Repetitions left out because a point missed its rate.
    pub excluded: usize,
}

/// Bootstrap resamples per interval.
const RESAMPLES: usize = 2000;

/// The ratio of means of paired samples and its 95 % percentile bootstrap interval
/// (repetitions resampled with replacement, pairs kept together).
pub fn ratio_interval(pairs: &[(f64, f64)], rng: &mut fastrand::Rng) -> Option<(f64, f64, f64)> {
    let ratio = |idx: &mut dyn Iterator<Item = usize>| {
        let (mut a, mut b) = (0.0, 0.0);
        for i in idx {
            a += pairs[i].0;
            b += pairs[i].1;
        }
        if b > 0.0 { a / b } else { f64::NAN }
    };
    if pairs.is_empty() {
        return None;
    }
    let estimate = ratio(&mut (0..pairs.len()));
    let mut samples: Vec<f64> = (0..RESAMPLES)
        .map(|_| ratio(&mut (0..pairs.len()).map(|_| rng.usize(..pairs.len()))))
        .filter(|x| x.is_finite())
        .collect();
    if !estimate.is_finite() || samples.is_empty() {
        return None;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Some((estimate, at(0.025), at(0.975)))
}

impl Results {
    pub fn load(dir: &Path) -> Result<Results> {
        let path = dir.join("results.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let r: Results =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            r.schema == SCHEMA_VERSION,
            "{} has schema {}, expected {SCHEMA_VERSION}",
            path.display(),
            r.schema
        );
        Ok(r)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join("results.csv"), self.csv())?;
        Ok(())
    }

    /// One row per point, every measure a column.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "mode,protocol,rate_mbps,repetition,duration_s,achieved_mbps,off_target,softirq_net_rx_ns,\
             softirq_net_tx_ns,softirq_cpu_pct,bpf_run_ns,bpf_run_count,bpf_ns_per_run,machine_busy_pct,\
             generator_cpu_pct,packets,lost_packets,jitter_ms,retransmits,client_tx_packets,\
             server_rx_packets,softirq_ns_per_packet,steal_pct,beside\n",
        );
        for p in self.points.iter().chain(&self.small_packets) {
            out.push_str(&format!(
                "{},{},{},{},{},{:.3},{},{},{},{:.3},{},{},{:.1},{:.3},{:.3},{},{},{:.4},{},{},{},{:.1},{:.2},{}\n",
                p.mode,
                p.protocol,
                p.rate_mbps,
                p.repetition,
                p.duration_s,
                p.achieved_mbps,
                p.off_target,
                p.softirq_net_rx_ns,
                p.softirq_net_tx_ns,
                p.softirq_cpu_pct,
                p.bpf_run_ns,
                p.bpf_run_count,
                p.bpf_ns_per_run,
                p.machine_busy_pct,
                p.generator_cpu_pct,
                p.packets,
                p.lost_packets,
                p.jitter_ms,
                p.retransmits,
                p.client_tx_packets,
                p.server_rx_packets,
                p.softirq_ns_per_packet,
                p.steal_pct,
                p.beside
            ));
        }
        out
    }

    /// Points of one mode, protocol and rate (all repetitions).
    pub fn points_at(&self, mode: Mode, protocol: &str, rate: u64) -> Vec<&Point> {
        self.points
            .iter()
            .filter(|p| p.mode == mode.name() && p.protocol == protocol && p.rate_mbps == rate)
            .collect()
    }

    /// A measure over the repetitions of one point.
    pub fn spread(
        &self,
        mode: Mode,
        protocol: &str,
        rate: u64,
        f: impl Fn(&Point) -> f64,
    ) -> Option<Spread> {
        Spread::of(
            self.points_at(mode, protocol, rate)
                .into_iter()
                .map(f)
                .collect(),
        )
    }

    /// The floor point measured beside `point` (same repetition, protocol and rate).
    pub fn floor_beside<'a>(&'a self, point: &Point, among: &'a [Point]) -> Option<&'a Point> {
        among.iter().find(|f| {
            f.mode == Mode::Floor.name()
                && f.beside == point.mode
                && f.repetition == point.repetition
                && f.protocol == point.protocol
                && f.rate_mbps == point.rate_mbps
        })
    }

    /// Per repetition: `f` of the mode's point less `f` of the floor point beside it, and
    /// whether both held their rate.
    pub fn paired(
        &self,
        mode: Mode,
        protocol: &str,
        rate: u64,
        f: impl Fn(&Point) -> f64,
    ) -> Vec<(u32, f64, f64, bool)> {
        let among = if protocol == SMALL_PACKETS {
            &self.small_packets
        } else {
            &self.points
        };
        among
            .iter()
            .filter(|p| p.mode == mode.name() && p.protocol == protocol && p.rate_mbps == rate)
            .filter_map(|p| {
                let floor = self.floor_beside(p, among)?;
                Some((
                    p.repetition,
                    f(p),
                    f(floor),
                    !p.off_target && !floor.off_target,
                ))
            })
            .collect()
    }

    /// Kernel-level CPU above the floor, % of one CPU: each repetition's softirq CPU less that
    /// of the floor point measured beside it.
    pub fn above_floor(&self, mode: Mode, protocol: &str, rate: u64) -> Option<Spread> {
        self.above_floor_of(mode, protocol, rate, |p| p.softirq_cpu_pct)
    }

    /// Kernel-level CPU per packet the server received, above the floor's (ns).
    pub fn above_floor_per_packet(&self, mode: Mode, protocol: &str, rate: u64) -> Option<Spread> {
        self.above_floor_of(mode, protocol, rate, |p| p.softirq_ns_per_packet)
    }

    /// `f` of the mode's points less `f` of the floor points beside them, over repetitions.
    fn above_floor_of(
        &self,
        mode: Mode,
        protocol: &str,
        rate: u64,
        f: impl Fn(&Point) -> f64,
    ) -> Option<Spread> {
        Spread::of(
            self.paired(mode, protocol, rate, f)
                .into_iter()
                .map(|(_, m, f, _)| m - f)
                .collect(),
        )
    }

    /// `mode` against its baseline: above-floor cost per packet, repetition by repetition.
    pub fn headline(&self, mode: Mode, protocol: &str, rate: u64) -> Option<Headline> {
        let base = mode.baseline()?;
        let per_packet = |p: &Point| p.softirq_ns_per_packet;
        let ours = self.paired(mode, protocol, rate, per_packet);
        let theirs = self.paired(base, protocol, rate, per_packet);
        let mut above = Vec::new();
        let mut raw = Vec::new();
        let mut excluded = 0;
        for (rep, m, f, held) in &ours {
            let Some((_, bm, bf, bheld)) = theirs.iter().find(|t| t.0 == *rep) else {
                continue;
            };
            if !held || !bheld {
                excluded += 1;
                continue;
            }
            above.push((m - f, bm - bf));
            raw.push((*m, *bm));
        }
        // Seeded by the point, so that a redrawn report gives the same interval.
        let seed = self.settings.order_seed ^ rate ^ (mode as u64) << 32;
        let mut rng = fastrand::Rng::with_seed(seed);
        let (ratio, low, high) = ratio_interval(&above, &mut rng)?;
        let (raw, raw_low, raw_high) = ratio_interval(&raw, &mut rng)?;
        Some(Headline {
            ratio,
            low,
            high,
            raw,
            raw_low,
            raw_high,
            per_repetition: above
                .iter()
                .map(|(a, b)| if *b > 0.0 { a / b } else { f64::NAN })
                .collect(),
            excluded,
        })
    }

    pub fn any_off_target(&self, mode: Mode, protocol: &str, rate: u64) -> bool {
        self.points_at(mode, protocol, rate)
            .iter()
            .any(|p| p.off_target)
    }

    pub fn latency_spread(
        &self,
        mode: Mode,
        size: usize,
        f: impl Fn(&Latency) -> f64,
    ) -> Option<Spread> {
        Spread::of(
            self.latency
                .iter()
                .filter(|l| l.mode == mode.name() && l.size == size)
                .map(|l| f(&l.latency))
                .collect(),
        )
    }

    pub fn modes(&self) -> Vec<Mode> {
        self.settings.modes.clone()
    }

    /// A measure of the route-scale points with `extra` more routes.
    pub fn route_scale_spread(
        &self,
        extra: usize,
        f: impl Fn(&crate::route_scale::RouteScalePoint) -> f64,
    ) -> Option<Spread> {
        Spread::of(
            self.route_scale
                .iter()
                .filter(|p| p.extra_routes == extra)
                .map(f)
                .collect(),
        )
    }

    /// A measure of the policy-scaling points of one engine and rule count.
    pub fn service_spread(
        &self,
        engine: ServiceEngine,
        services: usize,
        f: impl Fn(&ServicePoint) -> f64,
    ) -> Option<Spread> {
        Spread::of(
            self.service_scaling
                .iter()
                .filter(|p| p.engine == engine && p.services == services)
                .map(f)
                .collect(),
        )
    }

    pub fn scaling_spread(
        &self,
        engine: Engine,
        rules: usize,
        f: impl Fn(&ScalingPoint) -> f64,
    ) -> Option<Spread> {
        Spread::of(
            self.policy_scaling
                .iter()
                .filter(|p| p.engine == engine && p.rules == rules)
                .map(f)
                .collect(),
        )
    }
}

/// Median, minimum and maximum of a measure over repetitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Option<Spread> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_median_min_max() {
        let s = Spread::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(vec![]).is_none());
        assert_eq!(Spread::of(vec![f64::NAN, 1.0]).unwrap().n, 1);
    }

    #[test]
    fn ratio_interval_brackets_the_ratio_of_means() {
        let mut rng = fastrand::Rng::with_seed(7);
        let pairs = [(1.0, 4.0), (2.0, 4.0), (1.5, 5.0), (1.2, 3.0)];
        let (r, lo, hi) = ratio_interval(&pairs, &mut rng).unwrap();
        assert!((r - 5.7 / 16.0).abs() < 1e-12);
        assert!(lo <= r && r <= hi, "{lo} {r} {hi}");
        // Resampled ratios lie between the smallest and largest single-pair ratios.
        assert!(lo >= 0.25 - 1e-12 && hi <= 0.5 + 1e-12, "{lo} {hi}");
        // Identical pairs: no spread at all.
        let (r, lo, hi) = ratio_interval(&[(1.0, 2.0); 3], &mut rng).unwrap();
        assert_eq!((r, lo, hi), (0.5, 0.5, 0.5));
        assert!(ratio_interval(&[], &mut rng).is_none());
        assert!(ratio_interval(&[(1.0, 0.0)], &mut rng).is_none());
    }
}
