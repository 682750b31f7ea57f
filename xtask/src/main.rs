//! Developer and user entry points: `cargo xtask setup | build-ebpf | test | bench`.
mod setup;

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[path = "../../dataplane/build_ebpf.rs"]
mod build_ebpf;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, set-up, test and bench entry points"
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
    /// Build the eBPF object (target/ebpf/bpfel-unknown-none/release/dataplane).
    BuildEbpf,
    /// Set up, build, and run the whole test suite (unit, program and end-to-end tests;
    /// the end-to-end tests need root).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run the bench with its defaults (see `cargo xtask bench -- --help`).
    Bench {
        /// Arguments for the bench binary.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf => build(),
        Cmd::Test { args } => {
            setup::run()?;
            build()?;
            cargo(&["test", "--workspace", "--"], &args)
        }
        Cmd::Bench { args } => {
            setup::run()?;
            build()?;
            cargo(&["run", "--release", "--package", "bench", "--"], &args)
        }
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn build() -> Result<()> {
    let object = build_ebpf::build_ebpf(&workspace_root()).map_err(anyhow::Error::msg)?;
    println!("eBPF object: {}", object.display());
    Ok(())
}

fn cargo(args: &[&str], extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(args)
        .args(extra)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
