//! The running loader's record for its network namespace: who it is and which kernel objects
//! are its. Other processes (`loader stats`, `loader routes`, `loader detach`, the bench) find
//! the live dataplane of a host through it.
//!
//! Kept under /run (shared by `ip netns exec`, unlike /sys), one directory per network
//! namespace, so hosts that are namespaces of one machine never share state.
use std::path::PathBuf;

use dataplane::{
    kernel::inspect::KernelIds,
    plan::Attachment,
    system::{STATE_ROOT, netns},
};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LoaderState {
    pub pid: u32,
    /// When that process started (clock ticks after boot, /proc/PID/stat): with the pid, who
    /// the loader is. A recycled pid belongs to a process that started later. None in records
    /// of loaders from before it was kept.
    #[serde(default)]
    pub start_time: Option<u64>,
    pub netns: String,
    pub config: String,
    /// The pin directory of the dataplane the loader runs.
    pub pins: String,
    pub ids: KernelIds,
    pub attachments: Vec<AttachmentRecord>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AttachmentRecord {
    pub ifname: String,
    pub ifindex: u32,
    pub attach: String,
}

impl From<&Attachment> for AttachmentRecord {
    fn from(a: &Attachment) -> Self {
        Self {
            ifname: a.ifname.clone(),
            ifindex: a.ifindex,
            attach: a.attach.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a loader state file: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("no loader is running in this network namespace ({path} does not exist)")]
    NotRunning { path: String },
    #[error("the loader recorded in {path} (pid {pid}) is gone")]
    Stale { path: String, pid: u32 },
}

/// The state file of the current network namespace.
pub fn path() -> Result<PathBuf, StateError> {
    Ok(PathBuf::from(STATE_ROOT)
        .join(netns::current_id()?)
        .join("loader.json"))
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes the record atomically (write then rename).
pub fn write(state: &LoaderState) -> Result<PathBuf, StateError> {
    let path = path()?;
    let dir = path.parent().expect("state path has a parent");
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).expect("state serializes");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// Reads the record of the loader running in the current network namespace; an error if there
/// is none or its process is gone.
pub fn read_live() -> Result<LoaderState, StateError> {
    let state = read()?;
    if !recorded_loader_runs(&state) {
        return Err(StateError::Stale {
            path: path()?.display().to_string(),
            pid: state.pid,
        });
    }
    Ok(state)
}

/// Reads the record whether or not its process still runs.
pub fn read() -> Result<LoaderState, StateError> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::NotRunning {
                path: path.display().to_string(),
            });
        }
        Err(source) => {
            return Err(StateError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    serde_json::from_str(&text).map_err(|source| StateError::Parse {
        path: path.display().to_string(),
        source,
    })
}

/// Removes the record if it is `pid`'s (a newer loader's record is left alone).
pub fn remove_if_owned(pid: u32) -> Result<(), StateError> {
    let path = path()?;
    match read() {
        Ok(state) if state.pid == pid => {
            std::fs::remove_file(&path).map_err(io(&path))?;
            // The namespace's directory goes too once empty (it is per namespace, and
            // namespaces come and go).
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// True if the recorded loader still runs: its pid is a live process in this network
/// namespace that started when the recorded one did (a recycled pid of some other process
/// does not count, and is never signalled).
pub fn recorded_loader_runs(state: &LoaderState) -> bool {
    let same_process = match state.start_time {
        Some(started) => process_start_time(state.pid) == Some(started),
        None => true,
    };
    process_alive(state.pid) && process_in_current_netns(state.pid) && same_process
}

/// When process `pid` started, in clock ticks after boot (field 22 of /proc/PID/stat).
pub fn process_start_time(pid: u32) -> Option<u64> {
    start_time_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a /proc/PID/stat line.
fn start_time_in(stat: &str) -> Option<u64> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so count fields after
    // the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// True if `pid`'s network namespace is the calling thread's.
fn process_in_current_netns(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = |path: String| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    match (
        ino(format!("/proc/{pid}/ns/net")),
        ino("/proc/thread-self/ns/net".into()),
    ) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

/// True if `pid` runs (a zombie, exited but not yet reaped by its parent, does not count).
pub fn process_alive(pid: u32) -> bool {
    // Signal 0 checks existence and permission without signalling.
    // SAFETY: kill(2) with signal 0 sends nothing and touches no memory of ours.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return false;
    }
    // /proc/PID/stat is `pid (comm) STATE ...`; comm may hold spaces, so read after the last ')'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_some_and(|r| !r.starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_field_22_whatever_the_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1234567 100 18446744073709551615";
        assert_eq!(start_time_in(stat), Some(987654));
        assert_eq!(start_time_in("4242 (short) S 1"), None);
        assert!(process_start_time(std::process::id()).is_some());
        assert_eq!(process_start_time(u32::MAX), None);
    }
}
