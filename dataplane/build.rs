//! Embeds a freshly built eBPF object (user-side builds only): the loader can never ship a
//! stale one, and needs no path to find it.
use std::path::{Path, PathBuf};

include!("build_ebpf.rs");

fn main() {
    println!("cargo::rerun-if-env-changed=DATAPLANE_EBPF_OBJECT");
    let for_bpf = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "bpf");
    if for_bpf || std::env::var_os("CARGO_FEATURE_USER").is_none() {
        return; // the no_std build, inside the eBPF build itself
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap();
    for watched in [
        "dataplane-ebpf/src",
        "dataplane-ebpf/Cargo.toml",
        "dataplane-ebpf/Cargo.lock",
        "dataplane/src/shared.rs",
        "dataplane/src/checksum.rs",
        "dataplane/build_ebpf.rs",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(watched).display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("dataplane.bpf.o");
    let object = match build_ebpf(root) {
        Ok(object) => object,
        Err(e) => {
            println!("cargo::error={e}");
            return;
        }
    };
    copy(&object, &out);
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}
