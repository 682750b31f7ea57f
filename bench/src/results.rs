//! What a bench run produced (results.json, documented in README "Bench"), its CSV, and the
//! summaries the report and charts are drawn from.
use std::path::Path;

use anyhow::{Context, Result};
use netlab::probe::Latency;

use crate::{
    measure::Point,
    modes::Mode,
    policy_scaling::{Engine, ScalingPoint},
};

pub const SCHEMA_VERSION: u32 = 2;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub modes: Vec<Mode>,
    pub rates_mbps: Vec<u64>,
    pub protocols: Vec<String>,
    pub repetitions: u32,
    pub duration_s: u32,
    pub calico_rules: usize,
    pub latency_sizes: Vec<usize>,
    pub latency_count: usize,
    /// Policy rule scaling: rule counts (empty: not measured), engines, the stream's rate.
    pub policy_rules: Vec<usize>,
    pub policy_engines: Vec<Engine>,
    pub policy_rate_mbps: u64,
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
    pub settings: Settings,
    pub points: Vec<Point>,
    pub latency: Vec<LatencyPoint>,
    pub policy_scaling: Vec<ScalingPoint>,
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
             generator_cpu_pct,packets,lost_packets,jitter_ms,retransmits\n",
        );
        for p in &self.points {
            out.push_str(&format!(
                "{},{},{},{},{},{:.3},{},{},{},{:.3},{},{},{:.1},{:.3},{:.3},{},{},{:.4},{}\n",
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
                p.retransmits
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

    /// Kernel-level CPU above the floor: each repetition's softirq CPU less the floor's median
    /// at the same protocol and rate.
    pub fn above_floor(&self, mode: Mode, protocol: &str, rate: u64) -> Option<Spread> {
        let floor = self
            .spread(Mode::Floor, protocol, rate, |p| p.softirq_cpu_pct)?
            .median;
        self.spread(mode, protocol, rate, |p| p.softirq_cpu_pct - floor)
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

    /// A measure of the policy-scaling points of one engine and rule count.
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
}
