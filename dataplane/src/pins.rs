//! Where a host's dataplane lives in a BPF filesystem, so that it outlives the loader.
//!
//! Layout: `<bpffs>/ebpf-dataplane/netns-<cookie>/{maps,links}/...`. The directory is named by
//! the network namespace's cookie, which the kernel never hands out twice (inode numbers of
//! namespaces are reused): a new namespace never adopts the pins of a dead one, and two hosts
//! that are namespaces of one machine never share pins.
//!
//! `ip netns exec` runs its command in a private mount namespace with a fresh /sys: a bpffs
//! mounted at /sys/fs/bpf there would vanish with the command, and the pins with it. The loader
//! refuses that (see [`ensure_bpffs`]); use `--netns`, which keeps the caller's mounts, or a
//! bpffs mounted outside /sys before `ip netns exec` (it is copied into the private namespace).
use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use crate::{config::Attach, shared::map_names};

/// The conventional bpffs mount point.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// Our directory under the bpffs.
const APP_DIR: &str = "ebpf-dataplane";
/// `statfs` magic of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The maps a host's dataplane keeps across loader restarts: everything the routing programs
/// use (routes, ports, addresses, VXLAN settings, policy and its admitted flows, and the
/// counters, which therefore keep counting across a restart). The bench's softirq timer map is not part of a host's state.
pub const PINNED_MAPS: [&str; 12] = [
    map_names::ROUTES,
    map_names::TX_PORTS,
    map_names::HOST_ADDRS,
    map_names::COUNTERS,
    map_names::FWD_BY_EGRESS,
    map_names::VXLAN_CONFIG,
    map_names::VXLAN_VNIS,
    map_names::POLICIES,
    map_names::POLICY_PEERS,
    map_names::POLICY_VERDICTS,
    map_names::POLICY_FLOWS,
    map_names::POLICY_DENIED,
];

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read this network namespace's cookie: {0}")]
    Cookie(std::io::Error),
    #[error(
        "{path} is not a BPF filesystem, and this process runs under `ip netns exec`, whose \
         /sys and mounts are private to the command: pins made there would vanish when the \
         loader exits. Use `loader --netns NAME ...` instead, or mount a bpffs outside /sys \
         first (mkdir -p /run/ebpf-dataplane/bpffs && mount -t bpf bpf \
         /run/ebpf-dataplane/bpffs) and pass --bpffs /run/ebpf-dataplane/bpffs"
    )]
    PrivateMountNamespace { path: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The pin directory of one host (network namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// The pin directory of the calling thread's network namespace under `bpffs` (which is not
    /// created or mounted here: see [`ensure_bpffs`]).
    pub fn for_current_netns(bpffs: &Path) -> Result<Self, PinError> {
        let cookie = netns_cookie().map_err(PinError::Cookie)?;
        Ok(Self::at(
            bpffs.join(APP_DIR).join(format!("netns-{cookie}")),
        ))
    }

    /// A pin directory at an explicit path.
    pub fn at(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True if a dataplane is pinned here.
    pub fn exists(&self) -> bool {
        self.maps_dir().is_dir()
    }

    fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Where the link attaching the routing program to `ifindex` the `attach` way is pinned.
    pub fn link(&self, attach: Attach, ifindex: u32) -> PathBuf {
        self.links_dir().join(format!("{attach}-{ifindex}"))
    }

    /// The pinned links present now.
    pub fn links(&self) -> Result<Vec<PathBuf>, PinError> {
        let dir = self.links_dir();
        match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .map(|e| e.map(|e| e.path()).map_err(io(&dir)))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(PinError::Io {
                path: dir.display().to_string(),
                source,
            }),
        }
    }

    /// Creates the directories (the bpffs must be mounted).
    pub fn create(&self) -> Result<(), PinError> {
        for dir in [self.maps_dir(), self.links_dir()] {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(())
    }

    /// Unpins everything: the links go first (which detaches the programs from their
    /// interfaces), then the maps. Objects still held by a running process stay until it lets
    /// go of them.
    pub fn remove(&self) -> Result<(), PinError> {
        if !self.root.exists() {
            return Ok(());
        }
        for link in self.links()? {
            std::fs::remove_file(&link).map_err(io(&link))?;
        }
        std::fs::remove_dir_all(&self.root).map_err(io(&self.root))
    }
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
pub fn ensure_bpffs(bpffs: &Path) -> Result<bool, PinError> {
    if is_bpffs(bpffs) {
        return Ok(false);
    }
    if under_ip_netns_exec() {
        return Err(PinError::PrivateMountNamespace {
            path: bpffs.display().to_string(),
        });
    }
    std::fs::create_dir_all(bpffs).map_err(io(bpffs))?;
    let target = CString::new(bpffs.as_os_str().as_bytes()).map_err(|_| PinError::Io {
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
        return Err(PinError::Io {
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
        source != "sysfs" && Path::new(crate::netns::NETNS_DIR).join(source).exists()
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
    fn pin_paths_name_the_attach_kind_and_ifindex() {
        let pins = PinDir::at("/sys/fs/bpf/ebpf-dataplane/netns-7".into());
        assert_eq!(
            pins.link(Attach::Tc, 12),
            Path::new("/sys/fs/bpf/ebpf-dataplane/netns-7/links/tc-12")
        );
        assert_eq!(
            pins.link(Attach::XdpGeneric, 3),
            Path::new("/sys/fs/bpf/ebpf-dataplane/netns-7/links/xdp-generic-3")
        );
        assert_eq!(
            pins.map("ROUTES"),
            Path::new("/sys/fs/bpf/ebpf-dataplane/netns-7/maps/ROUTES")
        );
    }

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

    #[test]
    fn the_cookie_is_stable_within_a_namespace() {
        assert_eq!(netns_cookie().unwrap(), netns_cookie().unwrap());
    }
}
