//! What the maps should hold: the route table file resolved against the system, plus the live
//! feeds: the workloads the CNI plugin wired (their interfaces attached, their /32s routed),
//! with `--routes-from-kernel` the kernel routes the filter takes, with `--etcd` the routes to
//! the other hosts of the cluster.
//!
//! The file is all or nothing (a table with a bad line is not applied). The feeds are live: a
//! route of theirs that cannot be realised (its next hop does not answer ARP, its interface is
//! gone) is left out with a warning and the others are taken; its packets go on to the kernel.
//! Where the file and a feed both route a prefix, the file wins; between feeds, the first
//! listed.
use std::collections::{BTreeMap, BTreeSet};

use dataplane::{
    model::{
        Ipv4Prefix, LineError,
        route_table::{Attach, Config, Interface, Role, Route, Target},
    },
    plan::{
        Plan,
        kernel_routes::{self, KernelRouteFilter, Skipped},
        resolve::{self, LiveSystem},
    },
    system::{netinfo, workloads::WorkloadRecord},
};

/// The plan, and what was left out of the feeds that an operator should hear of.
pub struct Desired {
    pub plan: Plan,
    /// Routes in the plan from the kernel, and from the cluster.
    pub from_kernel: usize,
    pub from_cluster: usize,
    /// Workloads of the CNI plugin in the plan.
    pub workloads: usize,
    /// Routes of the feeds left out because they could not be resolved (a next hop that does
    /// not answer ARP, say).
    pub unresolved: usize,
    pub warnings: Vec<String>,
}

/// The live feeds besides the file.
pub struct Feeds<'a> {
    pub workloads: &'a [WorkloadRecord],
    /// How workload interfaces are attached.
    pub workload_attach: Attach,
    pub kernel: Option<&'a KernelRouteFilter>,
    pub cluster: &'a [Route],
}

pub fn desired(config: &Config, feeds: &Feeds) -> Result<Desired, Vec<LineError>> {
    let Feeds {
        workloads,
        workload_attach,
        kernel,
        cluster,
    } = *feeds;
    let mut plan = resolve::resolve(config, &LiveSystem)?;
    let mut warnings = Vec::new();
    let mut unresolved = 0;
    let mut from_kernel = 0;
    let workload_feed =
        workload_config(config, workloads, workload_attach, &mut warnings).map_err(|e| vec![e])?;
    let workloads = merge(
        &mut plan,
        config,
        workload_feed,
        "workload",
        &mut warnings,
        &mut unresolved,
    )?;
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
            routes_only(routes),
            "kernel route",
            &mut warnings,
            &mut unresolved,
        )?;
    }
    let from_cluster = merge(
        &mut plan,
        config,
        routes_only(cluster.to_vec()),
        "cluster route",
        &mut warnings,
        &mut unresolved,
    )?;
    Ok(Desired {
        plan,
        from_kernel,
        from_cluster,
        workloads,
        unresolved,
        warnings,
    })
}

fn routes_only(routes: Vec<Route>) -> Config {
    Config {
        routes,
        ..Config::default()
    }
}

/// The CNI plugin's workloads as table lines: each an interface (attached as `attach`, a
/// workload interface) and its /32, both numbered with the record's place so that a record
/// that cannot be realised is left out whole. A record whose interface is gone (a container
/// that died without a DEL) is left out: the dataplane never attaches to a missing interface,
/// and releases what it had there.
fn workload_config(
    config: &Config,
    records: &[WorkloadRecord],
    attach: Attach,
    warnings: &mut Vec<String>,
) -> Result<Config, LineError> {
    if records.is_empty() {
        return Ok(Config::default());
    }
    let links = netinfo::links().map_err(|e| LineError {
        line: 0,
        message: e.to_string(),
    })?;
    let mut feed = Config::default();
    for (i, record) in records.iter().enumerate() {
        let line = i + 1;
        if !links.iter().any(|l| l.name == record.host_ifname) {
            // The usual order when a container stops: its namespace (and the veth) goes
            // first, the runtime's DEL (which removes the record) after.
            tracing::debug!(
                container = record.container_id,
                addr = %record.addr,
                ifname = record.host_ifname,
                "workload's interface is gone: not taken"
            );
            continue;
        }
        if config
            .interfaces
            .iter()
            .any(|i| i.name == record.host_ifname)
        {
            warnings.push(format!(
                "workload {}: its interface `{}` is also in the route table, which wins: not taken",
                record.container_id, record.host_ifname
            ));
            continue;
        }
        feed.interfaces.push(Interface {
            name: record.host_ifname.clone(),
            attach,
            role: Role::Workload,
            line,
        });
        feed.routes.push(Route {
            prefix: Ipv4Prefix::new(record.addr, 32).expect("a /32 has no host bits"),
            target: Target::Local {
                dev: record.host_ifname.clone(),
            },
            line,
        });
    }
    Ok(feed)
}

/// Adds a feed (its routes, and the interfaces to attach) to `plan` (the plan's own prefixes
/// win); returns how many routes were added. What cannot be resolved is left out with a
/// warning: a route, with the interface of the same line.
fn merge(
    plan: &mut Plan,
    config: &Config,
    feed: Config,
    what: &str,
    warnings: &mut Vec<String>,
    unresolved: &mut usize,
) -> Result<usize, Vec<LineError>> {
    let Config {
        mut interfaces,
        mut routes,
        ..
    } = feed;
    if routes.is_empty() {
        return Ok(0);
    }
    let mut refused_lines = BTreeSet::new();
    routes.retain(|r| {
        let taken = plan.routes.contains_key(&r.prefix);
        if taken {
            warnings.push(format!(
                "{what} {} is already routed (by the route table or an earlier feed): not taken",
                r.prefix
            ));
            refused_lines.insert(r.line);
        }
        !taken
    });
    interfaces.retain(|i| !refused_lines.contains(&i.line));
    let described: BTreeMap<usize, String> = routes
        .iter()
        .map(|r| (r.line, format!("{} {:?}", r.prefix, r.target)))
        .collect();
    let mut feed = Config {
        interfaces: interfaces
            .into_iter()
            .chain(config.interfaces.clone())
            .collect(),
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
            feed.interfaces.retain(|i| !bad.contains(&i.line));
            resolve::resolve(&feed, &LiveSystem)?
        }
    };
    let added = resolved.routes.len();
    // The file's interfaces are attached already.
    plan.attachments.extend(
        resolved
            .attachments
            .into_iter()
            .filter(|a| !config.interfaces.iter().any(|i| i.name == a.ifname)),
    );
    plan.tx_ports.extend(resolved.tx_ports);
    plan.peers.extend(resolved.peers);
    plan.routes.extend(resolved.routes);
    Ok(added)
}
