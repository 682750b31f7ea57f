//! Debug logging of why a frame was not forwarded, through aya-log. Off unless the loader is
//! asked for it (`loader run --ebpf-log debug`): the level is a read-only global set at load
//! time, so with logging off the verifier prunes these calls and they cost nothing.
//!
//! Hook and counter go out as numbers (`hook=N reason=N`): a table of names would be pointers
//! in data, which BPF cannot relocate. The loader's log reader puts the names in, from
//! `dataplane_common::{Hook, Counter}`.
use aya_ebpf::EbpfContext;
use aya_log_ebpf::{debug, trace};
use dataplane_common::Hook;

use crate::counters::Outcome;

/// Logs `outcome` of one frame at `hook`: passes and drops at debug level with the counter
/// they were counted under, forwards at trace level.
#[inline(always)]
pub fn log_outcome<C: EbpfContext>(ctx: &C, hook: Hook, outcome: &Outcome) {
    let hook = hook as u32;
    match outcome {
        Outcome::Drop(reason) => {
            debug!(
                ctx,
                "dropped a frame: hook={} reason={}", hook, *reason as u32
            )
        }
        Outcome::Replied(reason) => {
            debug!(
                ctx,
                "answered a frame: hook={} reason={}", hook, *reason as u32
            )
        }
        Outcome::Pass(reason) => debug!(
            ctx,
            "passed a frame to the kernel: hook={} reason={}", hook, *reason as u32
        ),
        Outcome::Redirected { egress, .. } => {
            trace!(
                ctx,
                "forwarded a frame: hook={} out of ifindex {}", hook, *egress
            )
        }
    }
}
