//! Running the loader binary (and our CNI plugin beside it): its commands, `loader run` in the
//! background, waiting for it to come up, signalling it and reading its log.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use dataplane::model::route_table::Attach;
use netlab::{netns::ChildGuard, topology::Topology};

use super::bed::test_bpffs;

pub const LOADER: &str = env!("CARGO_BIN_EXE_loader");

/// Our CNI plugin, built beside the loader by `cargo test --workspace`.
pub fn plugin() -> PathBuf {
    let path = Path::new(LOADER).with_file_name("ebpf-dataplane");
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build --workspace --bins`; `cargo xtask test` does)",
        path.display()
    );
    path
}

/// The loader binary, pinning into the running test's bpffs.
pub fn loader_cmd() -> Command {
    let mut cmd = Command::new(LOADER);
    cmd.env("LOADER_BPFFS", test_bpffs());
    cmd
}

pub fn loader(args: &[&str]) -> std::process::Output {
    loader_cmd().args(args).output().expect("running loader")
}

/// `loader COMMAND --json --netns NETNS`, which must succeed; its answer, parsed.
pub fn loader_json<T: serde::de::DeserializeOwned>(command: &str, netns: &str) -> T {
    let out = loader(&[command, "--json", "--netns", netns]);
    assert!(
        out.status.success(),
        "loader {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("loader {command}: its JSON: {e}"))
}

/// The arguments of `loader run --config CONFIG --netns NETNS EXTRA...`.
pub fn run_args<'a>(config: &'a Path, netns: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--config",
        config.to_str().unwrap(),
        "--netns",
        netns,
    ];
    args.extend_from_slice(extra);
    args
}

/// `loader ARGS` in the background, its log captured (read it with [`log_of`]).
pub fn spawn_loader(args: &[&str]) -> ChildGuard {
    let child = loader_cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting loader");
    ChildGuard::from_child(child, format!("loader {}", args.join(" ")))
}

/// Waits for a loader started by [`spawn_loader`] to exit; returns its log.
pub fn log_of(guard: ChildGuard) -> String {
    String::from_utf8_lossy(&guard.wait().unwrap().stderr).into_owned()
}

/// Sends `sig` to process `pid`, which must exist.
pub fn signal(pid: u32, sig: libc::c_int) {
    assert_eq!(
        // SAFETY: kill(2) takes no pointers; `pid` is a child the calling test started (and
        // has not waited for), so the signal cannot reach a recycled pid.
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill({pid}, {sig})"
    );
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

/// `loader detach` for a host, which must succeed.
pub fn detach(netns: &str) {
    let out = loader(&["detach", "--netns", netns]);
    assert!(
        out.status.success(),
        "loader detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `loader run` for host `index` and waits until it reports its maps. Host 0's loader
/// is pointed at its namespace (`--netns`), host 1's runs inside it (`ip netns exec`): both
/// ways of running on a host that is a namespace are exercised.
pub fn start_loader(topo: &Topology, index: usize, attach: Attach, dir: &Path) -> ChildGuard {
    start_loader_with(topo, index, attach, dir, &[])
}

/// [`start_loader`] with `extra` arguments for `loader run`.
pub fn start_loader_with(
    topo: &Topology,
    index: usize,
    attach: Attach,
    dir: &Path,
    extra: &[&str],
) -> ChildGuard {
    let path = dir.join(format!("host{index}.routes"));
    std::fs::write(&path, topo.route_table(index, attach)).unwrap();
    let netns = topo.hosts[index].ns.name();
    let mut cmd = if index == 0 {
        let mut cmd = loader_cmd();
        cmd.args(run_args(&path, netns, extra));
        cmd
    } else {
        // `ip netns exec` passes the environment on, LOADER_BPFFS with it.
        let mut cmd = Command::new("ip");
        cmd.env("LOADER_BPFFS", test_bpffs());
        cmd.args(["netns", "exec", netns, LOADER, "run", "--config"])
            .arg(&path)
            .args(extra);
        cmd
    };
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
