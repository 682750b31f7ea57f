//! Following the route table (and, with `--routes-from-kernel`, the kernel's routes) while the
//! dataplane runs: every change of the file is parsed and resolved in full first; a table that
//! fails is reported (file and line) and the running dataplane keeps its last good table
//! untouched; a good one is applied as a difference, each change logged.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{metrics::LoaderCounters, source};

use dataplane::{
    config::{self, Config},
    ebpf::{Dataplane, DataplaneError, diff},
    kernel_routes::KernelRouteFilter,
    netinfo::format_mac,
    policy,
    resolve::Plan,
};
use tracing::{error, info, warn};

/// How often the file is looked at.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The kernel's routes as a second source.
pub struct KernelFeed {
    pub filter: KernelRouteFilter,
    /// Set by the route monitor when the kernel's table may have changed.
    pub changed: Arc<AtomicBool>,
}

/// The other hosts of the cluster as a source of routes.
pub struct ClusterFeed {
    pub view: Arc<crate::cluster::View>,
    /// This host's own prefix (its record is not a route).
    pub own: dataplane::config::Ipv4Prefix,
    /// The interface routed records are reached through.
    pub underlay_if: String,
}

impl ClusterFeed {
    /// The routes the records give, and what could not become one.
    pub fn routes(&self, config: &Config) -> (Vec<dataplane::config::Route>, Vec<String>) {
        let records = self.view.records.lock().unwrap_or_else(|e| e.into_inner());
        dataplane::cluster::routes(&records, &self.own, config, &self.underlay_if)
    }
}

pub struct Watcher {
    path: PathBuf,
    /// The file's bytes as last seen, applied or not: an unchanged bad file is reported once.
    seen: Option<Vec<u8>>,
    /// The last route table that parsed (kernel changes are merged with it).
    config: Config,
    kernel: Option<KernelFeed>,
    /// Warnings about kernel routes as last given: repeated ones are not logged again.
    warned: BTreeSet<String>,
    /// What the maps hold now.
    applied: Plan,
    counters: Arc<LoaderCounters>,
    /// The policy file and its bytes as last seen.
    policy: Option<(PathBuf, Option<Vec<u8>>)>,
    cluster: Option<ClusterFeed>,
}

impl Watcher {
    pub fn new(
        path: &Path,
        config: Config,
        applied: Plan,
        kernel: Option<KernelFeed>,
        counters: Arc<LoaderCounters>,
    ) -> Self {
        let seen = std::fs::read(path).ok();
        Self {
            path: path.to_path_buf(),
            seen,
            config,
            kernel,
            warned: BTreeSet::new(),
            applied,
            counters,
            policy: None,
            cluster: None,
        }
    }

    /// Also follows the cluster's host records.
    pub fn follow_cluster(&mut self, feed: ClusterFeed) {
        self.cluster = Some(feed);
    }

    /// Also follows the policy file at `path` (already applied as it is now).
    pub fn follow_policy(&mut self, path: &Path) {
        self.policy = Some((path.to_path_buf(), std::fs::read(path).ok()));
    }

