//! What each subcommand does.
use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use dataplane::{
    config::{self, LineError},
    ebpf::{Dataplane, KernelIds},
    netinfo::{self, format_mac},
    netns,
    resolve::{self, LiveSystem},
    shared::{NEXTHOP_LOCAL, NEXTHOP_REMOTE, NEXTHOP_VXLAN, program_names},
    state::{self, AttachmentRecord, LoaderState, StateError},
    stats,
    workload::{self, WorkloadSpec},
};
use tracing::{info, warn};

use std::sync::Arc;

use crate::{
    cli::{Cli, Command, Target},
    metrics::{self, LoaderCounters},
    watch::{self, Watcher},
};

pub fn run(cli: Cli) -> Result<()> {
    let target = match &cli.command {
        Command::Run { target, .. }
        | Command::Detach { target, .. }
        | Command::Status { target, .. }
        | Command::Routes { target, .. }
        | Command::Stats { target, .. } => target,
        Command::WireWorkload(args) => &args.target,
    };
    enter(target)?;
    match cli.command {
        Command::Run {
            config, metrics, ..
        } => run_dataplane(&config, metrics),
        Command::Detach { timeout, .. } => detach(Duration::from_secs(timeout)),
        Command::Status { json, .. } => print_status(json),
        Command::Routes { json, .. } => print_routes(json),
        Command::Stats { json, .. } => print_stats(json),
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

fn run_dataplane(config_path: &Path, metrics_addr: Option<std::net::SocketAddr>) -> Result<()> {
    match state::read_live() {
        Ok(other) => bail!(
            "a loader (pid {}) already runs in this network namespace; `loader detach` stops it",
            other.pid
        ),
        Err(StateError::NotRunning { .. } | StateError::Stale { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // Everything that can fail on bad input happens before anything is loaded or attached.
    let config = config::load(config_path)?;
    let plan = resolve::resolve(&config, &LiveSystem).map_err(|errors| {
        anyhow::anyhow!(
            "cannot realise the route table:\n{}",
            render_line_errors(config_path, &errors)
        )
    })?;

    let mut dataplane = Dataplane::load()?;
    // Maps first, then attach: no packet ever meets an empty table.
    let report = dataplane.apply(&plan)?;
    dataplane.attach(&plan.attachments)?;
    for a in &plan.attachments {
        info!(ifname = %a.ifname, ifindex = a.ifindex, attach = %a.attach, role = ?a.role, "attached");
    }
    let pid = std::process::id();
    let state_path = state::write(&LoaderState {
        pid,
        netns: netns::current_id()?,
        config: config_path.display().to_string(),
        ids: dataplane.kernel_ids()?,
        attachments: plan
            .attachments
            .iter()
            .map(AttachmentRecord::from)
            .collect(),
    })?;
    info!(
        routes = report.routes_set,
        ports = report.ports_added,
        host_addrs = plan.host_addrs.len(),
        state = %state_path.display(),
        "dataplane running"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let counters = Arc::new(LoaderCounters::default());
    if let Some(addr) = metrics_addr {
        runtime.block_on(metrics::serve(
            addr,
            dataplane.kernel_ids()?,
            counters.clone(),
        ))?;
        info!(%addr, "metrics at http://{addr}/metrics");
    }
    let mut watcher = Watcher::new(config_path, plan, counters);
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
    info!(signal, "stopping: detaching everything");
    drop(dataplane);
    state::remove_if_owned(pid)?;
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

fn detach(timeout: Duration) -> Result<()> {
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
    // Our links are fd-based and die with their process; this catches attachments made the
    // older netlink way (by an older loader, or a kernel without bpf_link for XDP).
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

fn live_ids() -> Result<KernelIds> {
    Ok(state::read_live()?.ids)
}

fn ifnames() -> BTreeMap<u32, String> {
    netinfo::links()
        .map(|links| links.into_iter().map(|l| (l.ifindex, l.name)).collect())
        .unwrap_or_default()
}

fn print_status(json: bool) -> Result<()> {
    let st = state::read_live()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(());
    }
    println!(
        "loader pid {} in {}, route table {}",
        st.pid, st.netns, st.config
    );
    for a in &st.attachments {
        println!(
            "  attached {:<6} to {} (ifindex {})",
            a.attach, a.ifname, a.ifindex
        );
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

fn print_routes(json: bool) -> Result<()> {
    let routes = stats::routes(&live_ids()?)?;
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

fn print_stats(json: bool) -> Result<()> {
    let stats = stats::read(&live_ids()?)?;
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
