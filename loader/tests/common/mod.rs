//! Helpers shared by the end-to-end tests, one job a module: the test bed fixture ([`bed`]),
//! running the loader binary ([`loader_proc`]), what it says of a host's dataplane
//! ([`queries`]), what the kernel holds ([`kernel`]), and traffic through the workloads
//! ([`traffic`]). Everything is re-exported here: tests `use common::*`.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

mod bed;
mod kernel;
mod loader_proc;
mod queries;
mod traffic;

pub use bed::*;
pub use kernel::*;
pub use loader_proc::*;
pub use queries::*;
pub use traffic::*;
