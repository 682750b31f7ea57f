//! What the maps should hold, from every source at once: the route table resolved against the
//! system, plus the live feeds: the workloads the CNI plugin wired (their interfaces attached,
//! their /32s routed), the kernel routes a filter takes (`--routes-from-kernel`), and the routes
//! to the other hosts of the cluster (`--etcd`).
//!
//! Every source degrades line by line: a line of the table, or a route of a feed, that cannot
//! be realised on this host now (its next hop does not answer ARP, its interface is gone) is
//! left out with a warning and counted, and the others are taken; its packets go on to the
//! kernel, and the daemon tries it again later. Only a table that does not parse (refused
//! before it gets here) or a host that cannot be read at all stops a plan.
//! Where the table and a feed both route a prefix, the table wins; between feeds, the first
//! listed (workloads, kernel, cluster).
//!
//! No I/O of its own: everything about the host is asked of a [`System`].
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{
    Plan,
    kernel_routes::{self, KernelRouteFilter, Skipped},
    resolve::{self, NeighbourCache, System},
};
use crate::{
    model::{
        Ipv4Prefix, LineError,
        cluster::{self, HostRecord},
        route_table::{Attach, Config, Interface, Role, Route, Target},
    },
    system::workloads::WorkloadRecord,
};

/// The live feeds besides the route table, as they are now.
#[derive(Clone, Copy)]
pub struct Feeds<'a> {
    /// The CNI plugin's workload records.
    pub workloads: &'a [WorkloadRecord],
    /// What was wrong in the records' directory (files that are not records): warnings.
    pub workload_problems: &'a [String],
    /// How workload interfaces are attached.
    pub workload_attach: Attach,
    /// With `--routes-from-kernel`: which kernel routes to take.
    pub kernel: Option<&'a KernelRouteFilter>,
    /// In cluster mode: the other hosts' records.
    pub cluster: Option<ClusterRecords<'a>>,
}

/// The cluster's host records as a feed of routes.
#[derive(Clone, Copy)]
pub struct ClusterRecords<'a> {
    /// By store key.
    pub records: &'a BTreeMap<String, HostRecord>,
    /// This host's own prefix (its record is not a route).
    pub own: Ipv4Prefix,
    /// The interface routed records are reached through.
    pub underlay_if: &'a str,
}

/// The plan, and what was left out of the feeds that an operator should hear of.
#[derive(Clone, Debug, Default, PartialEq)]
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
    /// Lines of the route table left out because they cannot be realised on this host now
    /// (with the lines that depend on them: the routes through a missing interface).
    pub table_lines_left_out: usize,
    /// Everything an operator should hear of, each once (the caller logs the new ones).
    pub warnings: Vec<String>,
}

/// What the maps should hold for the route table `config` and the feeds; an error (with the
/// table's lines) if the table itself cannot be realised.
pub fn desired(
    config: &Config,
    feeds: &Feeds,
    system: &dyn System,
) -> Result<Desired, Vec<LineError>> {
    // One answer per neighbour for the whole pass: a next hop that does not answer is waited
    // for once, not again for each feed and each retry of the table.
    let system: &dyn System = &NeighbourCache::new(system);
    let mut warnings = feeds.workload_problems.to_vec();
    let (config, mut plan, table_lines_left_out) = realisable_table(config, system, &mut warnings)?;
    let config = &config;
    let mut merger = Merger {
        config,
        system,
        warnings,
        unresolved: 0,
    };
    let workload_feed = workload_config(config, feeds, system, &mut merger.warnings)?;
    let workloads = merger.merge(&mut plan, workload_feed, "workload")?;
    let from_kernel = match feeds.kernel {
        Some(filter) => {
            let routes = kernel_feed(config, filter, system, &mut merger.warnings)?;
            merger.merge(&mut plan, routes_only(routes), "kernel route")?
        }
        None => 0,
    };
    let from_cluster = match feeds.cluster {
        Some(c) => {
            let (routes, warnings) = cluster::routes(c.records, &c.own, config, c.underlay_if);
            merger.warnings.extend(warnings);
            merger.merge(&mut plan, routes_only(routes), "cluster route")?
        }
        None => 0,
    };
    Ok(Desired {
        plan,
        from_kernel,
        from_cluster,
        workloads,
        unresolved: merger.unresolved,
        table_lines_left_out,
        warnings: merger.warnings,
    })
}

/// The workloads of `routes` (local /32s, by interface name and address) on the `bad` lines:
/// left out for want of their MAC, their address still theirs.
fn local_addrs_on<'a>(
    routes: &'a [Route],
    bad: &'a BTreeSet<usize>,
) -> impl Iterator<Item = (String, Ipv4Addr)> + 'a {
    routes
        .iter()
        .filter(|r| bad.contains(&r.line) && r.prefix.prefix_len() == 32)
        .filter_map(|r| match &r.target {
            Target::Local { dev } => Some((dev.clone(), r.prefix.addr())),
            _ => None,
        })
}

