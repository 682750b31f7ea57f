//! The BPF filesystem the dataplane is pinned in: found, or mounted (mode 0700) where the
//! loader is asked to pin.
//!
//! `ip netns exec` runs its command in a private mount namespace with a fresh /sys: a bpffs
//! mounted at /sys/fs/bpf there would vanish with the command, and the pins with it. The loader
//! refuses that (see [`ensure_bpffs`]); use `--netns`, which keeps the caller's mounts, or a
//! bpffs mounted outside /sys before `ip netns exec` (it is copied into the private namespace).
use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

/// The conventional bpffs mount point.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// `statfs` magic of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a BPF filesystem, and this process runs under `ip netns exec`, whose \
         /sys and mounts are private to the command: pins made there would vanish when the \
         loader exits. Use `loader --netns NAME ...` instead, or mount a bpffs outside /sys \
         first (mkdir -p /run/ebpf-dataplane/bpffs && mount -t bpf -o mode=0700 bpf \
         /run/ebpf-dataplane/bpffs) and pass --bpffs /run/ebpf-dataplane/bpffs"
    )]
    PrivateMountNamespace { path: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BpffsError + '_ {
    move |source| BpffsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// True if `path` is the root of (or inside) a BPF filesystem.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we pass.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes sure a BPF filesystem is mounted at `bpffs`, mounting one if not, except under `ip
/// netns exec`, where the mount would not outlive the command (an error says what to do).
pub fn ensure_bpffs(bpffs: &Path) -> Result<bool, BpffsError> {
    if is_bpffs(bpffs) {
        return Ok(false);
    }
    if under_ip_netns_exec() {
        return Err(BpffsError::PrivateMountNamespace {
            path: bpffs.display().to_string(),
        });
    }
    std::fs::create_dir_all(bpffs).map_err(io(bpffs))?;
    let target = CString::new(bpffs.as_os_str().as_bytes()).map_err(|_| BpffsError::Io {
        path: bpffs.display().to_string(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(BpffsError::Io {
            path: bpffs.display().to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(true)
}

/// True if this process runs in the private mount namespace `ip netns exec` makes: iproute2
/// mounts a fresh sysfs on /sys there with the namespace's name as the mount source.
fn under_ip_netns_exec() -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    sysfs_source_of_sys(&mountinfo).is_some_and(|source| {
        source != "sysfs" && Path::new(super::netns::NETNS_DIR).join(source).exists()
    })
}

/// The mount source of the last sysfs mounted on /sys in a mountinfo table.
fn sysfs_source_of_sys(mountinfo: &str) -> Option<&str> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // `id parent major:minor root mountpoint options [optional...] - fstype source opts`
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split_whitespace().nth(4)?;
            let mut right = right.split_whitespace();
            let fstype = right.next()?;
            let source = right.next()?;
            (mountpoint == "/sys" && fstype == "sysfs").then_some(source)
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sysfs_that_ip_netns_exec_mounts() {
        let table = "\
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
67 46 254:0 /run/netns /run/netns rw,relatime master:1 - ext4 /dev/vda rw
49 46 0:40 / /sys rw,relatime - sysfs host0 rw
";
        assert_eq!(sysfs_source_of_sys(table), Some("host0"));
        assert_eq!(
            sysfs_source_of_sys("23 27 0:22 / /sys rw,relatime shared:7 - sysfs sysfs rw\n"),
            Some("sysfs")
        );
        assert_eq!(
            sysfs_source_of_sys("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }
}
