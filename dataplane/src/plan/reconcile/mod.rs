//! The daemon's decision on each look at its route sources: given the running table, a changed
//! table (if the file has one), the feeds and what the maps hold, which plan to apply.
//!
//! A pure function of its inputs (the host is asked through a [`System`]): the loader gathers,
//! asks, applies and reports. The one judgement besides resolving is the big-removal guard: a
//! changed table that would take out more than half of the installed routes looks like a file
//! caught truncated, and is held (the feeds still go on against the running table) until the
//! file has kept it for [`BIG_REMOVAL_SETTLE`].
use std::time::Duration;

use super::{
    Plan, diff,
    resolve::System,
    sources::{self, Desired, Feeds},
};
use crate::model::{LineError, route_table::Config};

/// How long a route table that would remove more than half of the installed routes must stay
/// the same before it is applied (a truncated file looks like an empty table).
pub const BIG_REMOVAL_SETTLE: Duration = Duration::from_secs(10);

/// A route table that changed and parsed, not taken yet.
#[derive(Clone, Copy)]
pub struct Candidate<'a> {
    pub config: &'a Config,
    /// How long the file has held it.
    pub stable: Duration,
}

/// Everything the decision depends on.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// The table the maps were last filled from.
    pub running: &'a Config,
    /// A changed table, if the file has one.
    pub candidate: Option<Candidate<'a>>,
    pub feeds: Feeds<'a>,
    /// What the maps hold now.
    pub applied: &'a Plan,
}

/// What became of the changed table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableOutcome {
    /// None was offered: the plan is the running table's with the feeds.
    NoneOffered,
    /// The plan is the changed table's: it becomes the running one.
    Taken,
    /// The changed table would remove `removed` of the `installed` routes and has not held
    /// long enough: the plan is the running table's; ask again later.
    Held { removed: usize, installed: usize },
}

/// The plan to apply and where it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub desired: Desired,
    pub table: TableOutcome,
}

/// Why no plan could be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The table offered (or, with none offered, the running one with the feeds) cannot be
    /// realised: the changed table is refused, the maps stay as they are.
    Table(Vec<LineError>),
    /// A changed table was held, and the running one no longer resolves: nothing is decided
    /// about the changed table yet.
    Running(Vec<LineError>),
}

/// Decides which plan the maps should hold now.
pub fn decide(inputs: &Inputs, system: &dyn System) -> Result<Decision, Refused> {
    let Some(candidate) = inputs.candidate else {
        let desired =
            sources::desired(inputs.running, &inputs.feeds, system).map_err(Refused::Table)?;
        return Ok(Decision {
            desired,
            table: TableOutcome::NoneOffered,
        });
    };
    let desired =
        sources::desired(candidate.config, &inputs.feeds, system).map_err(Refused::Table)?;
    let installed = inputs.applied.routes.len();
    let removed = diff(&inputs.applied.routes, &desired.plan.routes)
        .removals
        .len();
    if removed * 2 > installed && candidate.stable < BIG_REMOVAL_SETTLE {
        let desired =
            sources::desired(inputs.running, &inputs.feeds, system).map_err(Refused::Running)?;
        return Ok(Decision {
            desired,
            table: TableOutcome::Held { removed, installed },
        });
    }
    Ok(Decision {
        desired,
        table: TableOutcome::Taken,
    })
}

#[cfg(test)]
mod tests;
