//! One follower per source the daemon keeps the maps equal to: the route table with its feeds
//! ([`routes`]), the policy ([`policy`]), the services ([`services`]). Each looks at its source
//! when polled and applies what changed; a change that cannot be applied is reported (file and
//! line) and counted ([`Refusals`]), and the running dataplane keeps what it had.
//!
//! The followers act; what to apply is decided in `dataplane::plan` (for routes,
//! `plan::reconcile::decide`), without I/O and tested without root.
pub mod feeds;
pub mod file;
pub mod policy;
pub mod routes;
pub mod services;

use std::sync::{Arc, atomic::Ordering};

use dataplane::{
    kernel::{Dataplane, DataplaneError},
    model::LineError,
    plan::sources::Desired,
};
use tracing::error;

use crate::metrics::LoaderCounters;

/// A source the daemon follows into the maps.
pub trait Follower {
    /// Looks at the source and applies what changed since the last look.
    fn poll(&mut self, dataplane: &mut Dataplane);
}

/// How a follower reports a change it did not apply, each counted once for the metrics.
#[derive(Clone)]
pub struct Refusals {
    pub counters: Arc<LoaderCounters>,
}

impl Refusals {
    /// Reports a change refused for the problems on its lines, and counts it.
    pub fn lines(&self, file: &str, errors: &[LineError], message: &str) {
        for e in errors {
            error!(%file, line = e.line, problem = %e.message, "{message}");
        }
        self.count();
    }

    /// Reports a change the maps refused, and counts it (a full map also by map).
    pub fn apply(&self, file: &str, e: &DataplaneError, message: &str) {
        if let DataplaneError::MapFull { map, .. } = e {
            self.counters.count_map_full(map);
        }
        error!(%file, error = %e, "{message}");
        self.count();
    }

    /// Counts a change that was not applied.
    pub fn count(&self) {
        self.counters.apply_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps the gauges of what the last plan left out.
    pub fn left_out(&self, desired: &Desired) {
        let counters = &self.counters;
        let set = |gauge: &std::sync::atomic::AtomicU64, n: usize| {
            gauge.store(n as u64, Ordering::Relaxed)
        };
        set(&counters.unresolved_routes, desired.unresolved);
        set(
            &counters.unresolved_table_lines,
            desired.table_lines_left_out,
        );
    }
}
