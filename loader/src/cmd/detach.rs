//! `loader detach`: stop the host's loader and remove its dataplane.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;
use dataplane::{common::maps::program_names, kernel::pins::PinDir, system::netinfo};
use tracing::{info, warn};

use crate::state::{self, StateError};

pub fn detach(timeout: Duration, bpffs: &Path) -> Result<()> {
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
    // The masquerade rule and what the loader published for the plugin are the loader's too;
    // the workload records stay (they are the plugin's, and a loader started again takes
    // them).
    dataplane::system::nat::remove()?;
    dataplane::system::workloads::HostDir::current()?.remove_loaders_files()?;
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
        // `xdp_route` was the single XDP program of loaders before the per-role ones.
        if matches!(
            name.as_deref(),
            Some(program_names::XDP_WORKLOAD | program_names::XDP_UNDERLAY | "xdp_route")
        ) {
            info!(ifname = %link.ifname, "removing a leftover XDP attachment");
            netinfo::ip(&["link", "set", "dev", &link.ifname, "xdp", "off"])?;
        }
    }
    Ok(())
}
