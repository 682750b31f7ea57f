//! The report's title and what the run was: kernel, modes, rates, repetitions.
use std::fmt::Write;

use crate::results::Results;

pub(super) fn section(r: &Results) -> String {
    let s = &r.settings;
    let mut t = String::new();
    writeln!(t, "# Bench: CPU per packet, kernel vs eBPF dataplanes\n").unwrap();
    writeln!(
        t,
        "Kernel {}, {} CPUs. Modes: {}. UDP (1400-byte datagrams) at {:?} Mbit/s, TCP paced at \
         {:?} Mbit/s and unpaced (`max`), from iperf3; {} repetition(s) of {} s per point. \
         Traffic crosses hosts (client workload on host 0, server on host 1; floor: a bare veth \
         pair). Cells: median (min-max) over repetitions; ⚑ marks a point that missed its \
         rate by more than 2 % in at least one repetition. How every figure was made: the last \
         section.\n",
        r.kernel,
        r.cpus,
        s.modes
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        s.rates_mbps,
        s.tcp_rates_mbps,
        s.repetitions,
        s.duration_s
    )
    .unwrap();
    t
}
