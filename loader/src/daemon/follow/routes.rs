//! The route table and the live feeds (workloads, kernel routes, cluster records), followed:
//! on every look, if a source changed, the core (`plan::reconcile::decide`) says which plan
//! the maps should hold, and this applies its difference (maps, then attachments), logs each
//! change and keeps the loader's record true. A table that fails is reported (file and line)
//! and the running dataplane keeps its last good table untouched.
use std::{
    collections::{BTreeSet, HashSet},
    net::Ipv4Addr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use dataplane::{
    common::NextHopKind,
    kernel::Dataplane,
    model::{
        LineError,
        mac::format_mac,
        route_table::{self as config, Config},
    },
    plan::{
        Plan, diff,
        reconcile::{self, Candidate, Inputs, Refused, TableOutcome},
        resolve::LiveSystem,
        sources::Desired,
        unanswered::{RETRY_UNANSWERED, RememberUnanswered},
    },
    system::workloads::Reply,
};
use tracing::{error, info, warn};

use super::{Follower, Refusals, feeds::RouteFeeds, file::FollowedFile};
use crate::state::{self, AttachmentRecord, LoaderState};

/// The log line of a route table change that was not applied.
const TABLE_REFUSED: &str = "route table not applied; keeping the last good one";

pub struct RouteFollower {
    table: FollowedFile,
    /// The last route table applied (the feeds are merged with it).
    config: Config,
    feeds: RouteFeeds,
    /// What the maps hold now.
    applied: Plan,
    /// Set by the kernel's notifications when links, addresses or watched neighbours changed.
    system_changed: Arc<AtomicBool>,
    /// The neighbours whose changes the kernel's notifications report (see [`Self::watch`]).
    watched_neighbours: Arc<Mutex<HashSet<Ipv4Addr>>>,
    /// The loader's record, rewritten when the attachments change.
    state: LoaderState,
    /// Warnings as last given: repeated ones are not logged again.
    warned: BTreeSet<String>,
    /// A big removal is waiting (announced once).
    big_removal_announced: bool,
    refusals: Refusals,
    /// The host, with the neighbours that did not answer remembered between looks.
    system: RememberUnanswered<LiveSystem>,
    /// When to plan again because the last plan left something out (None: nothing was).
    retry_at: Option<Instant>,
}

/// Everything [`RouteFollower::new`] starts from.
pub struct RouteStart<'a> {
    pub path: &'a Path,
    /// The table's bytes as the start read them.
    pub read: Vec<u8>,
    /// The table the maps hold now, with the feeds: `applied`.
    pub config: Config,
    pub applied: Plan,
    pub feeds: RouteFeeds,
    pub system_changed: Arc<AtomicBool>,
    pub watched_neighbours: Arc<Mutex<HashSet<Ipv4Addr>>>,
    pub state: LoaderState,
    pub refusals: Refusals,
    /// The host, as the start asked it (the neighbours silent then remembered).
    pub system: RememberUnanswered<LiveSystem>,
}

impl RouteFollower {
    pub fn new(start: RouteStart) -> Self {
        Self {
            table: FollowedFile::new(start.path, start.read),
            config: start.config,
            feeds: start.feeds,
            applied: start.applied,
            system_changed: start.system_changed,
            watched_neighbours: start.watched_neighbours,
            state: start.state,
            warned: BTreeSet::new(),
            big_removal_announced: false,
            refusals: start.refusals,
            system: start.system,
            retry_at: None,
        }
    }

    /// Reports what the plan the dataplane started with left out, and plans again later if
    /// it left something out.
    pub fn started_with(&mut self, desired: &Desired) {
        self.warn_once(&desired.warnings);
        self.schedule_retry(desired);
        self.watch(&desired.plan);
    }

