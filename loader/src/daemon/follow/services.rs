//! The services, followed: the file's (a file that cannot be read or parsed is reported and
//! its last good version kept) with the store's valid records (a refused record is reported
//! and counted once per version). A set that does not fit the maps is reported and the
//! running services stay.
use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use dataplane::{
    kernel::Dataplane,
    model::{
        Ipv4Prefix,
        services::{self, RecordBounds, Services},
    },
};
use tracing::{info, warn};

use super::{Follower, Refusals, file::FollowedFile};
use crate::daemon::cluster_services::ServiceRecords;

const REFUSED: &str = "services not applied; keeping the running ones";

/// The store's services, and where their addresses must lie.
pub struct StoreServices {
    pub records: Arc<ServiceRecords>,
    pub store_prefix: String,
    /// The cluster's workload range (`--cluster-cidr`) for backends, the service range
    /// (`--service-cidr`) for virtual addresses.
    pub bounds: RecordBounds,
}

/// Where the services come from: the file (as last parsed) and the store.
pub struct ServicesFollower {
    file: Option<FollowedFile>,
    from_file: Services,
    store: Option<StoreServices>,
    /// Where the file's services' virtual addresses must lie.
    range: Ipv4Prefix,
    /// Store records refused, as they were: a record is reported again only once it changes.
    refused: BTreeMap<String, Vec<u8>>,
    refusals: Refusals,
}

impl ServicesFollower {
    /// Follows the services file at `path` (applied as it was `read`: `services`) if given,
    /// and the store's services if given.
    pub fn new(
        file: Option<(&Path, Services, Vec<u8>)>,
        store: Option<StoreServices>,
        range: Ipv4Prefix,
        refusals: Refusals,
    ) -> Self {
        let (file, from_file) = match file {
            Some((path, services, read)) => (Some(FollowedFile::new(path, read)), services),
            None => (None, Services::default()),
        };
        Self {
            file,
            from_file,
            store,
            range,
            refused: BTreeMap::new(),
            refusals,
        }
    }

    /// The file's services with the store's valid records.
    fn current(&mut self) -> Services {
        let Some(store) = &self.store else {
            return self.from_file.clone();
        };
        let records = store
            .records
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (all, refused) =
            services::with_records(&self.from_file, &records, &store.store_prefix, store.bounds);
        let mut now = BTreeMap::new();
        for (key, why) in refused {
            let value = records.get(&key).cloned().unwrap_or_default();
            if self.refused.get(&key) != Some(&value) {
                warn!(%key, reason = why.reason(), problem = %why, "refusing a service record");
                self.refusals.counters.count_refused_record(why.reason());
            }
            now.insert(key, value);
        }
        self.refused = now;
        all
    }

    /// Whether the file's services changed (a new version parsed) since the last look.
    fn file_changed(&mut self) -> bool {
        let Some(followed) = &mut self.file else {
            return false;
        };
        let Some((text, _)) = followed.changed("services", &self.refusals) else {
            return false;
        };
        followed.take();
        match services::parse(&text).and_then(|parsed| {
            services::in_range(&parsed, self.range)?;
            Ok(parsed)
        }) {
            Ok(parsed) => {
                self.from_file = parsed;
                true
            }
            Err(errors) => {
                self.refusals.lines(&followed.name(), &errors, REFUSED);
                false
            }
        }
    }
}

impl Follower for ServicesFollower {
    fn poll(&mut self, dataplane: &mut Dataplane) {
        let mut changed = self.file_changed();
        if let Some(store) = &self.store {
            changed |= store.records.changed.swap(false, Ordering::Relaxed);
        }
        if !changed {
            return;
        }
        let started = Instant::now();
        let all = self.current();
        match dataplane.apply_services(&all) {
            Ok(report) => info!(
                services = report.services,
                backends = report.backends,
                written = report.written,
                removed = report.removed,
                total_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                "services applied"
            ),
            Err(e) => self.refusals.apply("services", &e, REFUSED),
        }
    }
}
