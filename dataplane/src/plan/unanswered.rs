//! Neighbours that did not answer, remembered across passes of planning.
//!
//! A next hop that does not answer ARP costs a wait (`resolve::NEIGHBOUR_TIMEOUT`) each time
//! it is asked for, and the daemon plans on every change of the host and on every request of
//! the CNI plugin, which waits for the answer. [`RememberUnanswered`] waits for a neighbour
//! once; after it stayed silent, it answers "no MAC" at once, and looks again (in the table,
//! with the kernel asked to resolve it, never waiting) once a period has passed (the first
//! period given, doubled after each silence up to [`MAX_RETRY_PERIOD`]). A neighbour that
//! answers in between arrives as a kernel notification, which wakes a new plan (the silent
//! neighbours are watched). So a dead next hop costs one wait in all, never one per look.
use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::resolve::System;
use crate::system::netinfo::{KernelRoute, Link, NetInfoError};

/// How long a neighbour that did not answer is first taken as silent before it is asked
/// again.
pub const RETRY_UNANSWERED: Duration = Duration::from_secs(5);
/// The longest a silent neighbour goes unasked.
pub const MAX_RETRY_PERIOD: Duration = Duration::from_secs(60);

/// A silent neighbour: when it was last asked, and how long it goes unasked from then.
#[derive(Clone, Copy)]
struct Silence {
    since: Instant,
    period: Duration,
}

pub struct RememberUnanswered<S> {
    inner: S,
    retry_after: Duration,
    /// The silent neighbours, by address and interface.
    silent: Mutex<HashMap<(Ipv4Addr, String), Silence>>,
    /// The neighbours asked for in the current pass ([`RememberUnanswered::pass`]).
    asked: Mutex<std::collections::HashSet<(Ipv4Addr, String)>>,
}

impl<S: System> RememberUnanswered<S> {
    pub fn new(inner: S, retry_after: Duration) -> Self {
        Self {
            inner,
            retry_after,
            silent: Mutex::default(),
            asked: Mutex::default(),
        }
    }

    /// Runs one pass of planning, `plan`, against this system; a silent neighbour the pass
    /// does not ask for (its line removed, its host gone) is forgotten after it, so that it
    /// neither schedules retries nor stays watched.
    pub fn pass<T>(&self, plan: impl FnOnce(&Self) -> T) -> T {
        self.begin_pass();
        let planned = plan(self);
        self.end_pass();
        planned
    }

