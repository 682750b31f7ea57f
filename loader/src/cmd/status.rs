//! `loader status`: where the host's dataplane is pinned, its links and IDs, its loader.
use std::path::Path;

use anyhow::Result;
use dataplane::kernel::{inspect::KernelIds, pins::PinDir};

use super::pinned_ids;
use crate::state::{self, LoaderState};

/// What `loader status` reports.
#[derive(serde::Serialize)]
struct Status {
    pins: String,
    ids: KernelIds,
    links: Vec<String>,
    /// The running loader's record; None when the dataplane runs on its pins alone.
    loader: Option<LoaderState>,
}

pub fn print(json: bool, bpffs: &Path) -> Result<()> {
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
