//! The user-side dataplane library, in the order data flows through it:
//!
//! - [`model`]: the text formats (route table, policy, cluster records) and their parsers;
//!   pure, every problem reported with its line;
//! - [`plan`]: what the maps should hold, resolved against the system (interfaces, next hops'
//!   MACs), the kernel's routes selected, policy compiled, and the difference to apply;
//! - [`system`]: the host around the programs: network namespaces, links, addresses and
//!   neighbours, workload wiring, the loader's state records;
//! - [`kernel`]: the eBPF object itself: load, attach and pin, keep the maps equal to a plan,
//!   read counters and routes back, run a program on a crafted frame.
//!
//! The layouts shared with the programs are in `dataplane-common`.
pub mod kernel;
pub mod model;
pub mod plan;
pub mod system;

pub use dataplane_common as common;
