//! Starting the daemon: every input read and checked, and the maps planned from them, before
//! anything is loaded ([`gather`]); once the dataplane runs, one follower per source started
//! from what the maps hold ([`follow_sources`]).
use std::{path::Path, sync::Arc};

use anyhow::Result;
use dataplane::{
    kernel::LoadOptions,
    model::{
        Ipv4Prefix,
        cluster::HostRecord,
        load_file_as_read,
        policy::{self, Policy},
        render_line_errors,
        route_table::{self as config, Attach, Config},
        services::{self, RecordBounds, Services},
    },
    plan::{
        kernel_routes::KernelRouteFilter,
        resolve::LiveSystem,
        sources::Desired,
        unanswered::{RETRY_UNANSWERED, RememberUnanswered},
    },
    system::workloads::HostDir,
};

use super::{
    cluster::{self, Store},
    cluster_services::{self, ServiceRecords},
    follow::{
        Refusals,
        feeds::{KernelFeed, RouteFeeds, WorkloadFeed},
        policy::PolicyFollower,
        routes::{RouteFollower, RouteStart},
        services::{ServicesFollower, StoreServices},
    },
    join::join_cluster,
    kernel_watch::KernelEvents,
    watch::Watcher,
};
use crate::{cli::ClusterArgs, metrics::LoaderCounters, state::LoaderState};

/// What `loader run` was asked to do.
pub struct RunSettings<'a> {
    pub config_path: &'a Path,
    pub policy_path: Option<&'a Path>,
    pub services_path: Option<&'a Path>,
    /// Where every service's virtual address must lie.
    pub service_range: Ipv4Prefix,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub bpffs: &'a Path,
    pub options: LoadOptions,
    pub kernel_filter: Option<KernelRouteFilter>,
    pub cluster_args: Option<ClusterArgs>,
    /// How the CNI plugin's workload interfaces are attached.
    pub workload_attach: Attach,
    /// Masquerade workload traffic from this range to destinations outside it.
    pub nat_outgoing: Option<Ipv4Prefix>,
    /// This host's name in its cluster record.
    pub host: String,
}

/// Everything read before anything is loaded: every input that can be bad is checked here.
pub struct Inputs {
    pub config: Config,
    pub policy: Policy,
    pub services: Services,
    /// The bytes each followed file held when it was read here: a change made since is one
    /// its follower takes.
    pub read: ReadFiles,
    pub feeds: RouteFeeds,
    /// What the maps should hold at start.
    pub desired: Desired,
    /// In cluster mode: the store, this host's record and lease, and the cluster's range.
    pub cluster: Option<(Store, (HostRecord, i64), Ipv4Prefix)>,
    pub host_dir: HostDir,
    /// The kernel's notifications, shared with the feeds that they mark changed.
    pub events: KernelEvents,
    /// The host, with the neighbours that did not answer at start remembered.
    pub system: RememberUnanswered<LiveSystem>,
}

/// Reads every input (the route table, the cluster's records after joining it, the CNI
/// plugin's workloads, the kernel's routes, the policy, the services) and plans the maps from
/// them; an input that cannot be used is an error here, before anything is loaded or attached.
/// What the start read of each followed file.
pub struct ReadFiles {
    pub table: Vec<u8>,
    pub policy: Option<Vec<u8>>,
    pub services: Option<Vec<u8>>,
}

