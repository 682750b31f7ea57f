//! The bench's softirq probe, an object of its own (the loader never ships it): time spent in
//! each softirq, per CPU, for the bench's CPU accounting: the kernel charges
//! softirq work done on the way out of a syscall to the task that ran it, and ticks at 250 Hz
//! without IRQ time accounting, so only these tracepoints separate the network stack's own work.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod object;

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};
use dataplane_common::softirq::SOFTIRQ_VECTORS;

/// When the softirq now running on this CPU started (softirqs do not nest on one CPU).
#[map]
static SOFTIRQ_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Nanoseconds spent per softirq vector (NET_TX = 2, NET_RX = 3, ...), per CPU.
#[map]
static SOFTIRQ_NS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SOFTIRQ_VECTORS, 0);

#[raw_tracepoint(tracepoint = "softirq_entry")]
pub fn softirq_entry(_ctx: RawTracePointContext) -> i32 {
    if let Some(start) = SOFTIRQ_START.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array, valid while the program runs; softirqs
        // do not nest on one CPU, so nothing else writes it meanwhile (user space only reads).
        unsafe { *start = bpf_ktime_get_ns() };
    }
    0
}

#[raw_tracepoint(tracepoint = "softirq_exit")]
pub fn softirq_exit(ctx: RawTracePointContext) -> i32 {
    let vector: u64 = ctx.arg(0);
    let (Some(start), Some(total)) = (
        SOFTIRQ_START.get_ptr_mut(0),
        SOFTIRQ_NS.get_ptr_mut(vector as u32),
    ) else {
        return 0;
    };
    // SAFETY: this CPU's slots, as in `softirq_entry`; `SOFTIRQ_NS` is indexed by the vector,
    // which the map lookup bounds-checked.
    unsafe {
        // A zero start means we attached while this softirq already ran: skip its partial time.
        if *start != 0 {
            *total += bpf_ktime_get_ns() - *start;
            *start = 0;
        }
    }
    0
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
