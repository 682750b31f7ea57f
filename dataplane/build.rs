//! Embeds the dataplane's eBPF object (see `ebpf-build`: built fresh when asked, so the
//! loader can never ship a stale one, and needs no path to find it).
fn main() {
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    ebpf_build::embed(manifest.parent().unwrap(), "dataplane", "dataplane.bpf.o");
}
