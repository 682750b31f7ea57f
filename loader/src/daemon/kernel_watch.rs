//! Following the kernel's routing table: `ip -4 monitor route` (netlink's route notifications)
//! marks the table changed; the watcher then reads it afresh and applies the difference. A
//! full re-read every 30 s catches anything a notification could miss (a restarted monitor,
//! a dropped message).
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::{debug, warn};

const RESYNC: Duration = Duration::from_secs(30);

/// Starts the monitor on the current runtime; `changed` is set whenever the kernel's IPv4
/// routes may have changed. The monitor runs in this process's network namespace.
pub fn spawn(changed: Arc<AtomicBool>) {
    let resync = changed.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            tick.tick().await;
            resync.store(true, Ordering::Relaxed);
        }
    });
    tokio::spawn(async move {
        loop {
            let child = tokio::process::Command::new("ip")
                .args(["-4", "monitor", "route"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(e) => {
                    warn!(error = %e, "cannot run `ip monitor route`; retrying in 5 s (full re-reads every 30 s go on)");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let stdout = child.stdout.take().expect("piped stdout");
            let mut lines = BufReader::new(stdout).lines();
            // Anything may have changed while no monitor ran.
            changed.store(true, Ordering::Relaxed);
            while let Ok(Some(line)) = lines.next_line().await {
                debug!(%line, "kernel route notification");
                changed.store(true, Ordering::Relaxed);
            }
            warn!("`ip monitor route` ended; restarting it");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
