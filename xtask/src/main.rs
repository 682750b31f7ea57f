//! Developer and user entry points: `cargo xtask setup | build-ebpf | build | test | bench |
//! fmt | clippy`.
mod setup;

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, set-up, test, lint and bench entry points"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (and only that): the rust-src component, bpf-linker built
    /// against this toolchain's LLVM, and the Debian packages the tests and bench use.
    Setup,
    /// Build the eBPF objects (target/ebpf/bpfel-unknown-none/release/{dataplane,softirq-probe}).
    BuildEbpf,
    /// Set up, then build the loader (release, target/release/loader) with its eBPF object, and
    /// the CNI plugin (target/release/ebpf-dataplane).
    Build,
    /// Set up, build, and run the whole test suite: unit, program and end-to-end tests. Run it
    /// as root: here the root tests must run (outside it, an ordinary user's `cargo test`
    /// skips them with a message).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run the bench with its defaults (see `cargo xtask bench --help`).
    /// Every option is the bench's own, given as users type them (`cargo xtask bench
    /// --quick`); the `--` separator form keeps working.
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments for the bench binary (`--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Format both workspaces (the host one and the eBPF crate's own).
    Fmt {
        /// Only check, changing nothing (fails if anything is unformatted).
        #[arg(long)]
        check: bool,
    },
    /// Lint both workspaces with clippy, warnings as errors (the eBPF crate for its own target).
    Clippy,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Build => {
            setup::run()?;
            cargo(
                &[
                    "build",
                    "--release",
                    "--package",
                    "loader",
                    "--package",
                    "cni",
                ],
                &[],
            )
        }
        Cmd::Test { args } => {
            setup::run()?;
            build_ebpf()?;
            // The tests run the CNI plugin binary, which `cargo test` builds only for its
            // own package's tests: built first, beside the loader.
            cargo(&["build", "--workspace", "--bins"], &[])?;
            cargo(&["test", "--workspace", "--"], &args)
        }
        Cmd::Bench { args } => {
            setup::run()?;
            build_ebpf()?;
            cargo(&["run", "--release", "--package", "bench", "--"], &args)
        }
        Cmd::Fmt { check } => fmt(check),
        Cmd::Clippy => clippy(),
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn build_ebpf() -> Result<()> {
    let dir = ebpf_build::build_ebpf(&workspace_root()).map_err(anyhow::Error::msg)?;
    println!("eBPF objects: {}", dir.display());
    Ok(())
}

/// A cargo command in the host workspace, with the eBPF objects built for real and the root
/// tests required to run.
fn cargo(args: &[&str], extra: &[String]) -> Result<()> {
    let mut cmd = cargo_command();
    cmd.current_dir(workspace_root())
        .args(args)
        .args(extra)
        .env(ebpf_build::BUILD_ENV, "1")
        .env(REQUIRE_ROOT_TESTS_ENV, "1");
    run(&mut cmd, &args.join(" "))
}

/// `netlab::root::REQUIRE_ENV`, spelled out: xtask does not build the test beds.
const REQUIRE_ROOT_TESTS_ENV: &str = "DATAPLANE_REQUIRE_ROOT_TESTS";

fn cargo_command() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running cargo {what}"))?;
    if !status.success() {
        bail!("cargo {what} failed ({status})");
    }
    Ok(())
}

fn fmt(check: bool) -> Result<()> {
    let check: &[&str] = if check { &["--check"] } else { &[] };
    for dir in [workspace_root(), workspace_root().join("dataplane-ebpf")] {
        run(
            cargo_command()
                .current_dir(&dir)
                .args(["fmt", "--all"])
                .args(check),
            &format!("fmt in {}", dir.display()),
        )?;
    }
    Ok(())
}

fn clippy() -> Result<()> {
    let root = workspace_root();
    run(
        cargo_command().current_dir(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "clippy (host workspace)",
    )?;
    // The programs are linted for the target they run on: BPF bindings differ from the host's.
    run(
        cargo_command()
            .current_dir(root.join("dataplane-ebpf"))
            .args(["clippy", "--release", "--target", ebpf_build::EBPF_TARGET])
            .args(["-Z", "build-std=core", "--target-dir"])
            .arg(root.join("target").join("ebpf-clippy"))
            .args(["--", "-D", "warnings"])
            .env("RUSTC_BOOTSTRAP", "1"),
        "clippy (eBPF crate)",
    )
}
