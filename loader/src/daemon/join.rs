//! Joining the cluster at start: this host's record published (its prefix given, remembered,
//! or allocated), and the other hosts' records read as the first view.
use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use dataplane::model::{
    Ipv4Prefix,
    cluster::{Encap, HostRecord, RecordRules},
    route_table::Config,
};
use tracing::{info, warn};

use super::{
    cluster::{self, PrefixChoice},
    follow::feeds::ClusterFeed,
};
use crate::{cli::ClusterArgs, metrics::LoaderCounters};

/// Where a host remembers the prefix it held, to ask for it again after a restart or a
/// reboot: under the state directory (kept across reboots, unlike /run), in a directory named
/// after the host (its record's name), so that hosts that are namespaces of one machine keep
/// theirs apart.
fn remembered_prefix_path(state_dir: &std::path::Path, host: &str) -> std::path::PathBuf {
    let safe: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = if safe.is_empty() || safe.starts_with('.') {
        format!("host{safe}")
    } else {
        safe
    };
    state_dir.join(safe).join("cluster-prefix")
}

/// Where releases before the state directory kept it (lost on reboot): still read.
fn legacy_remembered_prefix_path() -> Option<std::path::PathBuf> {
    Some(crate::state::path().ok()?.with_file_name("cluster-prefix"))
}

/// The prefix this host remembers holding, if any.
fn remembered_prefix(path: &std::path::Path) -> Option<dataplane::model::Ipv4Prefix> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    read(path).or_else(|| read(&legacy_remembered_prefix_path()?))
}

/// Joins the cluster: publishes this host's record and reads the others'. `local`: the
/// addresses this host's containers hold now.
pub fn join_cluster(
    runtime: &tokio::runtime::Runtime,
    args: &ClusterArgs,
    config: &Config,
    host: String,
    counters: &LoaderCounters,
    local: &[Ipv4Addr],
) -> Result<(cluster::Store, (HostRecord, i64), ClusterFeed)> {
    let underlay_if = match (&args.cluster_underlay, &config.vxlan) {
        (Some(name), _) => name.clone(),
        (None, Some(vxlan)) => vxlan.dev.clone(),
        (None, None) => bail!(
            "--etcd: give --cluster-underlay IFNAME (the interface facing the other hosts); the route table has no `vxlan` statement to take it from"
        ),
    };
    let encap = match args.cluster_encap.as_deref() {
        Some("vxlan") => Encap::Vxlan,
        Some("routed") => Encap::Routed,
        Some(other) => bail!("--cluster-encap: `{other}` is not `vxlan` or `routed`"),
        None if config.vxlan.is_some() => Encap::Vxlan,
        None => Encap::Routed,
    };
    if encap == Encap::Vxlan && config.vxlan.is_none() {
        bail!("--cluster-encap vxlan needs a `vxlan` statement in the route table");
    }
    let (underlay, underlay_network) = underlay_address(&underlay_if)?;
    let remembered_path = remembered_prefix_path(&args.state_dir, &host);
    let template = template(config, underlay, encap, host);
    let rules = RecordRules {
        store_prefix: args.store.etcd_prefix.clone(),
        cluster: args.cluster_cidr,
        subnet_len: args.subnet_len,
        underlay: underlay_network,
    };
    if let Some(prefix) = args.host_prefix {
        let own = HostRecord {
            prefix,
            ..template.clone()
        };
        if let Err(why) = rules.check_record(&own) {
            bail!(
                "--host-prefix {prefix}: this host's own record would be refused: {why} \
                 (--cluster-cidr {}, --subnet-len {})",
                args.cluster_cidr,
                args.subnet_len
            );
        }
    }
    let choice = match args.host_prefix {
        Some(prefix) => PrefixChoice::Given(prefix),
        None => PrefixChoice::Allocate {
            cidr: args.cluster_cidr,
            len: args.subnet_len,
            remembered: remembered_prefix(&remembered_path),
        },
    };
    let store = cluster::Store::new(&args.store, args.etcd_lease_ttl, Some(rules))?;
    // The store may be electing a leader or coming up: retried for half a minute.
    let deadline = Instant::now() + Duration::from_secs(30);
    let joined = loop {
        match runtime.block_on(cluster::join(&store, &choice, &template)) {
            Ok(joined) => break joined,
            Err(e) if Instant::now() < deadline => {
                warn!(error = %format!("{e:#}"), "joining the cluster failed; retrying in 1 s");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e.context("joining the cluster (gave up after 30 s)")),
        }
    };
    let cluster::Joined {
        record,
        lease,
        records,
    } = joined;
    if let PrefixChoice::Allocate {
        remembered: Some(old),
        ..
    } = &choice
        && *old != record.prefix
    {
        // Claimed by another host while this one was away (longer than its lease).
        let stranded = local.iter().filter(|a| old.contains(**a)).count();
        if stranded > 0 {
            bail!(
                "this host held {old}, which another host claimed while it was away; {stranded} of its containers have addresses in it, which would then be served from two hosts: not starting (remove those containers, or free {old} in the store)"
            );
        }
        warn!(%old, new = %record.prefix, "this host's former prefix is another host's now: it serves a new one");
    }
    if let Err(e) = remember(&remembered_path, &record.prefix.to_string()) {
        warn!(path = %remembered_path.display(), error = %e, "cannot remember this host's prefix; after a reboot it may get another");
    }
    let view = Arc::new(cluster::View::default());
    for (key, why) in &records.refused {
        cluster::report_refused(key, why, false, counters);
    }
    info!(prefix = %record.prefix, underlay = %record.underlay, encap = ?record.encap, hosts = records.valid.len(), refused = records.refused.len(), "joined the cluster");
    *view.records.lock().unwrap_or_else(|e| e.into_inner()) = records.valid;
    let feed = ClusterFeed {
        view,
        own: record.prefix,
        underlay_if,
        published_withdrawn: false,
    };
    Ok((store, (record, lease), feed))
}

