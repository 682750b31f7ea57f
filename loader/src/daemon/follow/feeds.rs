//! The live feeds of routes besides the table, as the route follower reads them: the CNI
//! plugin's workload records, the kernel's routes, the cluster's host records. Each says
//! whether it may have changed, so that an unchanged host costs no resolution.
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use dataplane::{
    model::{
        Ipv4Prefix, LineError,
        cluster::HostRecord,
        route_table::{Attach, Config},
    },
    plan::{
        kernel_routes::KernelRouteFilter,
        resolve::System,
        sources::{self, ClusterRecords, Desired, Feeds},
    },
    system::workloads::{HostDir, WorkloadRecord},
};

use crate::daemon::cluster::View;

/// The kernel's routes as a source.
pub struct KernelFeed {
    pub filter: KernelRouteFilter,
    /// Set by the kernel's notifications when its routing table may have changed.
    pub changed: Arc<AtomicBool>,
}

impl KernelFeed {
    /// Whether the routing table may have changed since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::Relaxed)
    }
}

/// The CNI plugin's workload records.
pub struct WorkloadFeed {
    pub dir: HostDir,
    /// The records as last taken, and the files that were not records.
    pub records: Vec<WorkloadRecord>,
    pub problems: Vec<String>,
    /// The records directory's modification time when they were taken.
    pub taken_at: Option<SystemTime>,
    /// How workload interfaces are attached.
    pub attach: Attach,
}

/// The records directory as read at one moment.
pub struct WorkloadSnapshot {
    pub records: Vec<WorkloadRecord>,
    pub problems: Vec<String>,
    pub taken_at: Option<SystemTime>,
}

/// How long after its last change a directory's modification time is trusted to show the
/// next one: the kernel stamps it from a coarse clock (a tick or so), so two changes close
/// together may carry the same time.
const STAMP_SETTLE: Duration = Duration::from_secs(1);

impl WorkloadFeed {
    /// The records as they are now if the directory may have changed since they were taken
    /// (always when `force`); None when it certainly has not. Every record and every plugin
    /// request changes the directory, so an unchanged one is not read again each poll.
    pub fn read_if_changed(&self, force: bool) -> Option<WorkloadSnapshot> {
        let stamp = self.dir.records_changed_at();
        let settled = stamp
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STAMP_SETTLE);
        if !force && settled && stamp == self.taken_at {
            return None;
        }
        let (records, problems) = self.dir.read_records();
        Some(WorkloadSnapshot {
            records,
            problems,
            taken_at: stamp,
        })
    }

    /// Whether `fresh` differs from what was taken.
    pub fn differs(&self, fresh: &WorkloadSnapshot) -> bool {
        fresh.records != self.records || fresh.problems != self.problems
    }

    /// The records as they were last taken.
    pub fn taken(&self) -> WorkloadSnapshot {
        WorkloadSnapshot {
            records: self.records.clone(),
            problems: self.problems.clone(),
            taken_at: self.taken_at,
        }
    }

    /// Keeps `snapshot` as the records taken.
    pub fn keep(&mut self, snapshot: WorkloadSnapshot) {
        self.records = snapshot.records;
        self.problems = snapshot.problems;
        self.taken_at = snapshot.taken_at;
    }
}

/// The other hosts of the cluster as a source of routes.
pub struct ClusterFeed {
    pub view: Arc<View>,
    /// This host's own prefix (its record is not a route).
    pub own: Ipv4Prefix,
    /// The interface routed records are reached through.
    pub underlay_if: String,
    /// Whether the plugin was last told that this host has withdrawn from its prefix.
    pub published_withdrawn: bool,
}

impl ClusterFeed {
    /// Whether the records may have changed since the last call.
    pub fn take_changed(&self) -> bool {
        self.view.changed.swap(false, Ordering::Relaxed)
    }

    /// The records as they are now.
    pub fn records(&self) -> BTreeMap<String, HostRecord> {
        self.view
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Every live feed of routes the loader was started with.
pub struct RouteFeeds {
    pub workloads: WorkloadFeed,
    pub kernel: Option<KernelFeed>,
    pub cluster: Option<ClusterFeed>,
}

impl RouteFeeds {
    /// The feeds as the plan reads them: `workloads` as taken now, the cluster's `records` as
    /// read now (None outside cluster mode).
    pub fn view<'a>(
        &'a self,
        workloads: &'a WorkloadSnapshot,
        records: Option<&'a BTreeMap<String, HostRecord>>,
    ) -> Feeds<'a> {
        Feeds {
            workloads: &workloads.records,
            workload_problems: &workloads.problems,
            workload_attach: self.workloads.attach,
            kernel: self.kernel.as_ref().map(|k| &k.filter),
            cluster: self
                .cluster
                .as_ref()
                .zip(records)
                .map(|(feed, records)| ClusterRecords {
                    records,
                    own: feed.own,
                    underlay_if: &feed.underlay_if,
                }),
        }
    }

    /// Tells the plugin whether this host has a prefix to hand out: none while it has
    /// withdrawn from it (another host holds it), so that no new container gets an address
    /// there.
    pub fn publish_ownership(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let withdrawn = cluster.view.withdrawn.load(Ordering::Relaxed);
        if withdrawn == cluster.published_withdrawn {
            return;
        }
        let dir = &self.workloads.dir;
        let mut facts = dir.read_facts().ok().flatten().unwrap_or_default();
        facts.subnet = (!withdrawn).then(|| cluster.own.to_string());
        match dir.write_facts(&facts) {
            Ok(()) => cluster.published_withdrawn = withdrawn,
            Err(e) => tracing::warn!(error = %e, "cannot tell the plugin about this host's prefix"),
        }
    }

    /// The cluster's records now, in cluster mode.
    pub fn cluster_records(&self) -> Option<BTreeMap<String, HostRecord>> {
        self.cluster.as_ref().map(ClusterFeed::records)
    }

    /// What the maps should hold for `config` with the feeds as last taken.
    pub fn desired(&self, config: &Config, system: &dyn System) -> Result<Desired, Vec<LineError>> {
        let workloads = self.workloads.taken();
        let records = self.cluster_records();
        sources::desired(config, &self.view(&workloads, records.as_ref()), system)
    }
}
