//! Following the route table, the CNI plugin's workloads, the kernel (links, addresses,
//! neighbours, and with `--routes-from-kernel` its routes) and the cluster while the dataplane
//! runs: every change is parsed and resolved in full first; a table that fails is reported
//! (file and line) and the running dataplane keeps its last good table untouched; a good one
//! is applied as a difference (maps, then attachments), each change logged.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use dataplane::{
    kernel::{Dataplane, DataplaneError},
    model::{
        Ipv4Prefix, LineError,
        mac::format_mac,
        policy,
        route_table::{self as config, Attach, Config},
        services::{self, Services},
    },
    plan::{Plan, diff, kernel_routes::KernelRouteFilter},
    system::{
        state::{self, AttachmentRecord, LoaderState},
        workloads::{HostDir, Reply, WorkloadRecord},
    },
};

use super::{
    cluster_services::ServiceRecords,
    sources::{self, Feeds},
};
use crate::metrics::LoaderCounters;
use tracing::{error, info, warn};

/// The log line of a route table change that was not applied.
const TABLE_REFUSED: &str = "route table not applied; keeping the last good one";

/// How often the file is looked at.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The kernel's routes as a second source.
pub struct KernelFeed {
    pub filter: KernelRouteFilter,
    /// Set by the kernel's notifications when its routing table may have changed.
    pub changed: Arc<AtomicBool>,
}

/// The CNI plugin's workload records.
pub struct WorkloadFeed {
    pub dir: HostDir,
    /// The records as last taken, and the files that were not records.
    pub records: Vec<WorkloadRecord>,
    pub problems: Vec<String>,
    /// The records directory's modification time when they were taken.
    pub taken_at: Option<std::time::SystemTime>,
    /// How workload interfaces are attached.
    pub attach: Attach,
}

/// How long after its last change a directory's modification time is trusted to show the
/// next one: the kernel stamps it from a coarse clock (a tick or so), so two changes close
/// together may carry the same time.
const STAMP_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

impl WorkloadFeed {
    /// The records as they are now if the directory may have changed since they were taken
    /// (always when `force`); None when it certainly has not. Every record and every
    /// plugin request changes the directory, so an unchanged one is not read again each poll.
    fn read_if_changed(
        &self,
        force: bool,
    ) -> Option<(
        Vec<WorkloadRecord>,
        Vec<String>,
        Option<std::time::SystemTime>,
    )> {
        let stamp = self.dir.records_changed_at();
        let settled = stamp
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STAMP_SETTLE);
        if !force && settled && stamp == self.taken_at {
            return None;
        }
        let (records, problems) = self.dir.read_records();
        Some((records, problems, stamp))
    }
}

/// The other hosts of the cluster as a source of routes.
pub struct ClusterFeed {
    pub view: Arc<super::cluster::View>,
    /// This host's own prefix (its record is not a route).
    pub own: dataplane::model::Ipv4Prefix,
    /// The interface routed records are reached through.
    pub underlay_if: String,
}

impl ClusterFeed {
    /// The routes the records give, and what could not become one.
    pub fn routes(
        &self,
        config: &Config,
    ) -> (Vec<dataplane::model::route_table::Route>, Vec<String>) {
        let records = self.view.records.lock().unwrap_or_else(|e| e.into_inner());
        dataplane::model::cluster::routes(&records, &self.own, config, &self.underlay_if)
    }
}

/// How long a changed file must stay the same before it is read as the new version: an
/// editor or a tool rewriting it in place is never caught half-way (write-then-rename is the
/// way to update at once; it too waits this long).
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);
/// How long a route table that would remove more than half of the installed routes must stay
/// the same before it is applied (a truncated file looks like an empty table).
pub const BIG_REMOVAL_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// A file the loader follows, with its bytes as last taken (applied or refused): an unchanged
/// file, good or bad, is looked at once. A change is taken only once it has settled.
struct FollowedFile {
    path: PathBuf,
    seen: Option<Vec<u8>>,
    /// A change not taken yet, and since when the file has held it.
    pending: Option<(Vec<u8>, std::time::Instant)>,
}