/// Writes `prefix` to `path` atomically (write, then rename).
fn remember(path: &std::path::Path, prefix: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, prefix)?;
    std::fs::rename(&tmp, path)
}

/// The first IPv4 address of interface `ifname` in this network namespace, and the network
/// it is in (where the other hosts' underlay addresses must lie).
pub fn underlay_address(ifname: &str) -> Result<(Ipv4Addr, Ipv4Prefix)> {
    let (addr, len) = dataplane::system::netinfo::ipv4_network_of(ifname)?
        .with_context(|| format!("`{ifname}` has no IPv4 address (the cluster underlay)"))?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let network =
        Ipv4Prefix::new(Ipv4Addr::from(u32::from(addr) & mask), len).map_err(anyhow::Error::msg)?;
    Ok((addr, network))
}

/// The record template of this host (its prefix is filled in by [`join`]).
pub fn template(
    config: &dataplane::model::route_table::Config,
    underlay: Ipv4Addr,
    encap: Encap,
    host: String,
) -> HostRecord {
    let vxlan = config.vxlan.as_ref();
    HostRecord {
        prefix: Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 0).expect("0/0"),
        underlay,
        encap,
        vtep_mac: (encap == Encap::Vxlan).then(|| {
            vxlan
                .and_then(|v| v.mac)
                .unwrap_or_else(|| dataplane::plan::resolve::default_vtep_mac(underlay))
        }),
        vni: (encap == Encap::Vxlan)
            .then(|| vxlan.and_then(|v| v.vnis.first().copied()).unwrap_or(1)),
        port: (encap == Encap::Vxlan)
            .then(|| vxlan.map_or(dataplane::common::vxlan::VXLAN_DEFAULT_PORT, |v| v.port)),
        host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_remembers_its_prefix_under_a_directory_of_its_own_name() {
        let dir = std::path::Path::new("/var/lib/x");
        assert_eq!(
            remembered_prefix_path(dir, "node-1.example"),
            dir.join("node-1.example/cluster-prefix")
        );
        // Whatever a name holds, the path stays under the state directory.
        assert_eq!(
            remembered_prefix_path(dir, "../../etc"),
            dir.join("host.._.._etc/cluster-prefix")
        );
        assert_eq!(
            remembered_prefix_path(dir, ""),
            dir.join("host/cluster-prefix")
        );
    }
}
