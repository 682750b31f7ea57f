//! What each subcommand does.
use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use dataplane::{
    config::{self, LineError},
    ebpf::{self, Dataplane, KernelIds, LoadOptions},
    netinfo::{self, format_mac},
    netns,
    pins::{self, PinDir},
    policy::{self, Policy},
    resolve,
    shared::{NEXTHOP_LOCAL, NEXTHOP_REMOTE, NEXTHOP_VXLAN, program_names},
    state::{self, AttachmentRecord, LoaderState, StateError},
    stats,
    workload::{self, WorkloadSpec},
};
use tracing::{info, warn};

use std::sync::Arc;

use crate::{
    cli::{Cli, ClusterArgs, Command, Target},
    cluster::{self, PrefixChoice},
    kernel_watch,
    metrics::{self, LoaderCounters},
    source,
    watch::{self, ClusterFeed, KernelFeed, Watcher},
};
use dataplane::cluster::{Encap, HostRecord};
use dataplane::kernel_routes::KernelRouteFilter;
use std::sync::atomic::AtomicBool;

pub fn run(cli: Cli) -> Result<()> {
    let target = match &cli.command {
        Command::Run { target, .. }
        | Command::Detach { target, .. }
        | Command::Status { target, .. }
        | Command::Routes { target, .. }
        | Command::Stats { target, .. }
        | Command::Cluster { target, .. } => target,
        Command::WireWorkload(args) => &args.target,
    };
    enter(target)?;
    let bpffs = target.bpffs.clone();
    let target_name = target.netns.clone();
    match cli.command {
        Command::Run {
            config,
            metrics,
            max_routes,
            kernel,
            ebpf_log,
            policy,
            cluster,
            ..
        } => run_dataplane(RunSettings {
            config_path: &config,
            policy_path: policy.as_deref(),
            metrics_addr: metrics,
            bpffs: &bpffs,
            options: LoadOptions {
                max_routes,
                ebpf_log_level: ebpf_log as u8,
            },
            kernel_filter: kernel.filter(),
            cluster_args: (!cluster.store.endpoints.is_empty()).then_some(cluster),
            host: host_name(&target_name),
        }),
        Command::Cluster { store, json, .. } => print_cluster(&store, json),
        Command::Detach { timeout, .. } => detach(Duration::from_secs(timeout), &bpffs),
        Command::Status { json, .. } => print_status(json, &bpffs),
        Command::Routes { json, .. } => print_routes(json, &bpffs),
        Command::Stats { json, .. } => print_stats(json, &bpffs),
        Command::WireWorkload(args) => {
            let mtu = match &args.vxlan_underlay {
                Some(underlay) => Some(workload::vxlan_mtu(underlay)?),
                None => args.mtu,
            };
            workload::wire(&WorkloadSpec {
                netns: args.workload_netns,
                host_ifname: args.host_if,
                ifname: args.ifname,
                addr: args.addr,
                mtu,
                xdp_ready: args.xdp,
            })
            .context("wiring the workload")
        }
    }
}

/// Enters the target namespace; must run before any thread is started.
fn enter(target: &Target) -> Result<()> {
    if let Some(name) = &target.netns {
        netns::enter(name)?;
    }
    Ok(())
}

fn render_line_errors(path: &Path, errors: &[LineError]) -> String {
    let lines: Vec<String> = errors
        .iter()
        .map(|e| match e.line {
            0 => format!("{}: {}", path.display(), e.message),
            n => format!("{}:{n}: {}", path.display(), e.message),
        })
        .collect();
    lines.join("\n")
}

/// What `loader run` was asked to do.
struct RunSettings<'a> {
    config_path: &'a Path,
    policy_path: Option<&'a Path>,
    metrics_addr: Option<std::net::SocketAddr>,
    bpffs: &'a Path,
    options: LoadOptions,
    kernel_filter: Option<KernelRouteFilter>,
    cluster_args: Option<ClusterArgs>,
    /// This host's name in its cluster record.
    host: String,
}

