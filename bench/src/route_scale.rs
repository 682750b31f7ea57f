//! The route table's scale: what loading a table of N prefixes costs, and what a packet costs
//! once the route map holds them, against a table of a handful. The extra prefixes are /32s
//! the traffic never matches ([`crate::modes::extra_routes`]), on both hosts, with the route
//! map sized to hold them; traffic is the bench's UDP stream through `ebpf-routed-tc`.
use anyhow::{Context, Result};
use netlab::traffic::{Proto, ping};

use crate::{
    measure,
    modes::{Bed, Mode, RouteLoad},
    softirq::SoftirqMeter,
};

/// The stream of every point: well within what the mode forwards here.
pub const RATE_MBPS: u64 = 500;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RouteScalePoint {
    /// Prefixes added to the bed's own (a handful: its workloads and the other host's).
    pub extra_routes: usize,
    pub repetition: u32,
    /// Host 0's table: parsed, resolved against the kernel, written into the maps.
    pub load: RouteLoad,
    /// The programs' run time per run (a 1 s pass with BPF statistics on).
    pub bpf_ns_per_run: f64,
    /// Kernel-level CPU per packet received (BPF statistics off).
    pub softirq_ns_per_packet: f64,
    pub achieved_mbps: f64,
}

pub fn measure(
    extra: usize,
    repetition: u32,
    meter: &SoftirqMeter,
    duration: u32,
) -> Result<RouteScalePoint> {
    let bed = Bed::build_with_routes(Mode::EbpfRoutedTc, extra)
        .with_context(|| format!("a bed with {extra} more routes"))?;
    anyhow::ensure!(
        ping(bed.client(), bed.server_addr, 2)?,
        "{extra} more routes: no connectivity between the workloads"
    );
    let stream = Proto::Udp {
        bits_per_second: RATE_MBPS * 1_000_000,
    };
    let p = measure::point(&bed, meter, stream, repetition, duration)?;
    let (ns, runs) = measure::run_time(&bed, stream, 1)?;
    Ok(RouteScalePoint {
        extra_routes: extra,
        repetition,
        load: bed.route_load.context("an eBPF bed times its route load")?,
        bpf_ns_per_run: if runs > 0 {
            ns as f64 / runs as f64
        } else {
            f64::NAN
        },
        softirq_ns_per_packet: p.softirq_ns_per_packet,
        achieved_mbps: p.achieved_mbps,
    })
}
