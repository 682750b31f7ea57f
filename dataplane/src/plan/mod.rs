//! From the formats to what the maps must hold: a route table resolved against the system
//! ([`resolve`]), the kernel's routes selected ([`kernel_routes`]), a policy compiled into
//! lookup tables ([`policy`]), services compiled into their maps ([`services`]), stable
//! numbers for egresses and services ([`slots`]), and the smallest change from one map
//! content to another ([`diff`]).
pub mod diff;
pub mod kernel_routes;
pub mod policy;
pub mod resolve;
pub mod services;
pub mod slots;

pub use diff::{Diff, diff};
pub use resolve::{Attachment, Plan, VxlanPlan};
