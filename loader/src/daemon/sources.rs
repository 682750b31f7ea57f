//! What the maps should hold: the route table file resolved against the system, plus the live
//! feeds: with `--routes-from-kernel` the kernel routes the filter takes, with `--etcd` the
//! routes to the other hosts of the cluster.
//!
//! The file is all or nothing (a table with a bad line is not applied). The feeds are live: a
//! route of theirs that cannot be realised (its next hop does not answer ARP, say) is left out
//! with a warning and the others are taken; its packets go on to the kernel. Where the file
//! and a feed both route a prefix, the file wins; between feeds, the first listed.
use std::collections::{BTreeMap, BTreeSet};

use dataplane::{
    model::{
        LineError,
        route_table::{Config, Route},
    },
    plan::{
        Plan,
        kernel_routes::{self, KernelRouteFilter, Skipped},
        resolve::{self, LiveSystem},
    },
    system::netinfo,
};

/// The plan, and what was left out of the feeds that an operator should hear of.
pub struct Desired {
    pub plan: Plan,
    /// Routes in the plan from the kernel, and from the cluster.
    pub from_kernel: usize,
    pub from_cluster: usize,
    /// Routes of the feeds left out because they could not be resolved (a next hop that does
    /// not answer ARP, say).
    pub unresolved: usize,
    pub warnings: Vec<String>,
}

pub fn desired(
    config: &Config,
    kernel: Option<&KernelRouteFilter>,
    cluster: &[Route],
) -> Result<Desired, Vec<LineError>> {
    let mut plan = resolve::resolve(config, &LiveSystem)?;
    let mut warnings = Vec::new();
    let mut unresolved = 0;
    let mut from_kernel = 0;
    if let Some(filter) = kernel {
        let table = netinfo::kernel_routes(&filter.table).map_err(|e| {
            vec![LineError {
                line: 0,
                message: format!("reading the kernel's routes: {e}"),
            }]
        })?;
        let (routes, skipped) = kernel_routes::select(&table, filter, config);
        warnings.extend(skipped.iter().map(|s| match s {
            Skipped::Multipath(dst) => {
                format!("kernel route {dst} has several next hops: not taken (one per prefix)")
            }
            Skipped::UndeclaredDevice { dst, dev } => format!(
                "kernel route {dst} goes through `{dev}`, which the route table does not declare: not taken"
            ),
        }));
        from_kernel = merge(
            &mut plan,
            config,
            routes,
            "kernel route",
            &mut warnings,
            &mut unresolved,
        )?;
    }
    let from_cluster = merge(
        &mut plan,
        config,
        cluster.to_vec(),
        "cluster route",
        &mut warnings,
        &mut unresolved,
    )?;
    Ok(Desired {
        plan,
        from_kernel,
        from_cluster,
        unresolved,
        warnings,
    })
}

/// Adds a feed's `routes` to `plan` (the plan's own prefixes win); returns how many were
/// added. Routes that cannot be resolved are left out with a warning.
fn merge(
    plan: &mut Plan,
    config: &Config,
    mut routes: Vec<Route>,
    what: &str,
    warnings: &mut Vec<String>,
    unresolved: &mut usize,
) -> Result<usize, Vec<LineError>> {
    if routes.is_empty() {
        return Ok(0);
    }
    routes.retain(|r| {
        let taken = plan.routes.contains_key(&r.prefix);
        if taken {
            warnings.push(format!(
                "{what} {} is already routed (by the route table or an earlier feed): not taken",
                r.prefix
            ));
        }
        !taken
    });
    let described: BTreeMap<usize, String> = routes
        .iter()
        .map(|r| (r.line, format!("{} {:?}", r.prefix, r.target)))
        .collect();
    let mut feed = Config {
        interfaces: config.interfaces.clone(),
        routes,
        vxlan: config.vxlan.clone(),
    };
    let resolved = match resolve::resolve(&feed, &LiveSystem) {
        Ok(p) => p,
        Err(errors) => {
            // Problems of the system as a whole are not any route's: nothing is applied.
            if errors.iter().any(|e| e.line == 0) {
                return Err(errors);
            }
            let bad: BTreeSet<usize> = errors.iter().map(|e| e.line).collect();
            *unresolved += bad.len();
            for e in &errors {
                warnings.push(format!(
                    "{what} {}: {}: not taken",
                    described.get(&e.line).map_or("?", String::as_str),
                    e.message
                ));
            }
            feed.routes.retain(|r| !bad.contains(&r.line));
            resolve::resolve(&feed, &LiveSystem)?
        }
    };
    let added = resolved.routes.len();
    plan.tx_ports.extend(resolved.tx_ports);
    plan.peers.extend(resolved.peers);
    plan.routes.extend(resolved.routes);
    Ok(added)
}
