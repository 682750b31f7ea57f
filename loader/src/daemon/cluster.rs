//! Cluster mode: this host's record in etcd, kept alive by a lease, and the other hosts'
//! records followed into the route plan (`dataplane::cluster` has the record format).
//!
//! - Joining: the host's prefix is the one given, or the one it had (remembered in its state
//!   directory, or found in the store under its underlay address), or the first free one of
//!   the cluster CIDR, claimed with a transaction that only succeeds if the key does not exist
//!   (two hosts never get the same prefix).
//! - Running: a session grants a lease, (re)writes the record bound to it, keeps the lease
//!   alive, reads every record at one revision and watches from the next, so no change is
//!   missed. Any failure ends the session; the next starts after a backoff (0.5 s doubling
//!   to 10 s) and resyncs from a fresh read. Meanwhile the maps keep the last known routes:
//!   an unreachable store never flushes them.
//! - Trust: every record is checked against the cluster's rules (`RecordRules`: key agrees
//!   with prefix, a `/subnet-len` of the cluster CIDR, underlay in the underlay network, VXLAN
//!   complete, bound to a lease) before it becomes a route; a refused record is logged with
//!   its key and reason and counted, and a refused update of a key keeps the key's last valid
//!   record. One key per prefix, claimed by transaction, so the first claimant keeps it; if
//!   another writer overwrites or deletes this host's own record, the host writes it back.
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use dataplane::model::{
    Ipv4Prefix,
    cluster::{self, HostRecord, Refusal},
};
use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use tracing::{info, warn};

pub use super::store::{Records, Store};
use crate::metrics::LoaderCounters;

/// What the loader knows of the cluster, shared between the session task and the watcher.
#[derive(Default)]
pub struct View {
    pub records: Mutex<BTreeMap<String, HostRecord>>,
    /// Set when `records` changed since the watcher last looked.
    pub changed: AtomicBool,
    /// Set while a session is up.
    pub connected: AtomicBool,
    /// Set while this host's prefix is another host's: the host serves it no more.
    pub withdrawn: AtomicBool,
}

/// Claims `record` under a new lease: succeeds if the key is free, or holds a record of ours
/// (same prefix and underlay: this host before a restart).
async fn claim(
    client: &mut Client,
    store: &Store,
    record: &HostRecord,
    lease: i64,
) -> Result<bool> {
    let key = cluster::record_key(&store.prefix, &record.prefix);
    let value = serde_json::to_vec(record)?;
    let put = || {
        TxnOp::put(
            key.clone(),
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )
    };
    let free = client
        .txn(
            Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([put()]),
        )
        .await?;
    if free.succeeded() {
        return Ok(true);
    }
    let current = client.get(key.clone(), None).await?;
    let Some(kv) = current.kvs().first() else {
        return Ok(false);
    };
    let mine = serde_json::from_slice::<HostRecord>(kv.value())
        .is_ok_and(|r| r.prefix == record.prefix && r.underlay == record.underlay);
    if !mine {
        return Ok(false);
    }
    // Ours from before: replaced only if unchanged since read (another host cannot slip in).
    let retake = client
        .txn(
            Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([put()]),
        )
        .await?;
    Ok(retake.succeeded())
}

/// How this host chooses its prefix.
#[derive(Clone, Debug)]
pub enum PrefixChoice {
    Given(Ipv4Prefix),
    /// From the cluster CIDR, in prefixes of this length; `remembered` is the last one held.
    Allocate {
        cidr: Ipv4Prefix,
        len: u8,
        remembered: Option<Ipv4Prefix>,
    },
}

/// What [`join`] gives: this host's record, the lease it is bound to, and every host's
/// record as read right after it was written.
pub struct Joined {
    pub record: HostRecord,
    pub lease: i64,
    pub records: Records,
}

/// Joins the cluster: finds this host's prefix, writes its record, and reads the others'.
pub async fn join(store: &Store, choice: &PrefixChoice, template: &HostRecord) -> Result<Joined> {
    let mut client = store.connect().await?;
    let lease = client
        .lease_grant(store.lease_ttl, None)
        .await
        .context("granting a lease")?
        .id();
    let record = claim_prefix(&mut client, store, choice, template, lease).await?;
    let records = store.records(&mut client).await?;
    Ok(Joined {
        record,
        lease,
        records,
    })
}

/// Claims this host's prefix as `choice` says, under `lease`.
async fn claim_prefix(
    client: &mut Client,
    store: &Store,
    choice: &PrefixChoice,
    template: &HostRecord,
    lease: i64,
) -> Result<HostRecord> {
    let with = |prefix: Ipv4Prefix| HostRecord {
        prefix,
        ..template.clone()
    };
    match choice {
        PrefixChoice::Given(prefix) => {
            let record = with(*prefix);
            if !claim(client, store, &record, lease).await? {
                bail!("prefix {prefix} is held by another host in the cluster");
            }
            Ok(record)
        }
        PrefixChoice::Allocate {
            cidr,
            len,
            remembered,
        } => {
            let records = store.records(client).await?.valid;
            let ours = records
                .values()
                .filter(|r| r.underlay == template.underlay)
                .map(|r| r.prefix);
            let preferred: Vec<Ipv4Prefix> = remembered.iter().copied().chain(ours).collect();
            let taken: Vec<Ipv4Prefix> = records.values().map(|r| r.prefix).collect();
            let free = cluster::candidates(*cidr, *len).filter(|p| !taken.contains(p));
            for prefix in preferred.into_iter().chain(free) {
                if !cidr.covers(&prefix) || prefix.prefix_len() != *len {
                    continue;
                }
                let record = with(prefix);
                if claim(client, store, &record, lease).await? {
                    return Ok(record);
                }
            }
            bail!("no free /{len} left in {cidr}")
        }
    }
}

