//! `cargo xtask setup`: installs what is missing, and only that. Idempotent: a second run
//! checks and changes nothing.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

/// Debian packages the tests and the bench run: iproute2 (ip, and namespaces), iptables,
/// ipset and nftables (the kernel baselines, FORWARD DROP), iperf3 (traffic), ethtool (offloads),
/// bpftool (inspection), iputils-ping, procps (sysctl), fonts-dejavu-core (chart text),
/// protobuf-compiler and libprotobuf-dev (protoc and its well-known types, which the etcd
/// client's build needs), etcd-server (the cluster tests' store), and podman, runc,
/// containernetworking-plugins (the reference `host-local` IPAM the CNI plugin delegates to)
/// and busybox-static (a container image made without a registry): the CNI tests' runtime.
const DEBIAN_PACKAGES: &[&str] = &[
    "fonts-dejavu-core",
    "iproute2",
    "iptables",
    "ipset",
    "nftables",
    "iperf3",
    "ethtool",
    "bpftool",
    "iputils-ping",
    "procps",
    "protobuf-compiler",
    "libprotobuf-dev",
    "etcd-server",
    "podman",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
];

/// bpf-linker release known to build with this toolchain (rustc 1.95, LLVM 22): newer ones
/// need a newer rustc.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: rust-src present");
        return Ok(());
    }
    println!("setup: installing the rust-src component (needed for -Z build-std=core)");
    status(Command::new("rustup").args(["component", "add", "rust-src"])).context(
        "cannot install rust-src: it comes from rustup's own server, which this machine must reach",
    )
}

fn bpf_linker_runs() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_runs() {
        println!("setup: bpf-linker present");
        return Ok(());
    }
    // Built against the toolchain's own libLLVM, exposed under a prefix that must outlive
    // this command (the binary records its library path).
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
    let lib = sysroot.join("lib");
    let so = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so") || n.starts_with("libLLVM-"))
        .with_context(|| format!("no libLLVM in {}", lib.display()))?;
    let version = output(Command::new("rustc").arg("-vV"))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV names no LLVM version")?
        .to_string();
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let prefix = home.join("rust-llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    for name in ["libLLVM.so".to_string(), so.clone()] {
        let link = prefix.join("lib").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&so), &link)?;
    }
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} (about 2 minutes)"
    );
    status(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bpf_linker_runs() {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        println!("setup: Debian packages present");
        return Ok(());
    }
    // SAFETY: geteuid(2) takes nothing and always succeeds.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing Debian packages: {} (run `cargo xtask setup` as root)",
            missing.join(" ")
        );
    }
    println!("setup: installing {}", missing.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
