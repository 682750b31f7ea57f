//! Cluster mode: the services every host takes from the store (`<prefix>/services/<name>`,
//! see `dataplane::model::services::store_dir`), read at one revision and watched from the
//! next, as the host records are. The records are only collected here; the watcher checks
//! them (`services::with_records`) and joins them to the services file. A session that fails
//! is retried after a backoff (0.5 s doubling to 10 s); meanwhile the last known services
//! stay in the maps.
use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use dataplane::model::services;
use etcd_client::{EventType, GetOptions, WatchOptions};
use tracing::{info, warn};

use super::store::Store;

/// The service records as last read, shared between the session task and the watcher.
#[derive(Default)]
pub struct ServiceRecords {
    pub records: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Set when `records` changed since the watcher last looked.
    pub changed: AtomicBool,
}

/// Runs sessions until the process ends, keeping `view` equal to the store's service records.
pub async fn follow(store: Store, view: std::sync::Arc<ServiceRecords>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = std::time::Instant::now();
        if let Err(e) = session(&store, &view).await {
            warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "etcd service session ended; keeping the last known services");
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(500);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn session(store: &Store, view: &ServiceRecords) -> Result<()> {
    let mut client = store.connect().await?;
    let dir = services::store_dir(&store.prefix);
    let resp = client
        .get(dir.clone(), Some(GetOptions::new().with_prefix()))
        .await
        .context("reading the service records")?;
    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
    let read: BTreeMap<String, Vec<u8>> = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            )
        })
        .collect();
    info!(
        services = read.len(),
        revision, "etcd: service records in sync"
    );
    *view.records.lock().unwrap_or_else(|e| e.into_inner()) = read;
    view.changed.store(true, Ordering::Relaxed);
    let mut watch = client
        .watch(
            dir,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    loop {
        let Some(resp) = watch.message().await? else {
            bail!("the watch ended")
        };
        if resp.canceled() {
            bail!(
                "the watch was cancelled (compacted at {})",
                resp.compact_revision()
            );
        }
        let mut records = view.records.lock().unwrap_or_else(|e| e.into_inner());
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match event.event_type() {
                EventType::Put => {
                    records.insert(key, kv.value().to_vec());
                }
                EventType::Delete => {
                    records.remove(&key);
                }
            }
        }
        view.changed.store(true, Ordering::Relaxed);
    }
}
