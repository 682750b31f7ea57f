//! The policy file, followed: applied when it changes; a file that cannot be read or parsed,
//! or does not fit the maps, is reported and the running policy stays.
use std::{path::Path, time::Instant};

use dataplane::{kernel::Dataplane, model::policy};
use tracing::info;

use super::{Follower, Refusals, file::FollowedFile};

const REFUSED: &str = "policy not applied; keeping the running one";

pub struct PolicyFollower {
    file: FollowedFile,
    refusals: Refusals,
}

impl PolicyFollower {
    /// Follows the policy file at `path`, applied as it was `read`.
    pub fn new(path: &Path, read: Vec<u8>, refusals: Refusals) -> Self {
        Self {
            file: FollowedFile::new(path, read),
            refusals,
        }
    }
}

impl Follower for PolicyFollower {
    fn poll(&mut self, dataplane: &mut Dataplane) {
        let Some((text, _)) = self.file.changed("policy", &self.refusals) else {
            return;
        };
        self.file.take();
        let file = self.file.name();
        let started = Instant::now();
        let policy = match policy::parse(&text) {
            Ok(policy) => policy,
            Err(errors) => return self.refusals.lines(&file, &errors, REFUSED),
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
            Err(e) => self.refusals.apply(&file, &e, REFUSED),
        }
    }
}
