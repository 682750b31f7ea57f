//! From the formats to what the maps must hold: a route table resolved against the system
//! ([`resolve`]), the kernel's routes selected ([`kernel_routes`]), a policy compiled into
//! lookup tables ([`policy`]), services compiled into their maps ([`services`]), stable
//! numbers for egresses and services ([`slots`]), and the smallest change from one map
//! content to another ([`diff`]); every route source merged into one plan ([`sources`]) and
//! the daemon's decision of what to apply on each look ([`reconcile`]). No I/O: the host is
//! asked through [`resolve::System`], so all of it is tested without root.
pub mod diff;
#[cfg(test)]
mod fake_system;
pub mod kernel_routes;
pub mod policy;
pub mod reconcile;
pub mod resolve;
pub mod services;
pub mod slots;
pub mod sources;
pub mod unanswered;

pub use diff::{Diff, diff};
pub use resolve::{Attachment, Plan, VxlanPlan};