    /// Applies the policy file if it changed; a file that cannot be read or parsed, or does
    /// not fit the maps, is reported and the running policy stays.
    fn poll_policy(&mut self, dataplane: &mut Dataplane) {
        let Some((path, seen)) = &mut self.policy else {
            return;
        };
        let file = path.display().to_string();
        let bytes = match std::fs::read(&*path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if seen.take().is_some() {
                    warn!(%file, error = %e, "cannot read the policy; keeping the running one");
                    self.counters.apply_errors.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        if seen.as_ref() == Some(&bytes) {
            return;
        }
        *seen = Some(bytes.clone());
        let started = std::time::Instant::now();
        let policy = match policy::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(policy) => policy,
            Err(errors) => {
                for e in errors {
                    error!(%file, line = e.line, problem = %e.message, "policy not applied; keeping the running one");
                }
                self.refused();
                return;
            }
        };
        match dataplane.apply_policy(&policy) {
            Ok(report) => info!(
                %file,
                workloads = policy.workloads.len(),
                rules = policy.rule_count(),
                rulesets = report.rulesets,
                verdict_entries = report.verdict_entries,
                total_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                "policy applied"
            ),
            Err(e) => {
                if let DataplaneError::MapFull { map, .. } = &e {
                    self.counters.count_map_full(map);
                }
                error!(%file, error = %e, "policy not applied; keeping the running one");
                self.refused();
            }
        }
    }

    /// Counts a change that was not applied (for the metrics).
    fn refused(&self) {
        self.counters.apply_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Logs the warnings that are new since the last resolution.
    pub fn warn_once(&mut self, warnings: Vec<String>) {
        let now: BTreeSet<String> = warnings.into_iter().collect();
        for w in now.difference(&self.warned) {
            warn!("{w}");
        }
        self.warned = now;
    }

    /// True if the file changed since last seen and parsed: `self.config` is then the new
    /// table. A file that cannot be read or parsed is reported and leaves `self.config`.
    fn file_changed(&mut self) -> bool {
        let file = self.path.display().to_string();
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if self.seen.is_some() {
                    warn!(%file, error = %e, "cannot read the route table; keeping the last good one");
                    self.seen = None;
                    self.refused();
                }
                return false;
            }
        };
        if self.seen.as_ref() == Some(&bytes) {
            return false;
        }
        self.seen = Some(bytes.clone());
        match config::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(config) => {
                self.config = config;
                true
            }
            Err(errors) => {
                for e in errors {
                    error!(%file, line = e.line, problem = %e.message, "route table not applied; keeping the last good one");
                }
                self.refused();
                false
            }
        }
    }

    /// Looks at the sources; if one changed, applies the new plan's difference.
    pub fn poll(&mut self, dataplane: &mut Dataplane) {
        self.poll_policy(dataplane);
        let started = std::time::Instant::now();
        let file_changed = self.file_changed();
        let kernel_changed = self
            .kernel
            .as_ref()
            .is_some_and(|k| k.changed.swap(false, Ordering::Relaxed));
        let cluster_changed = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.view.changed.swap(false, Ordering::Relaxed));
        if !file_changed && !kernel_changed && !cluster_changed {
            return;
        }
        let file = self.path.display().to_string();
        let filter = self.kernel.as_ref().map(|k| &k.filter);
        let (cluster_routes, mut cluster_warnings) = match &self.cluster {
            Some(feed) => feed.routes(&self.config),
            None => (Vec::new(), Vec::new()),
        };
        let desired = match source::desired(&self.config, filter, &cluster_routes) {
            Ok(desired) => desired,
            Err(errors) => {
                for e in errors {
                    error!(%file, line = e.line, problem = %e.message, "route table not applied; keeping the last good one");
                }
                self.refused();
                return;
            }
        };
        cluster_warnings.extend(desired.warnings);
        self.warn_once(cluster_warnings);
        let plan = desired.plan;
        if plan.attachments != self.applied.attachments {
            warn!(%file, "the interface list changed: attachments change when the loader restarts");
        }
        let change = diff(&self.applied.routes, &plan.routes);
        if change.upserts.is_empty() && change.removals.is_empty() && plan == self.applied {
            return;
        }
        let resolved_ms = started.elapsed().as_secs_f64() * 1e3;
        if let Err(e) = dataplane.apply(&plan) {
            if let DataplaneError::MapFull { map, .. } = &e {
                self.counters.count_map_full(map);
            }
            error!(%file, error = %e, "route table not applied; keeping the last good one");
            self.refused();
            return;
        }
        for (prefix, nh) in &change.upserts {
            let verb = if self.applied.routes.contains_key(prefix) {
                "route changed"
            } else {
                "route added"
            };
            info!(%prefix, ifindex = nh.ifindex, kind = nh.kind, dst_mac = %format_mac(&nh.dst_mac), "{verb}");
        }
        for prefix in &change.removals {
            info!(%prefix, "route removed");
        }
        let total_ms = started.elapsed().as_secs_f64() * 1e3;
        info!(
            %file,
            set = change.upserts.len(),
            removed = change.removals.len(),
            from_kernel = desired.from_kernel,
            from_cluster = desired.from_cluster,
            parse_resolve_ms = format!("{resolved_ms:.1}"),
            total_ms = format!("{total_ms:.1}"),
            "route table applied"
        );
        let attachments = std::mem::take(&mut self.applied.attachments);
        self.applied = Plan {
            attachments,
            ..plan
        };
    }
}