/// Records, for the source check, the addresses of attached workload interfaces whose /32 is
/// not routed yet (`(interface, address)`; an interface the plan does not attach is passed
/// over): a workload that has not answered ARP must still be able to, in its own name, or the
/// host never learns its MAC.
fn note_unresolved_workloads(plan: &mut Plan, unanswered: &[(String, Ipv4Addr)]) {
    for (dev, addr) in unanswered {
        if let Some(a) = plan.attachments.iter().find(|a| a.ifname == *dev) {
            plan.unresolved_workloads.entry(a.ifindex).or_insert(*addr);
        }
    }
}

/// The route table less the lines that cannot be realised on this host now, each with a
/// warning; its plan; and how many lines were left out. Resolution stops at some problems (an unusable
/// `vxlan` statement) before it looks at the routes, so this asks again until what is left
/// resolves; every round leaves out at least one line, so it ends.
fn realisable_table(
    config: &Config,
    system: &dyn System,
    warnings: &mut Vec<String>,
) -> Result<(Config, Plan, usize), Vec<LineError>> {
    let mut table = config.clone();
    let mut left_out = 0;
    let mut unanswered = Vec::new();
    loop {
        let errors = match resolve::resolve(&table, system) {
            Ok(mut plan) => {
                note_unresolved_workloads(&mut plan, &unanswered);
                return Ok((table, plan, left_out));
            }
            Err(errors) => errors,
        };
        // Problems of the host as a whole are not any line's.
        if errors.iter().any(|e| e.line == 0) {
            return Err(errors);
        }
        for e in &errors {
            warnings.push(format!(
                "route table line {}: {}: left out, its packets go to the kernel (tried again later)",
                e.line, e.message
            ));
        }
        let bad: BTreeSet<usize> = errors.iter().map(|e| e.line).collect();
        unanswered.extend(local_addrs_on(&table.routes, &bad));
        let before =
            table.interfaces.len() + table.routes.len() + usize::from(table.vxlan.is_some());
        table = without_lines(table, &bad, warnings);
        let after =
            table.interfaces.len() + table.routes.len() + usize::from(table.vxlan.is_some());
        if after == before {
            // Cannot happen (every error names a line of the table), but never loop on it.
            return Err(errors);
        }
        left_out += before - after;
    }
}

/// `table` less the `bad` lines, and less what depends on them: the routes through an
/// interface left out, and the VXLAN routes when the `vxlan` statement is.
fn without_lines(mut table: Config, bad: &BTreeSet<usize>, warnings: &mut Vec<String>) -> Config {
    let gone: BTreeSet<String> = table
        .interfaces
        .iter()
        .filter(|i| bad.contains(&i.line))
        .map(|i| i.name.clone())
        .collect();
    table.interfaces.retain(|i| !bad.contains(&i.line));
    let vxlan_gone = table.vxlan.as_ref().is_some_and(|v| bad.contains(&v.line));
    if vxlan_gone {
        table.vxlan = None;
    }
    table.routes.retain(|r| {
        if bad.contains(&r.line) {
            return false;
        }
        let why = if gone.contains(r.target.dev()) {
            Some(format!("its interface `{}` is left out", r.target.dev()))
        } else if vxlan_gone && matches!(r.target, Target::Vxlan { .. }) {
            Some("the `vxlan` statement is left out".to_string())
        } else {
            None
        };
        if let Some(why) = &why {
            warnings.push(format!(
                "route table line {}: {why}: left out, its packets go to the kernel (tried again later)",
                r.line
            ));
        }
        why.is_none()
    });
    table
}

fn system_error(message: String) -> Vec<LineError> {
    vec![LineError { line: 0, message }]
}

/// The kernel routes `filter` takes, with a warning for each one worth telling of.
fn kernel_feed(
    config: &Config,
    filter: &KernelRouteFilter,
    system: &dyn System,
    warnings: &mut Vec<String>,
) -> Result<Vec<Route>, Vec<LineError>> {
    let table = system
        .kernel_routes(&filter.table)
        .map_err(|e| system_error(format!("reading the kernel's routes: {e}")))?;
    let (routes, skipped) = kernel_routes::select(&table, filter, config);
    warnings.extend(skipped.iter().map(|s| match s {
        Skipped::Multipath(dst) => {
            format!("kernel route {dst} has several next hops: not taken (one per prefix)")
        }
        Skipped::UndeclaredDevice { dst, dev } => format!(
            "kernel route {dst} goes through `{dev}`, which the route table does not declare: not taken"
        ),
    }));
    Ok(routes)
}