impl FollowedFile {
    /// Starts following `path`, taken as already applied as it is now.
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            seen: std::fs::read(path).ok(),
            pending: None,
        }
    }

    /// Marks the settled change as taken (applied, or refused and reported).
    fn take(&mut self) {
        if let Some((bytes, _)) = self.pending.take() {
            self.seen = Some(bytes);
        }
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// The file's text and how long it has been so, if it changed since last taken and has
    /// stayed the same for [`SETTLE`]; the caller [`take`](Self::take)s it once done with it.
    /// A file that cannot be read is reported once (as `what`), and counted in `counters` as
    /// a refused change.
    fn changed(
        &mut self,
        what: &str,
        counters: &LoaderCounters,
    ) -> Option<(String, std::time::Duration)> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if self.seen.take().is_some() {
                    warn!(file = %self.name(), error = %e, "cannot read the {what}; keeping the running one");
                    counters.apply_errors.fetch_add(1, Ordering::Relaxed);
                }
                return None;
            }
        };
        if self.seen.as_ref() == Some(&bytes) {
            self.pending = None;
            return None;
        }
        let stable = match &self.pending {
            Some((pending, since)) if *pending == bytes => since.elapsed(),
            _ => {
                self.pending = Some((bytes, std::time::Instant::now()));
                return None;
            }
        };
        if stable < SETTLE {
            return None;
        }
        Some((String::from_utf8_lossy(&bytes).into_owned(), stable))
    }
}

/// The store's services, and what their backends must lie in.
pub struct StoreServices {
    pub records: Arc<ServiceRecords>,
    pub store_prefix: String,
    /// The cluster's workload range (`--cluster-cidr`).
    pub cluster: Ipv4Prefix,
}

/// Where the services come from: the file (as last parsed) and the store.
#[derive(Default)]
struct ServiceSources {
    file: Option<FollowedFile>,
    from_file: Services,
    store: Option<StoreServices>,
    /// Store records refused, as they were: a record is reported again only once it changes.
    refused: BTreeMap<String, Vec<u8>>,
}

impl ServiceSources {
    /// The file's services with the store's valid records.
    fn current(&mut self, counters: &LoaderCounters) -> Services {
        let Some(store) = &self.store else {
            return self.from_file.clone();
        };
        let records = store
            .records
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (all, refused) = services::with_records(
            &self.from_file,
            &records,
            &store.store_prefix,
            store.cluster,
        );
        let mut now = BTreeMap::new();
        for (key, why) in refused {
            let value = records.get(&key).cloned().unwrap_or_default();
            if self.refused.get(&key) != Some(&value) {
                warn!(%key, reason = why.reason(), problem = %why, "refusing a service record");
                counters.count_refused_record(why.reason());
            }
            now.insert(key, value);
        }
        self.refused = now;
        all
    }
}

pub struct Watcher {
    table: FollowedFile,
    /// The last route table that parsed (kernel changes are merged with it).
    config: Config,
    kernel: Option<KernelFeed>,
    /// Warnings about kernel routes as last given: repeated ones are not logged again.
    warned: BTreeSet<String>,
    /// What the maps hold now.
    applied: Plan,
    counters: Arc<LoaderCounters>,
    policy: Option<FollowedFile>,
    services: ServiceSources,
    cluster: Option<ClusterFeed>,
    workloads: WorkloadFeed,
    /// Set by the kernel's notifications when links, addresses or neighbours changed.
    system_changed: Arc<AtomicBool>,
    /// The loader's record, rewritten when the attachments change.
    state: LoaderState,
    /// A big removal is waiting (announced once).
    big_removal_announced: bool,
}

/// Everything [`Watcher::new`] starts from.
pub struct WatcherStart<'a> {
    pub path: &'a Path,
    pub config: Config,
    pub applied: Plan,
    pub kernel: Option<KernelFeed>,
    pub workloads: WorkloadFeed,
    pub system_changed: Arc<AtomicBool>,
    pub state: LoaderState,
    pub counters: Arc<LoaderCounters>,
}

