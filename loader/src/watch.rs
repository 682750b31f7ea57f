//! Following the route table while the dataplane runs: every change of the file is parsed and
//! resolved in full first; a table that fails is reported (file and line) and the running
//! dataplane keeps its last good table untouched; a good one is applied as a difference, each
//! change logged.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
};

use crate::metrics::LoaderCounters;

use dataplane::{
    config,
    ebpf::{Dataplane, diff},
    netinfo::format_mac,
    resolve::{self, LiveSystem, Plan},
};
use tracing::{error, info, warn};

/// How often the file is looked at.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(250);

pub struct Watcher {
    path: PathBuf,
    /// The file's bytes as last seen, applied or not: an unchanged bad file is reported once.
    seen: Option<Vec<u8>>,
    /// What the maps hold now.
    applied: Plan,
    counters: Arc<LoaderCounters>,
}

impl Watcher {
    pub fn new(path: &Path, applied: Plan, counters: Arc<LoaderCounters>) -> Self {
        let seen = std::fs::read(path).ok();
        Self {
            path: path.to_path_buf(),
            seen,
            applied,
            counters,
        }
    }

    /// Counts a change that was not applied (for the metrics).
    fn refused(&self) {
        self.counters.apply_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Re-reads the file; if it changed, tries to apply it.
    pub fn poll(&mut self, dataplane: &mut Dataplane) {
        let file = self.path.display().to_string();
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if self.seen.is_some() {
                    warn!(%file, error = %e, "cannot read the route table; keeping the last good one");
                    self.seen = None;
                    self.refused();
                }
                return;
            }
        };
        if self.seen.as_ref() == Some(&bytes) {
            return;
        }
        self.seen = Some(bytes.clone());
        let started = std::time::Instant::now();
        let text = String::from_utf8_lossy(&bytes);
        let plan = match config::parse(&text) {
            Ok(config) => resolve::resolve(&config, &LiveSystem),
            Err(errors) => Err(errors),
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(errors) => {
                for e in errors {
                    error!(%file, line = e.line, problem = %e.message, "route table not applied; keeping the last good one");
                }
                self.refused();
                return;
            }
        };
        if plan.attachments != self.applied.attachments {
            warn!(%file, "the interface list changed: attachments change only when the loader restarts");
        }
        let change = diff(&self.applied.routes, &plan.routes);
        let resolved_ms = started.elapsed().as_secs_f64() * 1e3;
        if let Err(e) = dataplane.apply(&plan) {
            error!(%file, error = %e, "applying the route table failed");
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