/// Logs and counts the records refused (`counters`), each with its key and why; `kept` says
/// whether the key's last valid record stays in force.
pub fn report_refused(key: &str, why: &Refusal, kept: bool, counters: &LoaderCounters) {
    counters.count_refused_record(why.reason());
    if kept {
        warn!(%key, reason = why.reason(), problem = %why, "refusing an update of a host record; keeping its last valid record");
    } else {
        warn!(%key, reason = why.reason(), problem = %why, "refusing a host record");
    }
}

/// Runs sessions until the process ends, keeping `own` published and `view` current.
pub async fn follow(
    store: Store,
    own: HostRecord,
    mut lease: i64,
    view: Arc<View>,
    counters: Arc<LoaderCounters>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = std::time::Instant::now();
        if let Err(e) = session(&store, &own, &mut lease, &view, &counters).await {
            view.connected.store(false, Ordering::Relaxed);
            warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "etcd session ended; keeping the last known routes");
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(500);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn session(
    store: &Store,
    own: &HostRecord,
    lease: &mut i64,
    view: &View,
    counters: &LoaderCounters,
) -> Result<()> {
    let mut client = store.connect().await?;
    // The lease of the last session may have expired while the store was away.
    let alive = client
        .lease_time_to_live(*lease, None)
        .await
        .map(|r| r.ttl() > 0)
        .unwrap_or(false);
    if !alive {
        *lease = client.lease_grant(store.lease_ttl, None).await?.id();
    }
    if !claim(&mut client, store, own, *lease).await? {
        withdraw(view, own, counters);
        bail!(
            "prefix {} was taken by another host while this one was away",
            own.prefix
        );
    }
    if view.withdrawn.swap(false, Ordering::Relaxed) {
        counters.prefix_withdrawn.store(0, Ordering::Relaxed);
        warn!(prefix = %own.prefix, "this host's prefix is free again and claimed back: serving it");
    }
    let (mut keeper, mut keep_alive) = client.lease_keep_alive(*lease).await?;
    let own_key = cluster::record_key(&store.prefix, &own.prefix);
    let own_value = serde_json::to_vec(own)?;
    let Records {
        mut valid,
        refused,
        revision,
    } = store.records(&mut client).await?;
    {
        let mut records = view.records.lock().unwrap_or_else(|e| e.into_inner());
        for (key, why) in &refused {
            // A key that was valid before this session keeps its last valid record.
            let last = records.get(key).cloned();
            report_refused(key, why, last.is_some(), counters);
            if let Some(last) = last {
                valid.insert(key.clone(), last);
            }
        }
        info!(
            hosts = valid.len(),
            refused = refused.len(),
            revision,
            "etcd: in sync"
        );
        *records = valid;
    }
    view.changed.store(true, Ordering::Relaxed);
    view.connected.store(true, Ordering::Relaxed);
    let mut watch = client
        .watch(
            cluster::subnets_dir(&store.prefix),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    let mut tick = tokio::time::interval(Duration::from_secs((store.lease_ttl / 3).max(1) as u64));
    loop {
        tokio::select! {
            _ = tick.tick() => keeper.keep_alive().await?,
            reply = keep_alive.message() => {
                match reply? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => bail!("the lease expired"),
                }
            }
            message = watch.message() => {
                let Some(resp) = message? else { bail!("the watch ended") };
                if resp.canceled() {
                    bail!("the watch was cancelled (compacted at {})", resp.compact_revision());
                }
                let mut restore_own = false;
                {
                    let mut records = view.records.lock().unwrap_or_else(|e| e.into_inner());
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        if key == own_key {
                            // Only this host writes its record, bound to its lease.
                            let intact = event.event_type() == EventType::Put
                                && kv.value() == own_value.as_slice()
                                && kv.lease() == *lease;
                            restore_own |= !intact;
                            continue;
                        }
                        match event.event_type() {
                            EventType::Put => match store.check(&key, kv.value(), kv.lease()) {
                                Ok(r) => {
                                    info!(%key, prefix = %r.prefix, underlay = %r.underlay, "host record added or changed");
                                    records.insert(key, r);
                                }
                                Err(why) => {
                                    report_refused(&key, &why, records.contains_key(&key), counters);
                                }
                            },
                            EventType::Delete => {
                                info!(%key, "host record gone");
                                records.remove(&key);
                            }
                        }
                    }
                }
                if restore_own {
                    warn!(key = %own_key, "this host's record was changed or removed by another writer; writing it back");
                    counters.count_refused_record("own_record_overwritten");
                    client
                        .put(own_key.clone(), own_value.clone(), Some(PutOptions::new().with_lease(*lease)))
                        .await
                        .context("writing this host's record back")?;
                }
                view.changed.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// This host's prefix is another host's now (this one was away longer than its lease, and the
/// other claimed it): rather than serve one prefix from two hosts, this one withdraws. Its
/// routes to the cluster go (its view of the records is emptied), the plugin is told it has no
/// prefix (new containers are refused), and it says so loudly; every session after tries to
/// claim the prefix back, and serves it again once it is free.
fn withdraw(view: &View, own: &HostRecord, counters: &LoaderCounters) {
    if !view.withdrawn.swap(true, Ordering::Relaxed) {
        tracing::error!(
            prefix = %own.prefix,
            "this host's prefix was claimed by another host while this one was away: withdrawing (routes to the cluster removed, new containers refused) until it is free again"
        );
    }
    counters.prefix_withdrawn.store(1, Ordering::Relaxed);
    view.records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    view.changed.store(true, Ordering::Relaxed);
}
