//! The root test's hold on the machine and its test bed: the serial lock, a BPF filesystem
//! of its own, a temporary directory, and the two hosts with their workloads ([`Topology`]),
//! each taken down again on drop however the test ends.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use dataplane::model::route_table::Attach;
use netlab::{
    netns::{ChildGuard, sweep_stale},
    topology::{Options, Overlay, Topology},
};

use super::loader_proc::{loader, start_loader, start_loader_with};

/// Root tests run one at a time: their traffic and counters must not mix, and the machine has
/// two cores. (Their namespace names are unique anyway.)
pub static SERIAL: Mutex<()> = Mutex::new(());

/// A root test's hold on the machine: the serial lock and its own BPF filesystem.
pub struct RootTest {
    // Fields drop in order: the bpffs goes (and with it every pin the test's loaders made,
    // which detaches their programs) before the next test may start.
    _bpffs: TestBpffs,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Starts the calling root test: None (the test is skipped, with a message) when not run as
/// root; otherwise takes the serial lock, sweeps what killed runs left, and mounts a BPF
/// filesystem of the test's own, which every loader the test starts pins into.
pub fn root_test() -> Option<RootTest> {
    if !netlab::root::is_root() {
        return None;
    }
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    sweep_stale();
    sweep_stale_bpffs();
    Some(RootTest {
        _bpffs: TestBpffs::mount(),
        _serial: serial,
    })
}

/// A root test's two hosts and their workloads ([`Topology`]), with a temporary directory for
/// route tables and logs. On drop, however the test ends, every host's dataplane is detached,
/// the directory removed, the namespaces deleted and the test's bpffs unmounted, in that order.
pub struct TestBed {
    pub topo: Topology,
    pub dir: TempDir,
    // Dropped last: the serial lock and the bpffs outlive the namespaces and the detach.
    _root: RootTest,
}

impl TestBed {
    /// The bed of the calling root test; None when the test is skipped (not root).
    pub fn build(opts: &Options) -> Option<Self> {
        let root = root_test()?;
        let topo = Topology::build(opts).expect("building the topology");
        Some(Self {
            topo,
            dir: temp_dir(),
            _root: root,
        })
    }

    /// [`Self::build`]: two routed hosts, `workloads_per_host` workloads each, wired for
    /// `attach`.
    pub fn routed(workloads_per_host: usize, attach: Attach) -> Option<Self> {
        Self::wired(workloads_per_host, attach, Overlay::Routed)
    }

    /// [`Self::build`]: two hosts over VXLAN on `port`, `workloads_per_host` workloads each,
    /// wired for `attach`.
    pub fn vxlan(workloads_per_host: usize, attach: Attach, port: u16) -> Option<Self> {
        Self::wired(workloads_per_host, attach, Overlay::Vxlan { port })
    }

    fn wired(workloads_per_host: usize, attach: Attach, overlay: Overlay) -> Option<Self> {
        Self::build(&Options {
            workloads_per_host,
            xdp_ready: attach != Attach::Tc,
            overlay,
        })
    }

    /// The bed with `iptables -P FORWARD DROP` on every host: from here only the loaders'
    /// programs carry traffic between workloads.
    pub fn forward_drop(self) -> Self {
        self.set_kernel_forward_policy("DROP").unwrap();
        self
    }

    /// Writes `table` as host `index`'s route table (`host<index>.routes` in the bed's
    /// directory, where [`Self::start_loader`] writes it too); returns its path.
    pub fn write_routes(&self, index: usize, table: &str) -> PathBuf {
        let path = self.dir.join(format!("host{index}.routes"));
        std::fs::write(&path, table).unwrap();
        path
    }

    /// `loader run` for host `index` (see [`start_loader`]), its route table in the bed's
    /// directory.
    pub fn start_loader(&self, index: usize, attach: Attach) -> ChildGuard {
        start_loader(&self.topo, index, attach, &self.dir)
    }

    /// As [`Self::start_loader`], with `extra` arguments for `loader run`.
    pub fn start_loader_with(&self, index: usize, attach: Attach, extra: &[&str]) -> ChildGuard {
        start_loader_with(&self.topo, index, attach, &self.dir, extra)
    }

    /// As [`Self::start_loader`], with the policy `policy` (its text) for the host.
    pub fn start_loader_with_policy(
        &self,
        index: usize,
        attach: Attach,
        policy: &str,
    ) -> ChildGuard {
        let path = self.dir.join(format!("host{index}.policy"));
        std::fs::write(&path, policy).unwrap();
        self.start_loader_with(index, attach, &["--policy", path.to_str().unwrap()])
    }

    /// Network namespace name of host `index`.
    pub fn host(&self, index: usize) -> &str {
        self.topo.hosts[index].ns.name()
    }
}

impl std::ops::Deref for TestBed {
    type Target = Topology;

    fn deref(&self) -> &Topology {
        &self.topo
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        // Best effort, and quiet: a test may have detached a host already.
        for host in &self.topo.hosts {
            let _ = loader(&["detach", "--netns", host.ns.name()]);
            // The plugin's records and the loader's socket go with the host.
            let _ = netlab::netns::in_netns(host.ns.name(), || {
                Ok(dataplane::system::workloads::HostDir::current()?.remove()?)
            });
        }
    }
}

/// A directory of the test's own, removed on drop.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory of the test's own, removed when the returned guard drops.
pub fn temp_dir() -> TempDir {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dpt-e2e-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// The bpffs of the running test, given to every loader it starts (`LOADER_BPFFS`).
static BPFFS: Mutex<Option<PathBuf>> = Mutex::new(None);

/// A bpffs mounted for one test under /run (outside /sys, so that loaders started with `ip
/// netns exec` see it too) and unmounted on drop, however the test ends: unmounting releases
/// every pin in it.
pub struct TestBpffs {
    path: PathBuf,
}

impl TestBpffs {
    fn mount() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = PathBuf::from(format!("/run/dpt-{}-{n}-bpffs", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "bpf", "-o", "mode=0700", "bpf"])
            .arg(&path)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a bpffs at {}", path.display());
        *BPFFS.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.clone());
        Self { path }
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        *BPFFS.lock().unwrap_or_else(|p| p.into_inner()) = None;
        unmount(&self.path);
    }
}

fn unmount(path: &Path) {
    let _ = Command::new("umount").arg("-l").arg(path).status();
    let _ = std::fs::remove_dir(path);
}

/// Unmounts the test bpffs mounts of runs that were killed (their pid is gone).
fn sweep_stale_bpffs() {
    let Ok(entries) = std::fs::read_dir("/run") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("dpt-")
            .filter(|rest| rest.ends_with("-bpffs"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 sends nothing: it only asks whether `pid` exists, and
        // takes no pointers.
        if unsafe { libc::kill(pid, 0) } != 0 {
            unmount(&entry.path());
        }
    }
}

/// The running test's bpffs.
pub fn test_bpffs() -> PathBuf {
    BPFFS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .expect("start the test with root_test(): loaders pin into its bpffs")
}
