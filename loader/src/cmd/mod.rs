//! The subcommands, one file each; this file picks one and enters the host it targets.
mod cluster;
mod detach;
mod routes;
mod run;
mod services;
mod stats;
mod status;
mod wire;

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Result, bail};
use dataplane::{
    kernel::{
        LoadOptions,
        inspect::{KernelIds, kernel_ids_from_pins},
        pins::PinDir,
    },
    system::{netinfo, netns},
};

use crate::cli::{Cli, Command, Target};
use run::RunSettings;

/// Runs the subcommand `cli` names, in the host it targets.
pub fn dispatch(cli: Cli) -> Result<()> {
    let target = match &cli.command {
        Command::Run { target, .. }
        | Command::Detach { target, .. }
        | Command::Status { target, .. }
        | Command::Routes { target, .. }
        | Command::Services { target, .. }
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
            services,
            service_cidr,
            max_services,
            max_service_backends,
            max_service_flows,
            cluster,
            workload_attach,
            nat_outgoing,
            ..
        } => run::run(RunSettings {
            config_path: &config,
            policy_path: policy.as_deref(),
            services_path: services.as_deref(),
            service_range: service_cidr,
            metrics_addr: metrics,
            bpffs: &bpffs,
            options: LoadOptions {
                max_routes,
                max_services,
                max_service_backends,
                max_service_flows,
                ebpf_log_level: ebpf_log as u8,
            },
            kernel_filter: kernel.filter(),
            cluster_args: (!cluster.store.endpoints.is_empty()).then_some(cluster),
            workload_attach,
            nat_outgoing,
            host: run::host_name(&target_name),
        }),
        Command::Cluster { store, json, .. } => cluster::print(&store, json),
        Command::Detach { timeout, .. } => detach::detach(Duration::from_secs(timeout), &bpffs),
        Command::Status { json, .. } => status::print(json, &bpffs),
        Command::Routes { json, .. } => routes::print(json, &bpffs),
        Command::Services { json, .. } => services::print(json, &bpffs),
        Command::Stats { json, .. } => stats::print(json, &bpffs),
        Command::WireWorkload(args) => wire::wire(args),
    }
}

/// Enters the target namespace; must run before any thread is started.
fn enter(target: &Target) -> Result<()> {
    if let Some(name) = &target.netns {
        netns::enter(name)?;
    }
    Ok(())
}

/// The kernel IDs of this host's pinned dataplane, running loader or not.
pub(crate) fn pinned_ids(bpffs: &Path) -> Result<KernelIds> {
    let pins = PinDir::for_current_netns(bpffs)?;
    if !pins.exists() {
        bail!(
            "no dataplane is pinned for this network namespace under {} (is it running, with \
             this --bpffs?)",
            bpffs.display()
        );
    }
    Ok(kernel_ids_from_pins(&pins)?)
}

pub(crate) fn ifnames() -> BTreeMap<u32, String> {
    netinfo::links()
        .map(|links| links.into_iter().map(|l| (l.ifindex, l.name)).collect())
        .unwrap_or_default()
}