    /// Keeps the set of neighbours worth waking for: the workloads the plan routes to, the
    /// next hops and tunnel endpoints it uses, and those it waits for.
    fn watch(&self, plan: &Plan) {
        let local = plan
            .routes
            .iter()
            .filter(|(prefix, nh)| {
                nh.kind == NextHopKind::Local as u32 && prefix.prefix_len() == 32
            })
            .map(|(prefix, _)| prefix.addr());
        let watched: HashSet<Ipv4Addr> = local
            .chain(plan.peers.iter().copied())
            .chain(self.system.silent_addrs())
            .collect();
        *self
            .watched_neighbours
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = watched;
    }

    /// Logs the warnings that are new since the last resolution.
    fn warn_once(&mut self, warnings: &[String]) {
        let now: BTreeSet<String> = warnings.iter().cloned().collect();
        for w in now.difference(&self.warned) {
            warn!("{w}");
        }
        self.warned = now;
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

    /// What the maps hold now.
    pub fn applied(&self) -> &Plan {
        &self.applied
    }

    /// The route table, parsed, and how long the file has held it, if it changed and has
    /// settled (not taken yet: taken once applied or refused). A table that does not parse is
    /// reported and taken.
    fn changed_table(&mut self) -> Option<(Config, Duration)> {
        let (text, stable) = self.table.changed("route table", &self.refusals)?;
        match config::parse(&text) {
            Ok(config) => Some((config, stable)),
            Err(errors) => {
                self.table.take();
                self.refusals
                    .lines(&self.table.name(), &errors, TABLE_REFUSED);
                None
            }
        }
    }

    /// Whether any feed or the host changed since the last look (each flag is taken), or
    /// what the last plan left out is due to be tried again.
    fn feeds_changed(&mut self) -> bool {
        let kernel = self.feeds.kernel.as_ref().is_some_and(|k| k.take_changed());
        let cluster = self
            .feeds
            .cluster
            .as_ref()
            .is_some_and(|c| c.take_changed());
        let system = self.system_changed.swap(false, Ordering::Relaxed);
        let retry = self.retry_at.is_some_and(|at| Instant::now() >= at);
        if retry {
            self.retry_at = None;
        }
        kernel || cluster || system || retry
    }

    /// Plans again later if this plan left something out: when the first silent neighbour
    /// may be asked again (a missing interface comes back with a link notification, but is
    /// looked for then too).
    fn schedule_retry(&mut self, desired: &Desired) {
        // Never sooner than a second from now: a retry is a whole pass of planning.
        let soonest = Instant::now() + std::time::Duration::from_secs(1);
        self.retry_at = (desired.unresolved + desired.table_lines_left_out > 0).then(|| {
            self.system
                .next_retry()
                .unwrap_or_else(|| Instant::now() + RETRY_UNANSWERED)
                .max(soonest)
        });
    }

    /// Gathers the sources; if one changed (or `force`), asks the core for the plan and
    /// applies its difference. The error says why a change was not applied.
    fn reconcile(&mut self, dataplane: &mut Dataplane, force: bool) -> Result<(), String> {
        let started = Instant::now();
        self.feeds.publish_ownership();
        let candidate = self.changed_table();
        let feeds_changed = self.feeds_changed();
        let fresh = self.feeds.workloads.read_if_changed(force);
        let records_changed = fresh
            .as_ref()
            .is_some_and(|f| self.feeds.workloads.differs(f));
        if candidate.is_none() && !feeds_changed && !records_changed && !force {
            return Ok(());
        }
        let workloads = fresh.unwrap_or_else(|| self.feeds.workloads.taken());
        let records = self.feeds.cluster_records();
        self.refusals.counters.plans.fetch_add(1, Ordering::Relaxed);
        let inputs = Inputs {
            running: &self.config,
            candidate: candidate.as_ref().map(|(config, stable)| Candidate {
                config,
                stable: *stable,
            }),
            feeds: self.feeds.view(&workloads, records.as_ref()),
            applied: &self.applied,
        };
        let decided = self
            .system
            .pass(|system| reconcile::decide(&inputs, system));
        let decision = match decided {
            Ok(decision) => decision,
            Err(Refused::Table(errors)) => {
                // Whatever refused it may pass: tried again, even if nothing else changes.
                self.retry_at = Some(Instant::now() + RETRY_UNANSWERED);
                if candidate.is_some() {
                    self.table.take();
                }
                self.refusals
                    .lines(&self.table.name(), &errors, TABLE_REFUSED);
                return Err(render(&errors));
            }
            Err(Refused::Running(errors)) => {
                self.retry_at = Some(Instant::now() + RETRY_UNANSWERED);
                return Err(render(&errors));
            }
        };
        self.announce_big_removal(&decision.table);
        self.refusals.left_out(&decision.desired);
        self.schedule_retry(&decision.desired);
        self.watch(&decision.desired.plan);
        self.warn_once(&decision.desired.warnings);
        if decision.table == TableOutcome::Taken
            && let Some((config, _)) = candidate
        {
            self.table.take();
            self.config = config;
        }
        self.feeds.workloads.keep(workloads);
        if decision.desired.plan == self.applied {
            return Ok(());
        }
        self.apply(dataplane, decision.desired, started)
    }

    /// Most of the table gone at once looks like a file caught truncated: the core holds it
    /// until it has stayed so for longer, and this says so once.
    fn announce_big_removal(&mut self, outcome: &TableOutcome) {
        let TableOutcome::Held { removed, installed } = outcome else {
            self.big_removal_announced = false;
            return;
        };
        if !self.big_removal_announced {
            warn!(
                file = %self.table.name(),
                removed,
                installed,
                wait_s = reconcile::BIG_REMOVAL_SETTLE.as_secs(),
                "the route table would remove more than half of the routes; applying it only if it stays so"
            );
            self.big_removal_announced = true;
        }
    }

    /// Makes the maps, then the attachments, hold `desired`'s plan (a new interface never
    /// meets a table without its route), and logs the change.
    fn apply(
        &mut self,
        dataplane: &mut Dataplane,
        desired: Desired,
        started: Instant,
    ) -> Result<(), String> {
        let file = self.table.name();
        let plan = desired.plan;
        let change = diff(&self.applied.routes, &plan.routes);
        let resolved_ms = started.elapsed().as_secs_f64() * 1e3;
        if let Err(e) = dataplane.apply(&plan) {
            self.refusals.apply(&file, &e, TABLE_REFUSED);
            return Err(e.to_string());
        }
        let mut plan = plan;
        if plan.attachments != self.applied.attachments {
            let report =
                match dataplane.update_attachments(&self.applied.attachments, &plan.attachments) {
                    Ok(report) => report,
                    Err(e) => {
                        // The maps hold the new plan; the attachments stay as they were, and
                        // the next look tries again.
                        self.refusals.apply(&file, &e, "attachments not changed");
                        self.applied.routes = plan.routes;
                        self.system_changed.store(true, Ordering::Relaxed);
                        return Err(e.to_string());
                    }
                };
            for ifname in &report.attached {
                info!(%ifname, "attached");
            }
            for path in &report.released {
                info!(link = %path.display(), "released the link of an interface no longer in the plan");
            }
            // An interface that could not be attached holds up no other: it is left out of
            // what is attached (the plugin's check for its workload fails) and tried again.
            for (ifname, error) in &report.failed {
                error!(%ifname, %error, "cannot attach; trying again later");
                self.refusals.count();
            }
            if !report.failed.is_empty() {
                plan.attachments
                    .retain(|a| !report.failed.iter().any(|(ifname, _)| *ifname == a.ifname));
                self.retry_at = Some(Instant::now() + RETRY_UNANSWERED);
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

impl Follower for RouteFollower {
    fn poll(&mut self, dataplane: &mut Dataplane) {
        // A refusal is reported and counted where it happens; the next change tries again.
        let _ = self.reconcile(dataplane, false);
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
