//! Softirq time per vector, measured in the kernel by the softirq probe's raw tracepoint
//! programs (the bench's kernel-level CPU figure). The probe is an eBPF object of its own,
//! embedded here by the bench's build script; the loader never carries it.
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
    programs::RawTracePoint,
};

use anyhow::{Context, Result, bail};
use dataplane_common::softirq::{
    SOFTIRQ_ENTRY, SOFTIRQ_EXIT, SOFTIRQ_NET_RX, SOFTIRQ_NET_TX, SOFTIRQ_NS, SOFTIRQ_VECTORS,
};

/// The probe object, built by the bench's build script (empty when the eBPF build was not
/// asked for, which [`SoftirqMeter::start`] refuses).
static PROBE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/softirq-probe.bpf.o"));

/// Network softirq time so far, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SoftirqTime {
    pub net_rx_ns: u64,
    pub net_tx_ns: u64,
}

impl SoftirqTime {
    pub fn since(&self, earlier: &SoftirqTime) -> SoftirqTime {
        SoftirqTime {
            net_rx_ns: self.net_rx_ns - earlier.net_rx_ns,
            net_tx_ns: self.net_tx_ns - earlier.net_tx_ns,
        }
    }

    pub fn total_ns(&self) -> u64 {
        self.net_rx_ns + self.net_tx_ns
    }
}

/// The softirq timing programs, attached for as long as this lives.
pub struct SoftirqMeter {
    bpf: Ebpf,
}

impl SoftirqMeter {
    /// Loads the probe and attaches its programs to the softirq tracepoints.
    pub fn start() -> Result<Self> {
        if PROBE.is_empty() {
            bail!(
                "the bench was built without its softirq probe (a placeholder): build it with \
                 `cargo xtask bench` (or DATAPLANE_BUILD_EBPF=1 cargo build)"
            );
        }
        let mut bpf = Ebpf::load(PROBE).context("loading the softirq probe")?;
        for (name, tracepoint) in [
            (SOFTIRQ_ENTRY, "softirq_entry"),
            (SOFTIRQ_EXIT, "softirq_exit"),
        ] {
            let program: &mut RawTracePoint = bpf
                .program_mut(name)
                .with_context(|| format!("the softirq probe has no program `{name}`"))?
                .try_into()
                .with_context(|| format!("`{name}` is not a raw tracepoint program"))?;
            program
                .load()
                .with_context(|| format!("loading `{name}`"))?;
            program
                .attach(tracepoint)
                .with_context(|| format!("attaching `{name}` to {tracepoint}"))?;
        }
        Ok(Self { bpf })
    }

    /// Time so far in softirq `vector`, summed over CPUs.
    fn vector_ns(&self, vector: u32) -> Result<u64> {
        let map = self
            .bpf
            .map(SOFTIRQ_NS)
            .with_context(|| format!("the softirq probe has no map `{SOFTIRQ_NS}`"))?;
        let ns: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Ok(ns
            .get(&vector, 0)
            .with_context(|| format!("reading {SOFTIRQ_NS}[{vector}]"))?
            .iter()
            .sum())
    }

    /// Network softirq time so far, summed over CPUs.
    pub fn read(&self) -> Result<SoftirqTime> {
        Ok(SoftirqTime {
            net_rx_ns: self.vector_ns(SOFTIRQ_NET_RX)?,
            net_tx_ns: self.vector_ns(SOFTIRQ_NET_TX)?,
        })
    }

    /// Time so far in every softirq vector together (what /proc/stat's softirq column
    /// samples), summed over CPUs.
    pub fn read_all_vectors(&self) -> Result<u64> {
        (0..SOFTIRQ_VECTORS).map(|v| self.vector_ns(v)).sum()
    }
}
