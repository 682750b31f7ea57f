//! `loader run`: load and attach the dataplane on its pins, fill its maps from the route
//! table (and the kernel's routes, the cluster, the policy), then follow them until stopped.
use std::sync::Arc;

use anyhow::{Result, bail};
use dataplane::{
    kernel::{Dataplane, LoadOptions, pins::PinDir, program_log::ProgramLogger},
    model::{policy::Policy, route_table::Config, services::Services},
    plan::Plan,
    system::{
        bpffs, nat, netns,
        workloads::{HostFacts, Request},
    },
};
use tracing::{info, warn};

pub use crate::daemon::start::RunSettings;
use crate::{
    daemon::{
        kernel_watch, plugin_socket,
        start::{follow_sources, gather},
        watch::{self, Watcher},
    },
    metrics::{self, LoaderCounters},
    state::{self, AttachmentRecord, LoaderState, StateError},
};

pub fn run(settings: RunSettings) -> Result<()> {
    refuse_if_running()?;
    // Worker threads for the tasks (the cluster session and its lease keepalives, the metrics
    // endpoint, the route monitor, the programs' log); the watcher's polling, which may wait
    // on ARP or on `ip`, runs on this thread and never holds them up.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let counters = Arc::new(LoaderCounters::default());
    let inputs = gather(&settings, &runtime, &counters)?;
    let bpffs = settings.bpffs;
    if bpffs::ensure_bpffs(bpffs)? {
        info!(bpffs = %bpffs.display(), "mounted a BPF filesystem");
    }
    let pins = PinDir::for_current_netns(bpffs)?;
    let adopting = pins.exists();
    let plan = &inputs.desired.plan;
    let mut dataplane = match load_and_attach(
        &pins,
        settings.options,
        plan,
        &inputs.policy,
        &inputs.services,
    ) {
        Ok(dataplane) => dataplane,
        Err(e) => {
            // A first start that failed leaves nothing behind; a failed adoption leaves the
            // pinned dataplane forwarding as it was.
            if !adopting {
                let _ = pins.remove();
            }
            return Err(e);
        }
    };
    let loader_state = record_loader(&settings, &pins, &dataplane, plan)?;
    let state_path = state::path()?;
    match settings.nat_outgoing {
        Some(range) => {
            nat::install(range)?;
            info!(%range, "masquerading workload traffic that leaves the range");
        }
        None => nat::remove()?,
    }
    inputs.host_dir.write_facts(&HostFacts {
        subnet: inputs
            .feeds
            .cluster
            .as_ref()
            .map(|feed| feed.own.to_string()),
        mtu: workload_mtu(&inputs.config)?,
    })?;
    info!(
        routes = plan.routes.len(),
        workloads = inputs.desired.workloads,
        from_kernel = inputs.desired.from_kernel,
        from_cluster = inputs.desired.from_cluster,
        host_addrs = plan.host_addrs.len(),
        adopted = adopting,
        pins = %pins.root().display(),
        state = %state_path.display(),
        "dataplane running"
    );
    if let Some(addr) = settings.metrics_addr {
        runtime.block_on(metrics::serve(
            addr,
            dataplane.kernel_ids()?,
            counters.clone(),
        ))?;
        info!(%addr, "metrics at http://{addr}/metrics");
    }
    if let Some(logger) = dataplane.take_logger() {
        let _guard = runtime.enter();
        spawn_program_log_reader(logger)?;
        info!("logging from the programs");
    }
    let host_dir = inputs.host_dir.clone();
    let mut requests = {
        let _guard = runtime.enter();
        kernel_watch::spawn(inputs.events.clone())
            .map_err(|e| anyhow::anyhow!("subscribing to the kernel's notifications: {e}"))?;
        plugin_socket::serve(&host_dir.socket())
            .map_err(|e| anyhow::anyhow!("listening at {}: {e}", host_dir.socket().display()))?
    };
    if let Some(feed) = &inputs.feeds.kernel {
        info!(filter = ?feed.filter, "following the kernel's routes");
    }
    info!(records = %host_dir.records().display(), socket = %host_dir.socket().display(), "taking workloads from the CNI plugin");
    let mut watcher = follow_sources(&settings, &runtime, inputs, loader_state, &counters);
    let signal = runtime.block_on(async {
        let stop = wait_for_stop_signal();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(watch::POLL);
        loop {
            tokio::select! {
                signal = &mut stop => break signal,
                _ = tick.tick() => watcher.poll(&mut dataplane),
                Some(first) = requests.recv() => answer(&mut watcher, &mut dataplane, first, &mut requests),
            }
        }
    })?;
    info!(
        signal,
        pins = %pins.root().display(),
        "stopping; the dataplane stays pinned and keeps forwarding (`loader detach` removes it)"
    );
    drop(dataplane);
    let _ = std::fs::remove_file(host_dir.socket());
    state::remove_if_owned(std::process::id())?;
    Ok(())
}

