//! Policy rule scaling: what a packet costs as the number of policy rules grows, for netfilter
//! (Calico-shaped iptables chains on each iptables backend and with ipsets, nftables with sets
//! and as a linear rule list) and for the eBPF dataplane's compiled policy.
//!
//! The server's workload (host 1) gets ingress policy: N rules its traffic does not match
//! (deny rules for other peers, which the iptables chain checks first, as Calico orders them),
//! one that allows the client, default deny. Each engine gets the same [`Policy`], rendered
//! for it ([`netlab::netfilter`]) or compiled into the eBPF maps.
//!
//! Measured per point: a UDP stream at a fixed rate (kernel-level CPU per Gbit/s; the eBPF
//! program's run time per packet), and request-response latency twice: all requests in one
//! flow (after the first, conntrack or the eBPF flow table admits them: the policy is not
//! consulted), and every request a new flow (the rules judge each one: the per-packet cost of
//! the rules themselves).
use std::{net::Ipv4Addr, time::Instant};

use anyhow::{Context, Result};
use dataplane::model::policy::{self, Policy};
use netlab::{
    netfilter as render,
    probe::{self, Flows, Latency},
    traffic::{Proto, ping},
};

use crate::{
    measure,
    modes::{Bed, Mode},
    softirq::SoftirqMeter,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// Calico-shaped chains through `iptables-restore`: Debian's iptables, the nf_tables
    /// backend.
    IptablesNft,
    /// The same chains through `iptables-legacy-restore`: the classic x_tables backend.
    IptablesLegacy,
    /// Calico-shaped chains whose rules live in ipsets (`hash:net,port`), as Calico scales
    /// selectors: one set match per chain and action.
    IptablesIpset,
    /// One nftables table, deny and allow interval sets per workload and direction.
    NftablesSets,
    /// One nftables table of plain rules, one per policy rule: a linear list.
    NftablesLinear,
    /// The eBPF dataplane (TC) with the policy compiled into its maps.
    Ebpf,
}

impl Engine {
    pub const ALL: [Engine; 6] = [
        Engine::IptablesNft,
        Engine::IptablesLegacy,
        Engine::IptablesIpset,
        Engine::NftablesSets,
        Engine::NftablesLinear,
        Engine::Ebpf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Engine::IptablesNft => "iptables-nft",
            Engine::IptablesLegacy => "iptables-legacy",
            Engine::IptablesIpset => "iptables-ipset",
            Engine::NftablesSets => "nftables-sets",
            Engine::NftablesLinear => "nftables-linear",
            Engine::Ebpf => "ebpf",
        }
    }

    /// The tool and version that implements it, as the tool reports itself.
    pub fn backend(self) -> String {
        let version = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| format!("{program}: not found"))
        };
        match self {
            Engine::IptablesNft => version("iptables", &["--version"]),
            Engine::IptablesLegacy => version("iptables-legacy", &["--version"]),
            Engine::IptablesIpset => format!(
                "{} + {}",
                version("iptables", &["--version"]),
                version("ipset", &["--version"])
            ),
            Engine::NftablesSets | Engine::NftablesLinear => version("nft", &["--version"]),
            Engine::Ebpf => "eBPF TC program, LPM tries (dataplane::plan::policy)".into(),
        }
    }
}

/// One engine, one rule count, one repetition.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ScalingPoint {
    pub engine: Engine,
    pub backend: String,
    /// Rules the traffic does not match (the policy also has the one that allows it).
    pub rules: usize,
    pub repetition: u32,
    /// Milliseconds to load the policy (render + restore, or compile + map writes).
    pub apply_ms: f64,
    pub rate_mbps: u64,
    pub achieved_mbps: f64,
    pub softirq_cpu_pct: f64,
    /// Kernel-level CPU (% of one CPU) per Gbit/s delivered.
    pub cpu_pct_per_gbps: f64,
    /// The eBPF programs' run time per packet (0 for netfilter engines).
    pub bpf_ns_per_run: f64,
    pub established: Latency,
    pub new_flows: Latency,
    /// Kernel-level CPU per new flow under a stream of them (the new-flow request-response
    /// run: each flow's request and reply, its conntrack or flow-table entry and its verdict),
    /// µs.
    #[serde(default)]
    pub new_flow_cpu_us: f64,
}

