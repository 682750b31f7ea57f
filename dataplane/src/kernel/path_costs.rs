//! What each packet path costs the programs, measured on crafted frames (BPF_PROG_TEST_RUN)
//! instead of under traffic: a figure far steadier than one taken under load (no traffic
//! generator, no softirq scheduling; what noise is left only adds time, hence the quietest
//! batch), so that a change to the hot path shows without a full bench run.
//!
//! Every run is one BPF_PROG_TEST_RUN call with `repeat` 1: the kernel copies the frame into
//! a fresh buffer each time (a rewrite repeated on one buffer would change the path: a TTL
//! decremented again and again expires), times the program alone, and returns its verdict,
//! which is checked on every run (a path that took another turn is an error, not a figure).
//! The host is [`super::synthetic`]'s; the caller provides a network namespace of its own
//! (the programs' device map holds its `lo`).
use std::net::Ipv4Addr;

use dataplane_common::Hook;

use super::{Dataplane, DataplaneError, synthetic::*};
use crate::model::{policy, route_table::Role, services};

/// One path's cost at one hook: the percentiles of its quietest batch of runs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PathCost {
    pub path: String,
    /// `xdp` or `tc`.
    pub hook: String,
    pub runs: usize,
    /// Run time per run, ns: median, 10th and 90th percentiles of the batch of [`BATCH`] runs
    /// with the lowest median.
    pub p50_ns: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
}

/// What a path's frames must come back with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    Redirect,
    Drop,
}

impl Verdict {
    fn code(self, hook: Hook) -> u32 {
        match (self, hook) {
            (Verdict::Redirect, Hook::Xdp) => 4, // XDP_REDIRECT
            (Verdict::Redirect, Hook::Tc) => 7,  // TC_ACT_REDIRECT
            (Verdict::Drop, Hook::Xdp) => 1,     // XDP_DROP
            (Verdict::Drop, Hook::Tc) => 2,      // TC_ACT_SHOT
        }
    }
}

/// A path: where its frames arrive, and the frame of run `i`.
struct Path {
    name: &'static str,
    role: Role,
    frame: fn(u32) -> Vec<u8>,
    verdict: Verdict,
}

/// The peer the policy paths' frames come from (the frame builders' default source).
const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 9);

/// The paths with no workload under policy.
const PLAIN: [Path; 5] = [
    Path {
        name: "routed, to a local workload",
        role: Role::Underlay,
        frame: |_| ipv4_frame(LOCAL_WORKLOAD, 64),
        verdict: Verdict::Redirect,
    },
    Path {
        name: "routed, from a workload to another host",
        role: Role::Workload,
        frame: |_| {
            from_source(
                &ipv4_frame(Ipv4Addr::new(198, 18, 2, 5), 64),
                LOCAL_WORKLOAD,
            )
        },
        verdict: Verdict::Redirect,
    },
    Path {
        name: "VXLAN encapsulation, from a workload",
        role: Role::Workload,
        frame: |_| {
            from_source(
                &ipv4_frame(Ipv4Addr::new(198, 18, 3, 5), 64),
                LOCAL_WORKLOAD,
            )
        },
        verdict: Verdict::Redirect,
    },
    Path {
        name: "VXLAN decapsulation, to a local workload",
        role: Role::Underlay,
        frame: |_| kernel_vxlan_frame(VNI, VXLAN_PORT, LOCAL_WORKLOAD, 0),
        verdict: Verdict::Redirect,
    },
    Path {
        name: "source check refusal (spoofed source)",
        role: Role::Workload,
        frame: |_| {
            from_source(
                &ipv4_frame(Ipv4Addr::new(198, 18, 2, 5), 64),
                Ipv4Addr::new(198, 18, 1, 9),
            )
        },
        verdict: Verdict::Drop,
    },
];

/// The paths through the policy stage: the local workload under an ingress policy that admits
/// [`PEER`].
const POLICED: [Path; 2] = [
    Path {
        name: "policy, established flow",
        role: Role::Underlay,
        frame: |_| l4_frame(PEER, LOCAL_WORKLOAD, UDP, 4000, 5000, 0),
        verdict: Verdict::Redirect,
    },
    Path {
        name: "policy, new flow (a new source port each run)",
        role: Role::Underlay,
        frame: |i| {
            l4_frame(
                PEER,
                LOCAL_WORKLOAD,
                UDP,
                10_000 + (i % 50_000) as u16,
                5000,
                0,
            )
        },
        verdict: Verdict::Redirect,
    },
];

const POLICY: &str = "workload 198.18.1.2 ingress deny egress allow\n\
                      allow ingress 198.18.1.2 peer 198.18.9.0/24\n";