/// One loader per network namespace.
fn refuse_if_running() -> Result<()> {
    match state::read_live() {
        Ok(other) => bail!(
            "a loader (pid {}) already runs in this network namespace; stop it first",
            other.pid
        ),
        Err(StateError::NotRunning { .. } | StateError::Stale { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the loader's record: who runs the dataplane of this namespace, and its objects.
fn record_loader(
    settings: &RunSettings,
    pins: &PinDir,
    dataplane: &Dataplane,
    plan: &Plan,
) -> Result<LoaderState> {
    let pid = std::process::id();
    let loader_state = LoaderState {
        pid,
        start_time: state::process_start_time(pid),
        netns: netns::current_id()?,
        config: settings.config_path.display().to_string(),
        pins: pins.root().display().to_string(),
        ids: dataplane.kernel_ids()?,
        attachments: plan
            .attachments
            .iter()
            .map(AttachmentRecord::from)
            .collect(),
    };
    state::write(&loader_state)?;
    Ok(loader_state)
}

/// Answers the plugin's requests: every sync waiting now is served by one reconciliation.
fn answer(
    watcher: &mut Watcher,
    dataplane: &mut Dataplane,
    first: plugin_socket::Pending,
    requests: &mut tokio::sync::mpsc::Receiver<plugin_socket::Pending>,
) {
    let mut waiting = vec![first];
    while let Ok(more) = requests.try_recv() {
        waiting.push(more);
    }
    let mut synced = None;
    for (request, reply) in waiting {
        let answer = match request {
            Request::Sync => synced
                .get_or_insert_with(|| watcher.sync(dataplane))
                .clone(),
            Request::Check { host_ifname, addr } => watcher.check(&host_ifname, addr),
        };
        let _ = reply.send(answer);
    }
}

/// The MTU the plugin gives workloads: the underlay's less the VXLAN overhead when the host
/// encapsulates; None (the runtime's default) otherwise.
fn workload_mtu(config: &Config) -> Result<Option<u32>> {
    match &config.vxlan {
        Some(vxlan) => Ok(Some(dataplane::system::workload::vxlan_mtu(&vxlan.dev)?)),
        None => Ok(None),
    }
}

/// A name for this host in its cluster record: the network namespace it was pointed at, or
/// the machine's hostname.
pub fn host_name(netns: &Option<String>) -> String {
    netns.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    })
}

/// Loads the programs on the pinned maps (adopting those already there), makes the maps hold
/// the plan, then attaches (maps first: no packet ever meets an empty table).
fn load_and_attach(
    pins: &PinDir,
    options: LoadOptions,
    plan: &Plan,
    policy: &Policy,
    services: &Services,
) -> Result<Dataplane> {
    let mut dataplane = Dataplane::load_pinned(pins, options)?;
    let report = dataplane.apply(plan)?;
    info!(
        set = report.routes_set,
        removed = report.routes_removed,
        ports_added = report.ports_added,
        ports_removed = report.ports_removed,
        "maps hold the route table"
    );
    let report = dataplane.apply_policy(policy)?;
    info!(
        workloads = policy.workloads.len(),
        rules = policy.rule_count(),
        rulesets = report.rulesets,
        peer_entries = report.peer_entries,
        verdict_entries = report.verdict_entries,
        "maps hold the policy"
    );
    let report = dataplane.apply_services(services)?;
    info!(
        services = report.services,
        backends = report.backends,
        "maps hold the services"
    );
    let attached = dataplane.attach(&plan.attachments)?;
    for a in &plan.attachments {
        let how = if attached.adopted.contains(&a.ifname) {
            "adopted pinned link, program swapped in"
        } else {
            "attached"
        };
        info!(ifname = %a.ifname, ifindex = a.ifindex, attach = %a.attach, role = ?a.role, "{how}");
    }
    for path in &attached.released {
        info!(link = %path.display(), "released a pinned link the table no longer names");
    }
    Ok(dataplane)
}

/// Hands the programs' log records to the loader's log as they arrive.
fn spawn_program_log_reader(logger: ProgramLogger) -> Result<()> {
    // SAFETY: the logger owns its ring buffer's fd and keeps it open for as long as the
    // AsyncFd holds the logger.
    let mut fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    }
    .map_err(|e| anyhow::anyhow!("watching the programs' log: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut ready) = fd.readable_mut().await else {
                warn!("the programs' log stopped");
                return;
            };
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
    Ok(())
}

async fn wait_for_stop_signal() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
