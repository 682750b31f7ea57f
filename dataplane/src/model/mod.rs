//! The formats an operator writes or the cluster shares, and their parsers. Pure: no system
//! lookups; every problem names its line, and all of a file's problems are reported at once.
pub mod cluster;
pub mod line_error;
pub mod mac;
pub mod policy;
pub mod prefix;
pub mod route_table;
pub mod services;

pub use line_error::{
    FileError, LineError, all_or_errors, load_file, load_file_as_read, render_line_errors,
    statements,
};
pub use prefix::Ipv4Prefix;