fn routes_only(routes: Vec<Route>) -> Config {
    Config {
        routes,
        ..Config::default()
    }
}

/// The CNI plugin's workloads as table lines: each an interface (a workload interface,
/// attached as the feed says) and its /32, both numbered with the record's place so that a
/// record that cannot be realised is left out whole. A record whose interface is gone (a
/// container that died without a DEL) is left out: the dataplane never attaches to a missing
/// interface, and releases what it had there.
fn workload_config(
    config: &Config,
    feeds: &Feeds,
    system: &dyn System,
    warnings: &mut Vec<String>,
) -> Result<Config, Vec<LineError>> {
    if feeds.workloads.is_empty() {
        return Ok(Config::default());
    }
    let links = system.links().map_err(|e| system_error(e.to_string()))?;
    let mut feed = Config::default();
    for (i, record) in feeds.workloads.iter().enumerate() {
        let line = i + 1;
        let Some(link) = links.iter().find(|l| l.name == record.host_ifname) else {
            // The usual order when a container stops: its namespace (and the veth) goes
            // first, the runtime's DEL (which removes the record) after.
            tracing::debug!(
                container = record.container_id,
                addr = %record.addr,
                ifname = record.host_ifname,
                "workload's interface is gone: not taken"
            );
            continue;
        };
        // A record is a file any root process could write: the dataplane attaches to a
        // workload's veth and nothing else (not `lo`, not the underlay, not a second NIC).
        if !link.is_workload_veth() {
            warnings.push(format!(
                "workload {}: `{}` is not a workload's interface (the host end of a veth whose peer is in another network namespace): not taken",
                record.container_id, record.host_ifname
            ));
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
            attach: feeds.workload_attach,
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

/// Adds feeds to a plan, keeping the warnings and the count of what could not be resolved.
struct Merger<'a> {
    config: &'a Config,
    system: &'a dyn System,
    warnings: Vec<String>,
    unresolved: usize,
}

impl Merger<'_> {
    /// Adds a feed (its routes, and the interfaces to attach) to `plan` (the plan's own
    /// prefixes win); returns how many routes were added. What cannot be resolved is left out
    /// with a warning: a route, with the interface of the same line.
    fn merge(
        &mut self,
        plan: &mut Plan,
        feed: Config,
        what: &str,
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
                self.warnings.push(format!(
                    "{what} {} is already routed (by the route table or an earlier feed): not taken",
                    r.prefix
                ));
                refused_lines.insert(r.line);
            }
            !taken
        });
        interfaces.retain(|i| !refused_lines.contains(&i.line));
        let mut unanswered = Vec::new();
        let described: BTreeMap<usize, String> = routes
            .iter()
            .map(|r| (r.line, format!("{} {:?}", r.prefix, r.target)))
            .collect();
        let mut feed = Config {
            interfaces: interfaces
                .into_iter()
                .chain(self.config.interfaces.clone())
                .collect(),
            routes,
            vxlan: self.config.vxlan.clone(),
        };
        let resolved = match resolve::resolve(&feed, self.system) {
            Ok(p) => p,
            Err(errors) => {
                // Problems of the system as a whole are not any route's: nothing is applied.
                if errors.iter().any(|e| e.line == 0) {
                    return Err(errors);
                }
                let bad: BTreeSet<usize> = errors.iter().map(|e| e.line).collect();
                self.unresolved += bad.len();
                for e in &errors {
                    self.warnings.push(format!(
                        "{what} {}: {}: not taken",
                        described.get(&e.line).map_or("?", String::as_str),
                        e.message
                    ));
                }
                // A workload that does not answer ARP stays attached (its interface carries
                // nothing the programs do not see), its address still its own for the source
                // check; only its route waits for its MAC.
                let keep_interfaces = what == "workload";
                if keep_interfaces {
                    unanswered.extend(local_addrs_on(&feed.routes, &bad));
                }
                feed.routes.retain(|r| !bad.contains(&r.line));
                feed.interfaces
                    .retain(|i| keep_interfaces || !bad.contains(&i.line));
                resolve::resolve(&feed, self.system)?
            }
        };
        let added = resolved.routes.len();
        // The table's interfaces are attached already.
        plan.attachments.extend(
            resolved
                .attachments
                .into_iter()
                .filter(|a| !self.config.interfaces.iter().any(|i| i.name == a.ifname)),
        );
        plan.tx_ports.extend(resolved.tx_ports);
        plan.peers.extend(resolved.peers);
        plan.routes.extend(resolved.routes);
        note_unresolved_workloads(plan, &unanswered);
        Ok(added)
    }
}