    fn begin_pass(&self) {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn end_pass(&self) {
        let asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        self.silent().retain(|key, _| asked.contains(key));
    }

    fn silent(&self) -> std::sync::MutexGuard<'_, HashMap<(Ipv4Addr, String), Silence>> {
        self.silent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses of the silent neighbours: the plan waits for them.
    pub fn silent_addrs(&self) -> Vec<Ipv4Addr> {
        self.silent().keys().map(|(addr, _)| *addr).collect()
    }

    /// When the first silent neighbour may be asked again (None: none is silent): a plan
    /// that left something out should be made again then.
    pub fn next_retry(&self) -> Option<Instant> {
        self.silent().values().map(|s| s.since + s.period).min()
    }
}

impl<S: System> System for RememberUnanswered<S> {
    fn links(&self) -> Result<Vec<Link>, NetInfoError> {
        self.inner.links()
    }
    fn ipv4_addrs(&self) -> Result<Vec<(String, Ipv4Addr)>, NetInfoError> {
        self.inner.ipv4_addrs()
    }
    fn neighbour_mac(&self, addr: Ipv4Addr, dev: &str) -> Result<Option<[u8; 6]>, NetInfoError> {
        let key = (addr, dev.to_string());
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        let known = self.silent().get(&key).copied();
        if known.is_some_and(|s| s.since.elapsed() < s.period) {
            return Ok(None);
        }
        // Waited for once; once silent, looked at again without waiting.
        let mac = match known {
            None => self.inner.neighbour_mac(addr, dev)?,
            Some(_) => self.inner.neighbour_mac_now(addr, dev)?,
        };
        let mut silent = self.silent();
        match mac {
            Some(_) => {
                silent.remove(&key);
            }
            None => {
                let period = known.map_or(self.retry_after, |s| {
                    (s.period * 2).min(MAX_RETRY_PERIOD.max(self.retry_after))
                });
                silent.insert(
                    key,
                    Silence {
                        since: Instant::now(),
                        period,
                    },
                );
            }
        }
        Ok(mac)
    }
    fn neighbour_mac_now(
        &self,
        addr: Ipv4Addr,
        dev: &str,
    ) -> Result<Option<[u8; 6]>, NetInfoError> {
        self.inner.neighbour_mac_now(addr, dev)
    }
    fn kernel_routes(&self, table: &str) -> Result<Vec<KernelRoute>, NetInfoError> {
        self.inner.kernel_routes(table)
    }
    /// The host's table; a silent neighbour found in it is silent no more.
    fn neighbour_table(&self) -> Result<Vec<(Ipv4Addr, String, [u8; 6])>, NetInfoError> {
        let table = self.inner.neighbour_table()?;
        let mut silent = self.silent();
        for (addr, dev, _) in &table {
            silent.remove(&(*addr, dev.clone()));
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::plan::fake_system::FakeSystem;

    #[test]
    fn a_silent_neighbour_is_asked_again_only_after_the_retry_period() {
        let dead: Ipv4Addr = "198.19.0.9".parse().unwrap();
        let alive: Ipv4Addr = "198.19.0.2".parse().unwrap();
        let system = RememberUnanswered::new(
            FakeSystem {
                neighbours: vec![(alive, "eth0", [0xaa; 6])],
                ..FakeSystem::default()
            },
            Duration::from_millis(200),
        );
        let asked = || system.inner.lookups.load(Ordering::Relaxed);
        assert_eq!(system.next_retry(), None);
        assert_eq!(system.neighbour_mac(dead, "eth0").unwrap(), None);
        assert_eq!(asked(), 1);
        let retry = system.next_retry().expect("a silent neighbour");
        // Within the period: answered at once, not asked.
        assert_eq!(system.neighbour_mac(dead, "eth0").unwrap(), None);
        assert_eq!(asked(), 1);
        // Answering neighbours are asked every time (their MAC may change).
        assert_eq!(
            system.neighbour_mac(alive, "eth0").unwrap(),
            Some([0xaa; 6])
        );
        assert_eq!(
            system.neighbour_mac(alive, "eth0").unwrap(),
            Some([0xaa; 6])
        );
        assert_eq!(asked(), 3);
        std::thread::sleep(retry.saturating_duration_since(Instant::now()));
        assert_eq!(system.neighbour_mac(dead, "eth0").unwrap(), None);
        assert_eq!(asked(), 4, "asked again once the period passed");
        // Silent again: the next period is twice as long.
        let again = system.next_retry().unwrap();
        assert!(
            again >= Instant::now() + Duration::from_millis(300),
            "the period doubled"
        );
    }

    #[test]
    fn a_silent_neighbour_no_pass_asks_for_is_forgotten() {
        let addr: Ipv4Addr = "198.19.0.9".parse().unwrap();
        let system = RememberUnanswered::new(FakeSystem::default(), Duration::from_secs(5));
        let answer = system.pass(|s| s.neighbour_mac(addr, "eth0").unwrap());
        assert_eq!(answer, None);
        assert_eq!(
            system.silent_addrs(),
            [addr],
            "asked in the pass: still waited for"
        );
        // Its line was removed: the next pass does not ask.
        system.pass(|_| ());
        assert_eq!(system.next_retry(), None);
        assert!(system.silent_addrs().is_empty());
    }

    #[test]
    fn a_neighbour_that_answers_again_is_forgotten_as_silent() {
        let addr: Ipv4Addr = "198.19.0.9".parse().unwrap();
        let mut fake = FakeSystem::default();
        fake.neighbours.clear();
        let mut system = RememberUnanswered::new(fake, Duration::ZERO);
        assert_eq!(system.neighbour_mac(addr, "eth0").unwrap(), None);
        assert!(system.next_retry().is_some());
        system.inner.neighbours.push((addr, "eth0", [0xbb; 6]));
        assert_eq!(system.neighbour_mac(addr, "eth0").unwrap(), Some([0xbb; 6]));
        assert_eq!(system.next_retry(), None);
    }
}
