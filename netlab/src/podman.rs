//! A real container runtime on a test host: podman (Debian 12's 4.3, CNI backend, runc)
//! running containers on the CNI network of our plugin, inside the host's network namespace.
//!
//! Everything podman keeps is the bed's own: its storage and run state, its network
//! configuration, the IPAM plugin's allocations, all under the bed's directory, so a test
//! leaves nothing behind once [`Podman`] drops (every container removed first). Only the
//! network namespaces podman makes for containers live in /run/netns (as `cni-...`), and go
//! with their containers. How each part was chosen:
//! - `nsenter --net`, not `ip netns exec`, which mounts a private /sys where podman finds no
//!   cgroups;
//! - runc (crun fails on this kernel's hybrid cgroup layout), explicit ulimits (podman's
//!   defaults are refused here);
//! - an image imported from a busybox root file system (no registry is reachable).
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result, bail};

use crate::netns::{Netns, run};

/// The network's name in the configuration list.
pub const NETWORK: &str = "dpnet";
/// The image every container runs.
pub const IMAGE: &str = "localhost/dpt-busybox:1";
/// Where Debian's reference plugins (host-local) are.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// What a host's network configuration says.
pub struct NetworkSpec<'a> {
    /// The IPAM range; None lets the plugin take the prefix the cluster gave the host.
    pub subnet: Option<&'a str>,
    /// Lets `podman run --ip` ask for an address (the `ips` capability).
    pub static_ips: bool,
}

/// podman for one host namespace.
pub struct Podman {
    dir: PathBuf,
    host_ns: String,
}

impl Podman {
    /// Sets podman up in `dir` for the host namespace `host_ns`: the network configuration
    /// list naming `plugin` (a path to our plugin binary), and the image.
    pub fn new(dir: &Path, host_ns: &str, plugin: &Path, network: &NetworkSpec) -> Result<Self> {
        let podman = Self {
            dir: dir.to_path_buf(),
            host_ns: host_ns.to_string(),
        };
        for sub in ["net", "bin", "ipam", "storage", "run", "tmp", "rootfs/bin"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let plugin_type = plugin
            .file_name()
            .and_then(|n| n.to_str())
            .context("plugin path has no file name")?;
        std::fs::copy(plugin, dir.join("bin").join(plugin_type))
            .with_context(|| format!("copying {}", plugin.display()))?;
        std::fs::write(
            dir.join("containers.conf"),
            // Its own state and locks (file locks in its tmp_dir), not the machine's shared
            // /run/libpod and SHM lock segment: two instances sharing those take each other's
            // locks and leave containers' namespaces behind.
            format!(
                "[engine]\ntmp_dir = \"{}\"\nlock_type = \"file\"\n\n[network]\ncni_plugin_dirs = [\"{}\", \"{REFERENCE_PLUGINS}\"]\nnetwork_backend = \"cni\"\n",
                dir.join("tmp").display(),
                dir.join("bin").display()
            ),
        )?;
        std::fs::write(
            dir.join("net").join(format!("{NETWORK}.conflist")),
            conflist(plugin_type, network, &dir.join("ipam")).to_string(),
        )?;
        podman.import_image()?;
        Ok(podman)
    }

    /// The configuration list (what a user puts in the runtime's CNI directory).
    pub fn conflist_path(&self) -> PathBuf {
        self.dir.join("net").join(format!("{NETWORK}.conflist"))
    }

    /// The IPAM plugin's allocation directory.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam").join(NETWORK)
    }

    fn import_image(&self) -> Result<()> {
        let rootfs = self.dir.join("rootfs");
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .context("copying /bin/busybox (Debian's busybox-static)")?;
        for applet in ["sh", "ip", "ping", "sleep", "nc", "cat", "true"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
        }
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .output()?;
        if !tar.status.success() {
            bail!("tar: {}", String::from_utf8_lossy(&tar.stderr));
        }
        let mut import = self.command();
        import.args(["import", "-", IMAGE]);
        feed(&mut import, &tar.stdout)
    }

    /// podman with this host's settings, in its network namespace.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host_ns))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--network-backend", "cni", "--network-config-dir"])
            .arg(self.dir.join("net"))
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        cmd
    }

    /// `podman ARGS`, failing with what it said.
    pub fn podman(&self, args: &[&str]) -> Result<Output> {
        run(self.command().args(args))
    }

    /// Starts container `name` on the network (sleeping until removed), at `ip` if given.
    pub fn run(&self, name: &str, ip: Option<Ipv4Addr>) -> Result<()> {
        let ip = ip.map(|ip| ip.to_string());
        let mut args = vec!["run", "-d", "--name", name, "--network", NETWORK];
        if let Some(ip) = &ip {
            args.extend(["--ip", ip]);
        }
        args.extend([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            IMAGE,
            "sleep",
            "1000000",
        ]);
        self.podman(&args)
            .with_context(|| format!("podman run {name}"))?;
        Ok(())
    }

    /// Removes containers at once (their network DEL runs as they go).
    pub fn rm(&self, names: &[&str]) -> Result<()> {
        let mut args = vec!["rm", "-f", "-t", "0"];
        args.extend(names);
        self.podman(&args)?;
        Ok(())
    }

    /// The container's network namespace (podman names it under /run/netns).
    pub fn netns(&self, name: &str) -> Result<Netns> {
        let key = self.inspect(name, "{{.NetworkSettings.SandboxKey}}")?;
        let ns = key
            .strip_prefix("/run/netns/")
            .with_context(|| format!("{name}: sandbox {key} is not under /run/netns"))?;
        Ok(Netns::existing(ns))
    }

    /// The container's address on the network, as the plugin's result gave it to podman.
    pub fn addr(&self, name: &str) -> Result<Ipv4Addr> {
        let ip = self.inspect(
            name,
            &format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}"),
        )?;
        ip.parse()
            .with_context(|| format!("{name}: `{ip}` is not an address"))
    }

    fn inspect(&self, name: &str, format: &str) -> Result<String> {
        let out = self.podman(&["inspect", "--format", format, name])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Every container (and with it its network), then the storage.
        let _ = self.command().args(["rm", "-a", "-f", "-t", "0"]).output();
        let _ = self.command().args(["system", "reset", "-f"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration list for our plugin: `type` is the plugin's file name.
fn conflist(plugin_type: &str, network: &NetworkSpec, ipam_dir: &Path) -> serde_json::Value {
    let mut ipam = serde_json::json!({ "type": "host-local", "dataDir": ipam_dir });
    if let Some(subnet) = network.subnet {
        ipam["ranges"] = serde_json::json!([[{ "subnet": subnet }]]);
    }
    let mut plugin = serde_json::json!({ "type": plugin_type, "ipam": ipam });
    if network.static_ips {
        plugin["capabilities"] = serde_json::json!({ "ips": true });
    }
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [plugin],
    })
}

fn feed(cmd: &mut Command, input: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