impl Watcher {
    pub fn new(start: WatcherStart) -> Self {
        Self {
            table: FollowedFile::new(start.path),
            config: start.config,
            kernel: start.kernel,
            warned: BTreeSet::new(),
            applied: start.applied,
            counters: start.counters,
            policy: None,
            services: ServiceSources::default(),
            cluster: None,
            workloads: start.workloads,
            system_changed: start.system_changed,
            state: start.state,
            big_removal_announced: false,
        }
    }

    /// Also follows the cluster's host records.
    pub fn follow_cluster(&mut self, feed: ClusterFeed) {
        self.cluster = Some(feed);
    }

    /// Also follows the policy file at `path` (already applied as it is now).
    pub fn follow_policy(&mut self, path: &Path) {
        self.policy = Some(FollowedFile::new(path));
    }

    /// Applies the policy file if it changed; a file that cannot be read or parsed, or does
    /// not fit the maps, is reported and the running policy stays.
    fn poll_policy(&mut self, dataplane: &mut Dataplane) {
        const REFUSED: &str = "policy not applied; keeping the running one";
        let Some(followed) = &mut self.policy else {
            return;
        };
        let Some((text, _)) = followed.changed("policy", &self.counters) else {
            return;
        };
        followed.take();
        let file = followed.name();
        let started = std::time::Instant::now();
        let policy = match policy::parse(&text) {
            Ok(policy) => policy,
            Err(errors) => return self.refuse_lines(&file, &errors, REFUSED),
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
            Err(e) => self.refuse_apply(&file, &e, REFUSED),
        }
    }

    /// Also follows the services file at `path` (already applied as it is now: `services`).
    pub fn follow_services(&mut self, path: &Path, services: Services) {
        self.services.file = Some(FollowedFile::new(path));
        self.services.from_file = services;
    }

    /// Also follows the services of the cluster's store.
    pub fn follow_store_services(&mut self, store: StoreServices) {
        self.services.store = Some(store);
    }

    /// Applies the services if the file or the store's records changed: the file's (a file
    /// that cannot be read or parsed is reported and its last good version kept) with the
    /// store's valid records (a refused record is reported and counted once per version). A
    /// set that does not fit the maps is reported and the running services stay.
    fn poll_services(&mut self, dataplane: &mut Dataplane) {
        const REFUSED: &str = "services not applied; keeping the running ones";
        let mut changed = false;
        if let Some(followed) = &mut self.services.file
            && let Some((text, _)) = followed.changed("services", &self.counters)
        {
            followed.take();
            let file = followed.name();
            match services::parse(&text) {
                Ok(parsed) => {
                    self.services.from_file = parsed;
                    changed = true;
                }
                Err(errors) => self.refuse_lines(&file, &errors, REFUSED),
            }
        }
        if let Some(store) = &self.services.store {
            changed |= store.records.changed.swap(false, Ordering::Relaxed);
        }
        if !changed {
            return;
        }
        let started = std::time::Instant::now();
        let all = self.services.current(&self.counters);
        match dataplane.apply_services(&all) {
            Ok(report) => info!(
                services = report.services,
                backends = report.backends,
                written = report.written,
                removed = report.removed,
                total_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                "services applied"
            ),
            Err(e) => self.refuse_apply("services", &e, REFUSED),
        }
    }

    /// Reports a change refused for the problems on its lines, and counts it.
    fn refuse_lines(&self, file: &str, errors: &[LineError], message: &str) {
        for e in errors {
            error!(%file, line = e.line, problem = %e.message, "{message}");
        }
        self.refused();
    }

