// Builds the eBPF object. Shared, by `include!`, between dataplane's build script (which embeds
// the object it returns) and `cargo xtask build-ebpf`, so both build it the same way.
//
// The build runs on the machine's stable toolchain with `RUSTC_BOOTSTRAP=1` scoped to this one
// cargo invocation (aya-ebpf uses unstable features and `-Z build-std=core` is needed for the
// BPF target); see ../shared/TOOLCHAIN.md.

/// Target triple of the eBPF object.
pub const EBPF_TARGET: &str = "bpfel-unknown-none";

/// Builds `dataplane-ebpf` in release mode and returns the path of the object.
/// `workspace_root` is the directory holding `dataplane-ebpf/`; the object lands in
/// `<workspace_root>/target/ebpf`.
pub fn build_ebpf(workspace_root: &std::path::Path) -> Result<std::path::PathBuf, String> {
    use std::process::Command;

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
        // BTF in the object lets the verifier and bpftool name types (set below).
        .env("RUSTC_BOOTSTRAP", "1");
    // What an outer cargo (running a build script) sets for its own build must not leak into
    // this one: above all CARGO_FEATURE_USER, which would make dataplane's build script, run
    // again inside this build, start this build again.
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
    Ok(target_dir
        .join(EBPF_TARGET)
        .join("release")
        .join("dataplane"))
}