pub fn gather(
    settings: &RunSettings,
    runtime: &tokio::runtime::Runtime,
    counters: &Arc<LoaderCounters>,
) -> Result<Inputs> {
    let (config, table_read) = load_file_as_read(settings.config_path, config::parse)?;
    if let Some(args) = &settings.cluster_args {
        let (services, cluster) = (settings.service_range, args.cluster_cidr);
        anyhow::ensure!(
            !services.covers(&cluster) && !cluster.covers(&services),
            "--service-cidr {services} overlaps --cluster-cidr {cluster}: a service could take over a workload's address"
        );
    }
    let host_dir = HostDir::current()?;
    let taken_at = host_dir.records_changed_at();
    let (records, problems) = host_dir.read_records();
    let (cluster, cluster_feed) = match &settings.cluster_args {
        Some(args) => {
            let local: Vec<std::net::Ipv4Addr> = records.iter().map(|r| r.addr).collect();
            let (store, record, feed) = join_cluster(
                runtime,
                args,
                &config,
                settings.host.clone(),
                counters,
                &local,
            )?;
            (Some((store, record, args.cluster_cidr)), Some(feed))
        }
        None => (None, None),
    };
    let events = KernelEvents::default();
    let feeds = RouteFeeds {
        workloads: WorkloadFeed {
            dir: host_dir.clone(),
            records,
            problems,
            taken_at,
            attach: settings.workload_attach,
        },
        kernel: settings.kernel_filter.clone().map(|filter| KernelFeed {
            filter,
            changed: events.routes.clone(),
        }),
        cluster: cluster_feed,
    };
    // The host as the route follower will ask it, neighbours that stay silent remembered from
    // this first plan on (and watched for their answer).
    let system = RememberUnanswered::new(LiveSystem, RETRY_UNANSWERED);
    let desired = system.pass(|system| feeds.desired(&config, system));
    let desired = desired.map_err(|errors| {
        anyhow::anyhow!(
            "cannot realise the route table:\n{}",
            render_line_errors(&settings.config_path.display().to_string(), &errors)
        )
    })?;
    Refusals {
        counters: counters.clone(),
    }
    .left_out(&desired);
    let (policy, policy_read) = match settings.policy_path {
        Some(path) => {
            let (policy, read) = load_file_as_read(path, policy::parse)?;
            (policy, Some(read))
        }
        None => (Policy::default(), None),
    };
    let (services, services_read) = match settings.services_path {
        Some(path) => {
            let (services, read) = load_file_as_read(path, services::parse)?;
            services::in_range(&services, settings.service_range).map_err(|errors| {
                anyhow::anyhow!(
                    "services not applied:\n{}",
                    render_line_errors(&path.display().to_string(), &errors)
                )
            })?;
            (services, Some(read))
        }
        None => (Services::default(), None),
    };
    Ok(Inputs {
        config,
        policy,
        services,
        read: ReadFiles {
            table: table_read,
            policy: policy_read,
            services: services_read,
        },
        feeds,
        desired,
        cluster,
        host_dir,
        events,
        system,
    })
}

/// The followers of every source, started from what the maps hold now; in cluster mode, the
/// tasks that keep this host's record and follow the store.
pub fn follow_sources(
    settings: &RunSettings,
    runtime: &tokio::runtime::Runtime,
    inputs: Inputs,
    loader_state: LoaderState,
    counters: &Arc<LoaderCounters>,
) -> Watcher {
    let Inputs {
        config,
        services,
        read,
        feeds,
        desired,
        cluster,
        events,
        system,
        ..
    } = inputs;
    let refusals = Refusals {
        counters: counters.clone(),
    };
    let store_services = cluster.map(|(store, (record, lease), cluster_cidr)| {
        let _guard = runtime.enter();
        let records = Arc::new(ServiceRecords::default());
        tokio::spawn(cluster_services::follow(store.clone(), records.clone()));
        let view = feeds
            .cluster
            .as_ref()
            .expect("cluster mode has a cluster feed")
            .view
            .clone();
        tokio::spawn(cluster::follow(
            store.clone(),
            record,
            lease,
            view,
            counters.clone(),
        ));
        StoreServices {
            records,
            store_prefix: store.prefix.clone(),
            bounds: RecordBounds {
                cluster: cluster_cidr,
                services: settings.service_range,
            },
        }
    });
    let mut routes = RouteFollower::new(RouteStart {
        path: settings.config_path,
        read: read.table,
        config,
        applied: desired.plan.clone(),
        feeds,
        system_changed: events.system.clone(),
        watched_neighbours: events.watched_neighbours.clone(),
        state: loader_state,
        refusals: refusals.clone(),
        system,
    });
    routes.started_with(&desired);
    let mut watcher = Watcher::new(routes);
    if let Some((path, read)) = settings.policy_path.zip(read.policy) {
        watcher.follow(PolicyFollower::new(path, read, refusals.clone()));
    }
    let services_file = settings
        .services_path
        .zip(read.services)
        .map(|(path, read)| (path, services, read));
    if services_file.is_some() || store_services.is_some() {
        watcher.follow(ServicesFollower::new(
            services_file,
            store_services,
            settings.service_range,
            refusals,
        ));
    }
    watcher
}
