//! A file the loader follows (the route table, the policy, the services): a change is taken
//! only once it has settled, and an unchanged file, good or bad, is looked at once.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tracing::warn;

use super::Refusals;

/// How long a changed file must stay the same before it is read as the new version: an
/// editor or a tool rewriting it in place is never caught half-way (write-then-rename is the
/// way to update at once; it too waits this long).
pub const SETTLE: Duration = Duration::from_millis(300);

/// A followed file, with its bytes as last taken (applied or refused).
pub struct FollowedFile {
    path: PathBuf,
    seen: Option<Vec<u8>>,
    /// A change not taken yet, and since when the file has held it.
    pending: Option<(Vec<u8>, Instant)>,
}

impl FollowedFile {
    /// Starts following `path`, whose bytes `read` (as read when what the dataplane holds was
    /// made from it) are taken as applied: a change written since is a change, however soon.
    pub fn new(path: &Path, read: Vec<u8>) -> Self {
        Self {
            path: path.to_path_buf(),
            seen: Some(read),
            pending: None,
        }
    }

    /// Marks the settled change as taken (applied, or refused and reported).
    pub fn take(&mut self) {
        if let Some((bytes, _)) = self.pending.take() {
            self.seen = Some(bytes);
        }
    }

    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// The file's text and how long it has been so, if it changed since last taken and has
    /// stayed the same for [`SETTLE`]; the caller [`take`](Self::take)s it once done with it.
    /// A file that cannot be read is reported once (as `what`) and counted as a refused
    /// change.
    pub fn changed(&mut self, what: &str, refusals: &Refusals) -> Option<(String, Duration)> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if self.seen.take().is_some() {
                    warn!(file = %self.name(), error = %e, "cannot read the {what}; keeping the running one");
                    refusals.count();
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
                self.pending = Some((bytes, Instant::now()));
                return None;
            }
        };
        if stable < SETTLE {
            return None;
        }
        Some((String::from_utf8_lossy(&bytes).into_owned(), stable))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, atomic::Ordering};

    use super::*;
    use crate::metrics::LoaderCounters;

    fn refusals() -> Refusals {
        Refusals {
            counters: Arc::new(LoaderCounters::default()),
        }
    }

    #[test]
    fn a_change_is_taken_once_it_has_settled_and_then_not_again() {
        let dir = std::env::temp_dir().join(format!("followed-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("table");
        std::fs::write(&path, "one").unwrap();
        let refusals = refusals();
        let mut file = FollowedFile::new(&path, b"one".to_vec());
        assert_eq!(
            file.changed("table", &refusals),
            None,
            "as started: applied"
        );

        std::fs::write(&path, "two").unwrap();
        assert_eq!(
            file.changed("table", &refusals),
            None,
            "just changed: not settled"
        );
        std::thread::sleep(SETTLE + Duration::from_millis(50));
        let (text, stable) = file.changed("table", &refusals).expect("settled");
        assert_eq!(text, "two");
        assert!(stable >= SETTLE);
        // Until taken, the settled change is offered again; once taken, never.
        assert!(file.changed("table", &refusals).is_some());
        file.take();
        assert_eq!(file.changed("table", &refusals), None);

        // A file that goes away is reported and counted once, and the running one stays.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.changed("table", &refusals), None);
        assert_eq!(file.changed("table", &refusals), None);
        assert_eq!(refusals.counters.apply_errors.load(Ordering::Relaxed), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
