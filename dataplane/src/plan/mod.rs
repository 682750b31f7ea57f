//! From the formats to what the maps must hold: a route table resolved against the system
//! ([`resolve`]), the kernel's routes selected ([`kernel_routes`]), a policy compiled into
//! lookup tables ([`policy`]), each egress's counter slot ([`egress_slots`]), and the smallest change from one map content to another
//! ([`diff`]).
pub mod diff;
pub mod egress_slots;
pub mod kernel_routes;
pub mod policy;
pub mod resolve;

pub use diff::{Diff, diff};
pub use resolve::{Attachment, Plan, VxlanPlan};