    /// Reports a change the maps refused, and counts it (a full map also by map).
    fn refuse_apply(&self, file: &str, e: &DataplaneError, message: &str) {
        if let DataplaneError::MapFull { map, .. } = e {
            self.counters.count_map_full(map);
        }
        error!(%file, error = %e, "{message}");
        self.refused();
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

    /// The route table, parsed, and how long the file has held it, if it changed and has
    /// settled (not taken yet: [`Self::poll`] takes it once applied or refused). A table that
    /// does not parse is reported and taken.
    fn new_table(&mut self) -> Option<(Config, std::time::Duration)> {
        let (text, stable) = self.table.changed("route table", &self.counters)?;
        match config::parse(&text) {
            Ok(config) => Some((config, stable)),
            Err(errors) => {
                self.table.take();
                self.refuse_lines(&self.table.name(), &errors, TABLE_REFUSED);
                None
            }
        }
    }

    /// Looks at the sources; if one changed, applies the new plan's difference.
    pub fn poll(&mut self, dataplane: &mut Dataplane) {
        self.poll_policy(dataplane);
        self.poll_services(dataplane);
        let _ = self.reconcile(dataplane, false);
    }

    /// The CNI plugin's request: takes the workload records as they are now and answers once
    /// the dataplane holds them (or why it does not).
    pub fn sync(&mut self, dataplane: &mut Dataplane) -> Reply {
        match self.reconcile(dataplane, true) {
            Ok(()) => Reply {
                ok: true,
                error: None,
            },
            Err(error) => Reply {
                ok: false,
                error: Some(error),
            },
        }
    }

    /// Whether the workload behind `host_ifname` is attached and its address routed to it.
    pub fn check(&self, host_ifname: &str, addr: std::net::Ipv4Addr) -> Reply {
        let fail = |error: String| Reply {
            ok: false,
            error: Some(error),
        };
        let Some(attachment) = self
            .applied
            .attachments
            .iter()
            .find(|a| a.ifname == host_ifname)
        else {
            return fail(format!(
                "the dataplane is not attached to `{host_ifname}` (see the loader's log)"
            ));
        };
        let prefix = Ipv4Prefix::new(addr, 32).expect("a /32 has no host bits");
        match self.applied.routes.get(&prefix) {
            Some(nh) if nh.ifindex == attachment.ifindex => Reply {
                ok: true,
                error: None,
            },
            Some(nh) => fail(format!(
                "the dataplane routes {addr} to interface {} instead of `{host_ifname}` ({})",
                nh.ifindex, attachment.ifindex
            )),
            None => fail(format!("the dataplane has no route to {addr}")),
        }
    }

    /// Resolves the sources again if one changed (or `force`) and applies the difference;
    /// the error says why a change was not applied.
    fn reconcile(&mut self, dataplane: &mut Dataplane, force: bool) -> Result<(), String> {
        let started = std::time::Instant::now();
        let new_table = self.new_table();
        let kernel_changed = self
            .kernel
            .as_ref()
            .is_some_and(|k| k.changed.swap(false, Ordering::Relaxed));
        let cluster_changed = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.view.changed.swap(false, Ordering::Relaxed));
        let system_changed = self.system_changed.swap(false, Ordering::Relaxed);
        let fresh = self.workloads.read_if_changed(force);
        let records_changed = fresh.as_ref().is_some_and(|(records, problems, _)| {
            *records != self.workloads.records || *problems != self.workloads.problems
        });
        if new_table.is_none()
            && !kernel_changed
            && !cluster_changed
            && !system_changed
            && !records_changed
            && !force
        {
            return Ok(());
        }
        let file = self.table.name();
        let mut new_table = new_table;
        let mut config = match &new_table {
            Some((config, _)) => config.clone(),
            None => self.config.clone(),
        };
        let (records, problems, taken_at) = fresh.unwrap_or_else(|| {
            (
                self.workloads.records.clone(),
                self.workloads.problems.clone(),
                self.workloads.taken_at,
            )
        });
        let (mut desired, mut warnings) = match self.desired(&config, &records, &problems) {
            Ok(desired) => desired,
            Err(errors) => {
                self.table.take();
                self.refuse_lines(&file, &errors, TABLE_REFUSED);
                return Err(render(&errors));
            }
        };
        let removals = diff(&self.applied.routes, &desired.plan.routes)
            .removals
            .len();
        if let Some((_, stable)) = &new_table
            && removals * 2 > self.applied.routes.len()
            && *stable < BIG_REMOVAL_SETTLE
        {
            // Most of the table gone at once looks like a file caught truncated: it waits
            // until it has stayed so for longer. The feeds (workloads, kernel, cluster) go on
            // being applied, against the running table.
            if !self.big_removal_announced {
                warn!(
                    %file,
                    removed = removals,
                    installed = self.applied.routes.len(),
                    wait_s = BIG_REMOVAL_SETTLE.as_secs(),
                    "the route table would remove more than half of the routes; applying it only if it stays so"
                );
                self.big_removal_announced = true;
            }
            new_table = None;
            config = self.config.clone();
            (desired, warnings) = self
                .desired(&config, &records, &problems)
                .map_err(|errors| render(&errors))?;
        } else {
            self.big_removal_announced = false;
        }
        self.counters
            .unresolved_routes
            .store(desired.unresolved as u64, Ordering::Relaxed);
        self.warn_once(warnings);
        let plan = desired.plan;
        let change = diff(&self.applied.routes, &plan.routes);
        if new_table.is_some() {
            self.table.take();
            self.config = config;
        }
        self.workloads.records = records;
        self.workloads.problems = problems;
        self.workloads.taken_at = taken_at;
        if plan == self.applied {
            return Ok(());
        }
        let resolved_ms = started.elapsed().as_secs_f64() * 1e3;
        // Maps first (a new interface never meets a table without its route), then the
        // attachments.
        if let Err(e) = dataplane.apply(&plan) {
            self.refuse_apply(&file, &e, TABLE_REFUSED);
            return Err(e.to_string());
        }
        if plan.attachments != self.applied.attachments {
            match dataplane.update_attachments(&self.applied.attachments, &plan.attachments) {
                Ok(report) => {
                    for ifname in &report.attached {
                        info!(%ifname, "attached");
                    }
                    for path in &report.released {
                        info!(link = %path.display(), "released the link of an interface no longer in the plan");
                    }
                }
                Err(e) => {
                    // The maps hold the new plan; the attachments stay as they were, and the
                    // next change tries again.
                    self.refuse_apply(&file, &e, "attachments not changed");
                    self.applied.routes = plan.routes;
                    self.system_changed.store(true, Ordering::Relaxed);
                    return Err(e.to_string());
                }
            }
            self.record_attachments(&plan);
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
            workloads = desired.workloads,
            from_kernel = desired.from_kernel,
            from_cluster = desired.from_cluster,
            parse_resolve_ms = format!("{resolved_ms:.1}"),
            total_ms = format!("{total_ms:.1}"),
            "plan applied"
        );
        self.applied = plan;
        Ok(())
    }