fn run_dataplane(settings: RunSettings) -> Result<()> {
    let RunSettings {
        config_path,
        policy_path,
        metrics_addr,
        bpffs,
        options,
        kernel_filter,
        cluster_args,
        host,
    } = settings;
    match state::read_live() {
        Ok(other) => bail!(
            "a loader (pid {}) already runs in this network namespace; stop it first",
            other.pid
        ),
        Err(StateError::NotRunning { .. } | StateError::Stale { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // Everything that can fail on bad input happens before anything is loaded or attached.
    let config = config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let joined = match cluster_args {
        Some(args) => Some(join_cluster(&runtime, &args, &config, host)?),
        None => None,
    };
    let cluster_routes = match &joined {
        Some((_, _, feed)) => {
            let (routes, warnings) = feed.routes(&config);
            for w in warnings {
                warn!("{w}");
            }
            routes
        }
        None => Vec::new(),
    };
    let desired =
        source::desired(&config, kernel_filter.as_ref(), &cluster_routes).map_err(|errors| {
            anyhow::anyhow!(
                "cannot realise the route table:\n{}",
                render_line_errors(config_path, &errors)
            )
        })?;
    let plan = desired.plan;
    let policy = match policy_path {
        Some(path) => policy::load(path)?,
        None => Policy::default(),
    };

    if pins::ensure_bpffs(bpffs)? {
        info!(bpffs = %bpffs.display(), "mounted a BPF filesystem");
    }
    let pins = PinDir::for_current_netns(bpffs)?;
    let adopting = pins.exists();
    let mut dataplane = match load_and_attach(&pins, options, &plan, &policy) {
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
    let pid = std::process::id();
    let state_path = state::write(&LoaderState {
        pid,
        netns: netns::current_id()?,
        config: config_path.display().to_string(),
        pins: pins.root().display().to_string(),
        ids: dataplane.kernel_ids()?,
        attachments: plan
            .attachments
            .iter()
            .map(AttachmentRecord::from)
            .collect(),
    })?;
    info!(
        routes = plan.routes.len(),
        from_kernel = desired.from_kernel,
        from_cluster = desired.from_cluster,
        host_addrs = plan.host_addrs.len(),
        adopted = adopting,
        pins = %pins.root().display(),
        state = %state_path.display(),
        "dataplane running"
    );

    let counters = Arc::new(LoaderCounters::default());
    if let Some(addr) = metrics_addr {
        runtime.block_on(metrics::serve(
            addr,
            dataplane.kernel_ids()?,
            counters.clone(),
        ))?;
        info!(%addr, "metrics at http://{addr}/metrics");
    }
    let kernel = kernel_filter.map(|filter| KernelFeed {
        filter,
        changed: Arc::new(AtomicBool::new(false)),
    });
    if let Some(logger) = dataplane.take_logger() {
        let _guard = runtime.enter();
        spawn_program_log_reader(logger)?;
        info!("logging from the programs");
    }
    if let Some(feed) = &kernel {
        let _guard = runtime.enter();
        kernel_watch::spawn(feed.changed.clone());
        info!(filter = ?feed.filter, "following the kernel's routes");
    }
    let mut watcher = Watcher::new(config_path, config, plan, kernel, counters);
    if let Some(path) = policy_path {
        watcher.follow_policy(path);
    }
    if let Some((store, (record, lease), feed)) = joined {
        let _guard = runtime.enter();
        tokio::spawn(cluster::follow(store, record, lease, feed.view.clone()));
        watcher.follow_cluster(feed);
    }
    watcher.warn_once(desired.warnings);
    let signal = runtime.block_on(async {
        let stop = wait_for_stop_signal();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(watch::POLL);
        loop {
            tokio::select! {
                signal = &mut stop => break signal,
                _ = tick.tick() => watcher.poll(&mut dataplane),
            }
        }
    })?;
    info!(
        signal,
        pins = %pins.root().display(),
        "stopping; the dataplane stays pinned and keeps forwarding (`loader detach` removes it)"
    );
    drop(dataplane);
    state::remove_if_owned(pid)?;
    Ok(())
}

/// A name for this host in its cluster record: the network namespace it was pointed at, or
/// the machine's hostname.
fn host_name(netns: &Option<String>) -> String {
    netns.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    })
}

/// Where a host remembers the prefix it held, to ask for it again after a restart.
fn remembered_prefix_path() -> Result<std::path::PathBuf> {
    Ok(state::path()?.with_file_name("cluster-prefix"))
}

/// Joins the cluster: publishes this host's record and reads the others'.
fn join_cluster(
    runtime: &tokio::runtime::Runtime,
    args: &ClusterArgs,
    config: &config::Config,
    host: String,
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
    let underlay = cluster::underlay_address(&underlay_if)?;
    let template = cluster::template(config, underlay, encap, host);
    let remembered_path = remembered_prefix_path()?;
    let choice = match args.host_prefix {
        Some(prefix) => PrefixChoice::Given(prefix),
        None => PrefixChoice::Allocate {
            cidr: args.cluster_cidr,
            len: args.subnet_len,
            remembered: std::fs::read_to_string(&remembered_path)
                .ok()
                .and_then(|t| t.trim().parse().ok()),
        },
    };
    let store = cluster::Store::new(&args.store, args.etcd_lease_ttl)?;
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
    if let Some(dir) = remembered_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&remembered_path, record.prefix.to_string());
    let view = Arc::new(cluster::View::default());
    info!(prefix = %record.prefix, underlay = %record.underlay, encap = ?record.encap, hosts = records.len(), "joined the cluster");
    *view.records.lock().unwrap_or_else(|e| e.into_inner()) = records;
    let feed = ClusterFeed {
        view,
        own: record.prefix,
        underlay_if,
    };
    Ok((store, (record, lease), feed))
}

fn print_cluster(store: &crate::cli::StoreArgs, json: bool) -> Result<()> {
    if store.endpoints.is_empty() {
        bail!("give --etcd ENDPOINTS");
    }
    let store = cluster::Store::new(store, 10)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (records, revision) = runtime.block_on(async {
        let mut client = store.connect().await?;
        store.records(&mut client).await
    })?;
    if json {
        let list: Vec<&HostRecord> = records.values().collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{} hosts at revision {revision}", records.len());
    println!(
        "{:<18} {:<15} {:<7} {:<17} {:<5} HOST",
        "PREFIX", "UNDERLAY", "ENCAP", "VTEP MAC", "VNI"
    );
    for r in records.values() {
        println!(
            "{:<18} {:<15} {:<7} {:<17} {:<5} {}",
            r.prefix.to_string(),
            r.underlay.to_string(),
            format!("{:?}", r.encap).to_lowercase(),
            r.vtep_mac.map(|m| format_mac(&m)).unwrap_or_default(),
            r.vni.map(|v| v.to_string()).unwrap_or_default(),
            r.host
        );
    }
    Ok(())
}

/// Loads the programs on the pinned maps (adopting those already there), makes the maps hold
/// the plan, then attaches (maps first: no packet ever meets an empty table).
fn load_and_attach(
    pins: &PinDir,
    options: LoadOptions,
    plan: &resolve::Plan,
    policy: &Policy,
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
fn spawn_program_log_reader(logger: ebpf::ProgramLogger) -> Result<()> {
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

fn detach(timeout: Duration, bpffs: &Path) -> Result<()> {
    match state::read() {
        Ok(st) if state::recorded_loader_runs(&st) => {
            info!(pid = st.pid, "stopping the running loader");
            signal(st.pid, libc::SIGTERM);
            let deadline = Instant::now() + timeout;
            while state::process_alive(st.pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if state::process_alive(st.pid) {
                warn!(pid = st.pid, "loader did not exit in time; killing it");
                signal(st.pid, libc::SIGKILL);
            }
            state::remove_if_owned(st.pid)?;
        }
        Ok(st) => {
            info!(
                pid = st.pid,
                "the recorded loader is gone; removing its record"
            );
            state::remove_if_owned(st.pid)?;
        }
        Err(StateError::NotRunning { .. }) => info!("no loader recorded in this namespace"),
        Err(e) => return Err(e.into()),
    }
    let pins = PinDir::for_current_netns(bpffs)?;
    if pins.root().exists() {
        pins.remove()?;
        info!(pins = %pins.root().display(), "unpinned links and maps");
    } else {
        info!(bpffs = %bpffs.display(), "nothing pinned for this namespace");
    }
    // Catches attachments made the older netlink way (by an older loader, or a kernel
    // without bpf_link for XDP), which no pin holds.
    remove_leftover_xdp()?;
    info!("detached");
    Ok(())
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

fn remove_leftover_xdp() -> Result<()> {
    #[derive(serde::Deserialize)]
    struct LinkXdp {
        ifname: String,
        xdp: Option<Xdp>,
    }
    #[derive(serde::Deserialize)]
    struct Xdp {
        prog: Option<Prog>,
    }
    #[derive(serde::Deserialize)]
    struct Prog {
        name: Option<String>,
    }
    let links: Vec<LinkXdp> = serde_json::from_str(&netinfo::ip(&["-j", "-d", "link", "show"])?)?;
    for link in links {
        let name = link.xdp.and_then(|x| x.prog).and_then(|p| p.name);
        if name.as_deref() == Some(program_names::XDP_ROUTE) {
            info!(ifname = %link.ifname, "removing a leftover XDP attachment");
            netinfo::ip(&["link", "set", "dev", &link.ifname, "xdp", "off"])?;
        }
    }
    Ok(())
}

/// The kernel IDs of this host's pinned dataplane, running loader or not.
fn pinned_ids(bpffs: &Path) -> Result<KernelIds> {
    let pins = PinDir::for_current_netns(bpffs)?;
    if !pins.exists() {
        bail!(
            "no dataplane is pinned for this network namespace under {} (is it running, with \
             this --bpffs?)",
            bpffs.display()
        );
    }
    Ok(ebpf::kernel_ids_from_pins(&pins)?)
}

fn ifnames() -> BTreeMap<u32, String> {
    netinfo::links()
        .map(|links| links.into_iter().map(|l| (l.ifindex, l.name)).collect())
        .unwrap_or_default()
}

/// What `loader status` reports.
#[derive(serde::Serialize)]
struct Status {
    pins: String,
    ids: KernelIds,
    links: Vec<String>,
    /// The running loader's record; None when the dataplane runs on its pins alone.
    loader: Option<LoaderState>,
}

fn print_status(json: bool, bpffs: &Path) -> Result<()> {
    let pins = PinDir::for_current_netns(bpffs)?;
    let ids = pinned_ids(bpffs)?;
    let links = pins
        .links()?
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let loader = state::read_live().ok();
    let st = Status {
        pins: pins.root().display().to_string(),
        ids,
        links,
        loader,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!("dataplane pinned at {}", st.pins);
    match &st.loader {
        Some(l) => println!("loader pid {} following {}", l.pid, l.config),
        None => {
            println!("no loader running: forwarding on the pinned state, not following any table")
        }
    }
    for link in &st.links {
        println!("  link {link}");
    }
    for (name, id) in &st.ids.programs {
        println!("  program {name} id {id}");
    }
    for (name, id) in &st.ids.maps {
        println!("  map {name} id {id}");
    }
    Ok(())
}

/// One route as `loader routes` shows it.
#[derive(serde::Serialize)]
struct RouteRow {
    prefix: String,
    kind: &'static str,
    dev: String,
    ifindex: u32,
    /// The next hop's MAC (routed), or the remote VTEP's MAC (vxlan: the inner frame's).
    dst_mac: String,
    src_mac: String,
    /// VXLAN only: the remote VTEP's underlay address, the VNI, the UDP port.
    #[serde(skip_serializing_if = "Option::is_none")]
    vtep: Option<std::net::Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vni: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

fn print_routes(json: bool, bpffs: &Path) -> Result<()> {
    let routes = stats::routes(&pinned_ids(bpffs)?)?;
    let names = ifnames();
    let rows: Vec<RouteRow> = routes
        .iter()
        .map(|(prefix, nh)| {
            let vxlan = nh.kind == NEXTHOP_VXLAN;
            RouteRow {
                prefix: prefix.to_string(),
                kind: match nh.kind {
                    NEXTHOP_LOCAL => "local",
                    NEXTHOP_REMOTE => "remote",
                    NEXTHOP_VXLAN => "vxlan",
                    _ => "unknown",
                },
                dev: names
                    .get(&nh.ifindex)
                    .cloned()
                    .unwrap_or_else(|| nh.ifindex.to_string()),
                ifindex: nh.ifindex,
                dst_mac: format_mac(&nh.dst_mac),
                src_mac: format_mac(&nh.src_mac),
                vtep: vxlan.then(|| std::net::Ipv4Addr::from(nh.outer_dst_ip)),
                vni: vxlan.then(|| u32::from_be_bytes(nh.vni_word) >> 8),
                port: vxlan.then(|| u16::from_be_bytes(nh.udp_dport)),
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<7} {:<15} {:<17} {:<17} VXLAN",
        "PREFIX", "KIND", "DEV", "DST MAC", "SRC MAC"
    );
    for r in &rows {
        let tunnel = match (r.vtep, r.vni, r.port) {
            (Some(vtep), Some(vni), Some(port)) => format!("vtep {vtep} vni {vni} port {port}"),
            _ => String::new(),
        };
        println!(
            "{:<20} {:<7} {:<15} {:<17} {:<17} {tunnel}",
            r.prefix, r.kind, r.dev, r.dst_mac, r.src_mac
        );
    }
    Ok(())
}

fn print_stats(json: bool, bpffs: &Path) -> Result<()> {
    let stats = stats::read(&pinned_ids(bpffs)?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    let names = ifnames();
    for (hook, counters) in &stats.hooks {
        println!("{hook}:");
        for (name, value) in counters {
            println!("  {name:<22} {value}");
        }
    }
    if !stats.policy_denied.is_empty() {
        println!("denied by policy:");
        for (endpoint, value) in &stats.policy_denied {
            println!("  {endpoint:<22} {value}");
        }
    }
    println!("forwarded by egress:");
    for (ifindex, value) in &stats.forwarded_by_egress {
        let name = names
            .get(ifindex)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {ifindex}"));
        println!("  {name:<22} {value}");
    }
    Ok(())
}
