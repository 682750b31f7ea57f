//! The bench's softirq timers (a probe object of their own, never loaded by the loader).

/// Softirq vectors the kernel has (NR_SOFTIRQS) and the two of the network stack.
pub const SOFTIRQ_VECTORS: u32 = 10;
pub const SOFTIRQ_NET_TX: u32 = 2;
pub const SOFTIRQ_NET_RX: u32 = 3;

/// Per-CPU array: nanoseconds spent in each softirq vector.
pub const SOFTIRQ_NS: &str = "SOFTIRQ_NS";
/// The raw tracepoint programs that time them.
pub const SOFTIRQ_ENTRY: &str = "softirq_entry";
pub const SOFTIRQ_EXIT: &str = "softirq_exit";