/// The service of the service paths, its backend behind the routed remote prefix, and the
/// client port of the established connection (new connections use 10 000 and up).
const SERVICE: &str = "service dns 10.96.0.10:53 udp 198.18.2.5:5353\n";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 5);
const CLIENT_PORT: u16 = 4000;

/// The paths through the service stage (no workload under policy).
const SERVICED: [Path; 3] = [
    Path {
        name: "service, new connection (a new source port each run)",
        role: Role::Workload,
        frame: |i| {
            l4_frame(
                LOCAL_WORKLOAD,
                VIP,
                UDP,
                10_000 + (i % 50_000) as u16,
                53,
                0,
            )
        },
        verdict: Verdict::Redirect,
    },
    Path {
        name: "service, established connection",
        role: Role::Workload,
        frame: |_| l4_frame(LOCAL_WORKLOAD, VIP, UDP, CLIENT_PORT, 53, 0),
        verdict: Verdict::Redirect,
    },
    Path {
        name: "service, a backend's reply to a local workload",
        role: Role::Underlay,
        frame: |_| l4_frame(BACKEND, LOCAL_WORKLOAD, UDP, 5353, CLIENT_PORT, 0),
        verdict: Verdict::Redirect,
    },
];

/// Loads the programs in the current network namespace, fills their maps with the synthetic
/// host's plan and measures every path `runs` times at each hook. The paths of a group take
/// turns run by run (and the hooks within), so that a slow spell of the machine lands on all of
/// them alike rather than on whichever path it happened to meet.
pub fn measure(runs: usize) -> Result<Vec<PathCost>, DataplaneError> {
    let mut dataplane = Dataplane::load()?;
    dataplane.apply(&plan(true))?;
    let mut costs = measure_group(&dataplane, &PLAIN, runs)?;
    let policy = policy::parse(POLICY).expect("the path costs' policy parses");
    dataplane.apply_policy(&policy)?;
    costs.extend(measure_group(&dataplane, &POLICED, runs)?);
    dataplane.apply_policy(&policy::Policy::default())?;
    let services = services::parse(SERVICE).expect("the path costs' service parses");
    dataplane.apply_services(&services)?;
    costs.extend(measure_group(&dataplane, &SERVICED, runs)?);
    Ok(costs)
}

fn measure_group(
    dataplane: &Dataplane,
    paths: &[Path],
    runs: usize,
) -> Result<Vec<PathCost>, DataplaneError> {
    let turns: Vec<(&Path, Hook)> = paths
        .iter()
        .flat_map(|p| Hook::ALL.map(|h| (p, h)))
        .collect();
    // A first run of each outside the figures: it records the established paths' flows.
    for (path, hook) in &turns {
        dataplane.run_on_frame(*hook, path.role, &(path.frame)(0))?;
    }
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); turns.len()];
    for i in 0..runs {
        for (turn, ((path, hook), times)) in turns.iter().zip(&mut ns).enumerate() {
            // Each turn its own run numbers: the hooks share the flow tables, and a new flow
            // one hook recorded would be an established one for the other.
            let frame = (path.frame)(((i + 1) * turns.len() + turn) as u32);
            let (verdict, took) = dataplane.time_on_frame(*hook, path.role, &frame)?;
            if verdict != path.verdict.code(*hook) {
                return Err(DataplaneError::PathTookAnotherTurn {
                    path: path.name,
                    hook: hook.name(),
                    want: path.verdict.code(*hook),
                    got: verdict,
                });
            }
            times.push(took.as_nanos() as f64);
        }
    }
    Ok(turns
        .iter()
        .zip(ns)
        .map(|((path, hook), times)| {
            let quietest = times
                .chunks(BATCH.min(runs))
                .map(Percentiles::of)
                .min_by(|a, b| a.p50.total_cmp(&b.p50))
                .expect("at least one run");
            PathCost {
                path: path.name.to_string(),
                hook: hook.name().to_string(),
                runs,
                p50_ns: quietest.p50,
                p10_ns: quietest.p10,
                p90_ns: quietest.p90,
            }
        })
        .collect())
}

/// Runs per batch. The machine's noise (another process, the hypervisor) only ever adds time,
/// and it comes in spells: of the batches, the one with the lowest median is the figure.
const BATCH: usize = 2_000;

struct Percentiles {
    p10: f64,
    p50: f64,
    p90: f64,
}

impl Percentiles {
    fn of(times: &[f64]) -> Self {
        let mut sorted = times.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            p10: at(0.1),
            p50: at(0.5),
            p90: at(0.9),
        }
    }
}