    /// What the maps should hold for `config` and the feeds as they are now, with every
    /// warning (the caller logs those of the plan it takes).
    fn desired(
        &self,
        config: &Config,
        records: &[WorkloadRecord],
        problems: &[String],
    ) -> Result<(sources::Desired, Vec<String>), Vec<LineError>> {
        let (cluster_routes, mut warnings) = match &self.cluster {
            Some(feed) => feed.routes(config),
            None => (Vec::new(), Vec::new()),
        };
        warnings.extend_from_slice(problems);
        let feeds = Feeds {
            workloads: records,
            workload_attach: self.workloads.attach,
            kernel: self.kernel.as_ref().map(|k| &k.filter),
            cluster: &cluster_routes,
        };
        let desired = sources::desired(config, &feeds)?;
        warnings.extend(desired.warnings.iter().cloned());
        Ok((desired, warnings))
    }

    /// Keeps the loader's record's attachment list true.
    fn record_attachments(&mut self, plan: &Plan) {
        self.state.attachments = plan
            .attachments
            .iter()
            .map(AttachmentRecord::from)
            .collect();
        if let Err(e) = state::write(&self.state) {
            warn!(error = %e, "cannot update the loader's record");
        }
    }
}

/// Problems on lines as one message.
fn render(errors: &[LineError]) -> String {
    errors
        .iter()
        .map(|e| format!("line {}: {}", e.line, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}