/// The policy: N deny rules for peers in 10.0.0.0/8 (never the client) on distinct ports,
/// one rule allowing the client, default deny, on the server.
pub fn policy(rules: usize, client: Ipv4Addr, server: Ipv4Addr) -> Policy {
    let mut text = format!("workload {server} ingress deny egress allow\n");
    for i in 0..rules {
        text.push_str(&format!(
            "deny ingress {server} peer 10.{}.{}.{}/32 proto tcp port {}\n",
            i / 65_536 % 256,
            i / 256 % 256,
            i % 256,
            10_000 + i % 50_000
        ));
    }
    text.push_str(&format!("allow ingress {server} peer {client}/32\n"));
    policy::parse(&text).expect("the generated policy parses")
}

/// Builds a bed whose server host enforces `rules` + 1 rules with `engine`; returns it and how
/// long loading the policy took.
pub fn build(engine: Engine, rules: usize) -> Result<(Bed, f64)> {
    let mode = match engine {
        Engine::Ebpf => Mode::EbpfRoutedTc,
        // Calico's wiring without its rules: the engine's rendering is all the netfilter.
        _ => Mode::KernelRouted,
    };
    let mut bed = Bed::build(mode, 0)?;
    let client = bed.client_addr().context("the bed has a client address")?;
    let policy = policy(rules, client, bed.server_addr);
    let started = Instant::now();
    if engine == Engine::Ebpf {
        bed.dataplanes[1].apply_policy(&policy)?;
    } else {
        let ns = bed.host(1).context("two-host bed")?;
        match engine {
            Engine::IptablesNft => ns.feed("iptables-restore", &[], &render::iptables(&policy))?,
            Engine::IptablesLegacy => {
                ns.feed("iptables-legacy-restore", &[], &render::iptables(&policy))?
            }
            Engine::IptablesIpset => {
                let (sets, rules) = render::iptables_ipset(&policy);
                ns.feed("ipset", &["restore"], &sets)?;
                ns.feed("iptables-restore", &[], &rules)?
            }
            Engine::NftablesLinear => {
                ns.feed("nft", &["-f", "-"], &render::nftables_linear(&policy))?
            }
            Engine::NftablesSets => ns.feed("nft", &["-f", "-"], &render::nftables(&policy))?,
            Engine::Ebpf => unreachable!("the eBPF engine's policy goes into its maps"),
        }
    }
    let apply_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok((bed, apply_ms))
}

/// Measures one point on a built bed.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    bed: &Bed,
    meter: &SoftirqMeter,
    engine: Engine,
    rules: usize,
    apply_ms: f64,
    repetition: u32,
    duration: u32,
    rate_mbps: u64,
    latency_count: usize,
) -> Result<ScalingPoint> {
    anyhow::ensure!(
        ping(bed.client(), bed.server_addr, 2)?,
        "{} with {rules} rules: the allowed client cannot reach the server",
        engine.name()
    );
    let stream = Proto::Udp {
        bits_per_second: rate_mbps * 1_000_000,
    };
    let p = measure::point(bed, meter, stream, repetition, duration)?;
    // The programs' run time in a pass of its own (BPF statistics on), eBPF engine only.
    let bpf_ns_per_run = if bed.dataplanes.is_empty() {
        0.0
    } else {
        let (ns, runs) = measure::run_time(bed, stream, 1)?;
        if runs > 0 {
            ns as f64 / runs as f64
        } else {
            0.0
        }
    };
    let rr = |flows| {
        probe::udp_rr_flows(
            bed.client(),
            bed.server(),
            bed.server_addr,
            100,
            latency_count,
            flows,
        )
    };
    let before = meter.read()?;
    let new_flows = rr(Flows::NewEach)?;
    let spent = meter.read()?.since(&before).total_ns();
    let new_flow_cpu_us = if new_flows.samples > 0 {
        spent as f64 / new_flows.samples as f64 / 1e3
    } else {
        f64::NAN
    };
    Ok(ScalingPoint {
        engine,
        backend: engine.backend(),
        rules,
        repetition,
        apply_ms,
        rate_mbps,
        achieved_mbps: p.achieved_mbps,
        softirq_cpu_pct: p.softirq_cpu_pct,
        cpu_pct_per_gbps: if p.achieved_mbps > 0.0 {
            p.softirq_cpu_pct / (p.achieved_mbps / 1000.0)
        } else {
            f64::NAN
        },
        bpf_ns_per_run,
        established: rr(Flows::One)?,
        new_flows,
        new_flow_cpu_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_policy_allows_the_client_only() {
        let (client, server) = (Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 2, 2));
        let p = policy(1000, client, server);
        assert_eq!(p.rule_count(), 1001);
        for (proto, port) in [(17, 5201), (6, 10_005), (1, 0)] {
            assert!(p.admits(client, server, proto, port));
            assert!(!p.admits(Ipv4Addr::new(10, 0, 0, 5), server, proto, port));
        }
    }
}
