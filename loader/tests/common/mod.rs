//! Helpers shared by the end-to-end tests: the test bed fixture, running the loader binary,
//! reading its counters, and what the kernel says is attached.
#![allow(dead_code)] // each test binary uses its own subset

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use dataplane::{kernel::inspect::Stats, model::route_table::Attach};
use netlab::{
    netns::{ChildGuard, sweep_stale},
    topology::{Options, Topology},
    traffic::{IperfResult, Proto, iperf3},
};

/// Root tests run one at a time: their traffic and counters must not mix, and the machine has
/// two cores. (Their namespace names are unique anyway.)
pub static SERIAL: Mutex<()> = Mutex::new(());

pub const LOADER: &str = env!("CARGO_BIN_EXE_loader");

/// Our CNI plugin, built beside the loader by `cargo test --workspace`.
pub fn plugin() -> PathBuf {
    let path = std::path::Path::new(LOADER).with_file_name("ebpf-dataplane");
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build --workspace --bins`; `cargo xtask test` does)",
        path.display()
    );
    path
}

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

    /// `loader run` for host `index` (see [`start_loader`]), its route table in the bed's
    /// directory.
    pub fn start_loader(&self, index: usize, attach: Attach) -> ChildGuard {
        start_loader(&self.topo, index, attach, &self.dir)
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
        start_loader_with(
            &self.topo,
            index,
            attach,
            &self.dir,
            &["--policy", path.to_str().unwrap()],
        )
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
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

fn unmount(path: &std::path::Path) {
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

/// The loader binary, pinning into the running test's bpffs.
pub fn loader_cmd() -> Command {
    let mut cmd = Command::new(LOADER);
    cmd.env("LOADER_BPFFS", test_bpffs());
    cmd
}

/// `loader routes --json` for a host.
pub fn routes(netns: &str) -> Vec<serde_json::Value> {
    let out = loader(&["routes", "--json", "--netns", netns]);
    assert!(
        out.status.success(),
        "loader routes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("routes JSON")
}

/// A counter of one hook, by name.
pub fn counter(s: &Stats, hook: &str, name: &str) -> u64 {
    s.hooks[hook][name]
}

/// `loader detach` for a host, which must succeed.
pub fn detach(netns: &str) {
    let out = loader(&["detach", "--netns", netns]);
    assert!(
        out.status.success(),
        "loader detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn loader(args: &[&str]) -> std::process::Output {
    loader_cmd().args(args).output().expect("running loader")
}

pub fn stats(netns: &str) -> Stats {
    let out = loader(&["stats", "--json", "--netns", netns]);
    assert!(
        out.status.success(),
        "loader stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

/// Starts `loader run` for host `index` and waits until it reports its maps. Host 0's loader
/// is pointed at its namespace (`--netns`), host 1's runs inside it (`ip netns exec`): both
/// ways of running on a host that is a namespace are exercised.
pub fn start_loader(
    topo: &Topology,
    index: usize,
    attach: Attach,
    dir: &std::path::Path,
) -> ChildGuard {
    start_loader_with(topo, index, attach, dir, &[])
}

/// [`start_loader`] with `extra` arguments for `loader run`.
pub fn start_loader_with(
    topo: &Topology,
    index: usize,
    attach: Attach,
    dir: &std::path::Path,
    extra: &[&str],
) -> ChildGuard {
    let path = dir.join(format!("host{index}.routes"));
    std::fs::write(&path, topo.route_table(index, attach)).unwrap();
    let netns = topo.hosts[index].ns.name();
    let config = path.to_str().unwrap();
    let mut cmd = if index == 0 {
        let mut cmd = loader_cmd();
        cmd.args(["run", "--config", config, "--netns", netns]);
        cmd
    } else {
        // `ip netns exec` passes the environment on, LOADER_BPFFS with it.
        let mut cmd = Command::new("ip");
        cmd.env("LOADER_BPFFS", test_bpffs());
        cmd.args(["netns", "exec", netns, LOADER, "run", "--config", config]);
        cmd
    };
    cmd.args(extra);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting loader");
    let mut guard = ChildGuard::from_child(child, format!("loader for {netns}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(guard.running(), "loader for {netns} exited early");
        if loader_is_up(netns) {
            return guard;
        }
        assert!(
            Instant::now() < deadline,
            "loader for {netns} did not come up in 30 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// True once a loader runs in `netns` with everything attached: its record (written after
/// attaching) shows in `loader status`. (The pins, and so `loader stats`, exist earlier.)
pub fn loader_is_up(netns: &str) -> bool {
    let out = loader(&["status", "--json", "--netns", netns]);
    out.status.success()
        && serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|s| !s["loader"].is_null())
}

/// A fresh directory of the test's own, removed when the returned guard drops.
pub fn temp_dir() -> TempDir {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("dpt-e2e-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

pub fn forwarded(s: &Stats, hook: &str) -> u64 {
    s.hooks[hook]["forwarded"]
}

pub fn bpftool_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool JSON")
}

/// How many links (XDP or tcx attachments) the kernel holds for program `prog_id`.
pub fn links_of_program(prog_id: u64) -> usize {
    bpftool_json(&["link", "show"])
        .iter()
        .filter(|l| l["prog_id"].as_u64() == Some(prog_id))
        .count()
}

/// How many links, machine-wide, attach a program named like one of ours.
pub fn links_of_our_programs() -> usize {
    let ours: Vec<u64> = bpftool_json(&["prog", "show"])
        .iter()
        .filter(|p| {
            matches!(
                p["name"].as_str(),
                Some("xdp_workload" | "xdp_underlay" | "tc_workload" | "tc_underlay")
            )
        })
        .filter_map(|p| p["id"].as_u64())
        .collect();
    ours.into_iter().map(links_of_program).sum()
}

/// The kernel ID of `program` in the loader running in `netns`.
pub fn program_id(netns: &str, program: &str) -> u64 {
    let out = loader(&["status", "--json", "--netns", netns]);
    assert!(
        out.status.success(),
        "loader status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["ids"]["programs"][program]
        .as_u64()
        .expect("program id in status")
}

/// iperf3 TCP and UDP (100 Mbit/s) from `client` to `server` for 2 s each; asserts that TCP
/// moved more than a megabyte and that the path lost under 1 % of the UDP datagrams (losses
/// the receiving socket's kernel counts as buffer overflows are not the path's), and returns
/// both results.
pub fn traffic_works(
    what: &str,
    client: &netlab::topology::Workload,
    server: &netlab::topology::Workload,
) -> (IperfResult, IperfResult) {
    let tcp = iperf3(&client.ns, &server.ns, server.addr, Proto::Tcp, 2)
        .unwrap_or_else(|e| panic!("{what}: TCP: {e:#}"));
    assert!(
        tcp.bytes > 1_000_000,
        "{what}: TCP moved only {} bytes",
        tcp.bytes
    );
    let overflows_before = udp_receive_buffer_errors(&server.ns);
    let udp = udp_100m(client, server, 2).unwrap_or_else(|e| panic!("{what}: UDP: {e:#}"));
    let overflows = udp_receive_buffer_errors(&server.ns) - overflows_before;
    assert!(
        udp.packets > 10_000,
        "{what}: UDP sent only {} datagrams",
        udp.packets
    );
    // Datagrams the receiving socket overflowed on (its server starved of CPU on a loaded
    // 2-core machine) are counted by its kernel and are not the path's.
    let path_lost = udp.lost_packets.saturating_sub(overflows);
    assert!(
        (path_lost as f64) < 0.01 * udp.packets as f64,
        "{what}: UDP lost {} of {} datagrams on the path ({} more overflowed the receiver)",
        path_lost,
        udp.packets,
        overflows
    );
    eprintln!(
        "{what}: TCP {:.2} Gbit/s ({} retransmits), UDP {} datagrams, {} lost ({overflows} of them receive-buffer overflows)",
        tcp.bits_per_second / 1e9,
        tcp.retransmits,
        udp.packets,
        udp.lost_packets
    );
    (tcp, udp)
}

/// iperf3 UDP at 100 Mbit/s from workload `client` to workload `server` for `secs`: the
/// stream every loss check here is made of.
pub fn udp_100m(
    client: &netlab::topology::Workload,
    server: &netlab::topology::Workload,
    secs: u32,
) -> anyhow::Result<IperfResult> {
    iperf3(
        &client.ns,
        &server.ns,
        server.addr,
        Proto::Udp {
            bits_per_second: 100_000_000,
        },
        secs,
    )
}

/// Waits up to `within` for `loader routes` of `netns` to satisfy `ok`; returns whether it did.
pub fn routes_become(
    netns: &str,
    within: Duration,
    ok: impl Fn(&[serde_json::Value]) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        // Until a dataplane is pinned, `loader routes` fails: that counts as not yet.
        let out = loader(&["routes", "--json", "--netns", netns]);
        let table: Vec<serde_json::Value> = if out.status.success() {
            serde_json::from_slice(&out.stdout).unwrap()
        } else {
            vec![]
        };
        if ok(&table) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to 30 s for `netns`'s route map to hold `n` routes and its loader to have
/// attached.
pub fn wait_for_routes(netns: &str, n: usize) {
    assert!(
        routes_become(netns, Duration::from_secs(30), |t| t.len() == n),
        "{netns}: the route map never held {n} routes"
    );
    wait_until_up(netns);
}

/// Waits up to 30 s for a loader in `netns` to have attached everything.
pub fn wait_until_up(netns: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !loader_is_up(netns) {
        assert!(
            Instant::now() < deadline,
            "{netns}: no loader came up in 30 s"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// GET /metrics from `addr` inside `netns`.
pub fn scrape_metrics(netns: &str, addr: &str) -> String {
    use std::io::{Read, Write};
    let addr = addr.to_string();
    netlab::netns::in_netns(netns, move || {
        let mut stream = std::net::TcpStream::connect(&addr)?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        anyhow::ensure!(
            response.starts_with("HTTP/1.0 200 OK"),
            "metrics answered: {response}"
        );
        Ok(response)
    })
    .expect("scraping the metrics")
}

pub fn has_route(table: &[serde_json::Value], prefix: &str) -> bool {
    table.iter().any(|r| r["prefix"] == prefix)
}

/// `loader ARGS` in the background, its log captured (read it with `.wait()`).
pub fn spawn_loader(args: &[&str]) -> ChildGuard {
    let child = loader_cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting loader");
    ChildGuard::from_child(child, format!("loader {}", args.join(" ")))
}

/// Runs `loader ARGS`, which must fail; returns what it said.
pub fn refused(args: &[&str]) -> String {
    let out = loader(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "loader {args:?} should refuse:\n{stderr}"
    );
    stderr
}

/// Asserts that `prefix` shows in (or, `present` false, leaves) `netns`'s route map within a
/// second, as the loader promises for every change of its sources.
pub fn assert_route_within_a_second(netns: &str, prefix: &str, present: bool) {
    assert!(
        routes_become(netns, Duration::from_secs(1), |t| has_route(t, prefix)
            == present),
        "{netns}: {prefix} {} the route map within a second",
        if present {
            "did not enter"
        } else {
            "did not leave"
        }
    );
}

/// Asserts that every one of `lines` is a line of the scraped `metrics`.
pub fn assert_metrics_have(metrics: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            metrics.lines().any(|l| l == *line),
            "metrics lack {line:?}:\n{metrics}"
        );
    }
}

/// What a UDP stream's loss is made of: frames the eBPF programs of each host forwarded, and
/// datagrams the receiving socket had no room for.
pub struct PathCounts {
    forwarded: Vec<u64>,
    receiver_overflows: u64,
}

impl PathCounts {
    /// Reads the TC forwarded counters of `hosts` and the UDP receive buffer overflows of the
    /// receiving workload namespace.
    pub fn read(hosts: &[&str], receiver: &netlab::netns::Netns) -> Self {
        Self {
            forwarded: hosts.iter().map(|h| forwarded(&stats(h), "tc")).collect(),
            receiver_overflows: udp_receive_buffer_errors(receiver),
        }
    }

    /// Asserts that the dataplane lost nothing of `stream` since `self` was read: every host
    /// forwarded at least every datagram sent, and every datagram iperf3 counts as lost is one
    /// the receiving socket's buffer overflowed on (its own kernel counts those: the iperf3
    /// server, starved of CPU for a moment on this 2-core machine, did not read in time).
    /// Returns those overflows, for the record.
    pub fn assert_path_lost_nothing(
        &self,
        stream: &IperfResult,
        hosts: &[&str],
        receiver: &netlab::netns::Netns,
    ) -> u64 {
        let after = Self::read(hosts, receiver);
        let overflows = after.receiver_overflows - self.receiver_overflows;
        for ((host, before), now) in hosts.iter().zip(&self.forwarded).zip(&after.forwarded) {
            assert!(
                now - before >= stream.packets,
                "{host} forwarded {} frames, fewer than the {} datagrams sent",
                now - before,
                stream.packets
            );
        }
        assert_eq!(
            stream.lost_packets, overflows,
            "datagrams lost other than to the receiving socket's buffer ({overflows} overflows)"
        );
        overflows
    }
}

/// UDP datagrams dropped for want of receive buffer in `ns` (/proc/net/snmp, RcvbufErrors).
pub fn udp_receive_buffer_errors(ns: &netlab::netns::Netns) -> u64 {
    let out = ns
        .command("cat")
        .arg("/proc/net/snmp")
        .output()
        .expect("reading /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (
        udp.next().expect("Udp header"),
        udp.next().expect("Udp values"),
    );
    let column = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .expect("RcvbufErrors column");
    values
        .split_whitespace()
        .nth(column)
        .and_then(|v| v.parse().ok())
        .expect("RcvbufErrors value")
}
