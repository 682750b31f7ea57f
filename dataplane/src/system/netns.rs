//! Network namespaces: entering a named one, and naming the current one.
use std::{fs::File, os::fd::AsRawFd, os::unix::fs::MetadataExt, path::PathBuf};

/// Where `ip netns add NAME` puts its handles.
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace `{name}` not found at {path}: {source}")]
    Open {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace `{name}`: {source}")]
    Enter {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot read the current network namespace: {0}")]
    Current(std::io::Error),
}

/// Moves the calling thread into the named network namespace (as `ip netns exec` does, without
/// its private mount namespace). Threads and processes started afterwards by this thread
/// inherit it, so call it before starting any runtime threads.
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let path = PathBuf::from(NETNS_DIR).join(name);
    let file = File::open(&path).map_err(|source| NetnsError::Open {
        name: name.into(),
        path: path.display().to_string(),
        source,
    })?;
    // SAFETY: setns on a valid fd we own; no memory is shared with the kernel.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetnsError::Enter {
            name: name.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A stable name for the current network namespace, `net-<inode>`: the same for every
/// process in it however it got there (`ip netns exec`, `--netns`), and distinct between
/// namespaces that exist at the same time.
pub fn current_id() -> Result<String, NetnsError> {
    let meta = std::fs::metadata("/proc/thread-self/ns/net").map_err(NetnsError::Current)?;
    Ok(format!("net-{}", meta.ino()))
}

/// The kernel's cookie for the calling thread's network namespace (SO_NETNS_COOKIE): unique
/// for the life of the machine, unlike the namespace's inode number.
pub fn netns_cookie() -> std::io::Result<u64> {
    // SAFETY: socket/getsockopt/close on a descriptor this function owns; the option writes
    // at most `len` bytes into `cookie`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(err);
        }
        Ok(cookie)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_stable_within_a_namespace() {
        assert_eq!(netns_cookie().unwrap(), netns_cookie().unwrap());
    }
}
