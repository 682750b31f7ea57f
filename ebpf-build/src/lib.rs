//! Builds the eBPF objects of `dataplane-ebpf`, the same way for the build scripts that embed
//! them (`dataplane` embeds the dataplane's object, `bench` its softirq probe) and for
//! `cargo xtask build-ebpf`.
//!
//! The build runs on the machine's stable toolchain with `RUSTC_BOOTSTRAP=1` scoped to this one
//! cargo invocation: aya-ebpf uses unstable features, and `-Z build-std=core` is needed for the
//! BPF target, which ships no prebuilt `core`.
//!
//! A build script builds the real object only when asked ([`BUILD_ENV`]`=1`, which every
//! `cargo xtask` entry point sets); otherwise it embeds an empty placeholder, so that `cargo
//! check`, clippy and editors need neither bpf-linker nor the nested build. A binary carrying
//! the placeholder refuses to load it and says how to build it properly.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Target triple of the eBPF objects.
pub const EBPF_TARGET: &str = "bpfel-unknown-none";

/// Set to `1` to make the build scripts build and embed the real eBPF objects.
pub const BUILD_ENV: &str = "DATAPLANE_BUILD_EBPF";

/// What, relative to the workspace root, the objects are built from: a change to any of it
/// rebuilds them.
const SOURCES: &[&str] = &[
    "dataplane-ebpf/src",
    "dataplane-ebpf/Cargo.toml",
    "dataplane-ebpf/Cargo.lock",
    "dataplane-common/src",
    "dataplane-common/Cargo.toml",
    "ebpf-build/src",
];

/// Builds `dataplane-ebpf` in release mode (every object it has) and returns the directory the
/// objects are in. `workspace_root` is the directory holding `dataplane-ebpf/`; the objects
/// land in `<workspace_root>/target/ebpf`.
pub fn build_ebpf(workspace_root: &Path) -> Result<PathBuf, String> {
    let crate_dir = workspace_root.join("dataplane-ebpf");
    let target_dir = workspace_root.join("target").join("ebpf");
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !linker_ok {
        return Err("bpf-linker is missing or does not run: run `cargo xtask setup` first".into());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&crate_dir)
        .args([
            "build",
            "--release",
            "--target",
            EBPF_TARGET,
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC_BOOTSTRAP", "1");
    // What an outer cargo (running a build script) sets for its own build must not leak into
    // this one.
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        let from_outer_build = (var.starts_with("CARGO_") && var != "CARGO_HOME")
            || [
                "RUSTC",
                "RUSTC_WRAPPER",
                "RUSTC_WORKSPACE_WRAPPER",
                "RUSTFLAGS",
                "OUT_DIR",
                "TARGET",
                "HOST",
                "PROFILE",
                "OPT_LEVEL",
                "DEBUG",
                "NUM_JOBS",
            ]
            .contains(&var.as_ref());
        if from_outer_build {
            cmd.env_remove(var.as_ref());
        }
    }
    // BTF in the object lets the verifier and bpftool name types.
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        ["-C", "debuginfo=2", "-C", "link-arg=--btf"].join("\x1f"),
    );
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo for the eBPF build: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the eBPF build failed ({status}); see the compiler output above"
        ));
    }
    Ok(target_dir.join(EBPF_TARGET).join("release"))
}

/// For a build script: puts the eBPF object `object` (a binary of `dataplane-ebpf`) at
/// `$OUT_DIR/<out_name>`, freshly built when [`BUILD_ENV`] is `1`, an empty placeholder
/// otherwise. `workspace_root` is the directory holding `dataplane-ebpf/`.
pub fn embed(workspace_root: &Path, object: &str, out_name: &str) {
    println!("cargo::rerun-if-env-changed={BUILD_ENV}");
    for source in SOURCES {
        println!(
            "cargo::rerun-if-changed={}",
            workspace_root.join(source).display()
        );
    }
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR in a build script")).join(out_name);
    if std::env::var(BUILD_ENV).as_deref() != Ok("1") {
        println!(
            "cargo::warning=built without the eBPF object `{object}` (a placeholder): set \
             {BUILD_ENV}=1 or use `cargo xtask build`, `test` or `bench` for binaries that load it"
        );
        write(&out, &[]);
        return;
    }
    match build_ebpf(workspace_root) {
        Ok(dir) => {
            let built = dir.join(object);
            let bytes = std::fs::read(&built)
                .unwrap_or_else(|e| panic!("reading {}: {e}", built.display()));
            write(&out, &bytes);
        }
        // A failing build script has its output (the eBPF compiler's errors) shown by cargo.
        Err(e) => panic!("{e}"),
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
