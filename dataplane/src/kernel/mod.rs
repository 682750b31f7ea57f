//! The eBPF object in the kernel: loading it ([`object`]), attaching and pinning its programs
//! ([`attach`], [`pins`]), keeping its maps equal to a plan ([`sync`], [`policy_maps`], [`service_maps`]),
//! reading it back from any process ([`inspect`]), running a program on a crafted frame
//! ([`test_run`], on the host of [`synthetic`]; per-path costs: [`path_costs`]) and passing its log records on ([`program_log`]).
pub mod attach;
pub mod error;
mod hash_maps;
pub mod inspect;
pub mod object;
pub mod path_costs;
pub mod pins;
pub mod policy_maps;
pub mod program_log;
pub mod service_maps;
pub mod sync;
pub mod synthetic;
pub mod test_run;

pub use error::DataplaneError;
pub use object::{Dataplane, LoadOptions};
