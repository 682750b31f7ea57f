//! Softirq time per vector, measured in the kernel by the object's raw tracepoint programs
//! (the bench's kernel-level CPU figure).
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
    programs::RawTracePoint,
};

use crate::{
    ebpf::{DataplaneError, OBJECT},
    shared::{SOFTIRQ_NET_RX, SOFTIRQ_NET_TX, map_names, program_names},
};

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
    pub fn start() -> Result<Self, DataplaneError> {
        let mut bpf = Ebpf::load(OBJECT)?;
        for (name, tracepoint) in [
            (program_names::SOFTIRQ_ENTRY, "softirq_entry"),
            (program_names::SOFTIRQ_EXIT, "softirq_exit"),
        ] {
            let program: &mut RawTracePoint = bpf
                .program_mut(name)
                .ok_or(DataplaneError::Missing {
                    kind: "program",
                    name,
                })?
                .try_into()
                .map_err(|source| DataplaneError::Program { name, source })?;
            program
                .load()
                .map_err(|source| DataplaneError::Program { name, source })?;
            program
                .attach(tracepoint)
                .map_err(|source| DataplaneError::Program { name, source })?;
        }
        Ok(Self { bpf })
    }

    pub fn read(&self) -> Result<SoftirqTime, DataplaneError> {
        let name = map_names::SOFTIRQ_NS;
        let err = |source| DataplaneError::Map { name, source };
        let map = self
            .bpf
            .map(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        let ns: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(err)?;
        let sum = |vector: u32| -> Result<u64, DataplaneError> {
            Ok(ns.get(&vector, 0).map_err(err)?.iter().sum())
        };
        Ok(SoftirqTime {
            net_rx_ns: sum(SOFTIRQ_NET_RX)?,
            net_tx_ns: sum(SOFTIRQ_NET_TX)?,
        })
    }
}
