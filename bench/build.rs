//! Embeds the softirq probe, the bench's own eBPF object (see `ebpf-build`).
fn main() {
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    ebpf_build::embed(
        manifest.parent().unwrap(),
        "softirq-probe",
        "softirq-probe.bpf.o",
    );
}
