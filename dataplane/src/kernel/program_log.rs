//! The programs' debug log records (aya-log), passed on to the process's logger with the
//! numbers they carry named.
use dataplane_common::{Counter, Hook};

/// The reader of the programs' log records (see [`Dataplane::take_logger`]).
pub type ProgramLogger = aya_log::EbpfLogger<ProgramLogNames>;

/// Passes the programs' log records on to the process's logger with the numbers they carry
/// (`hook=N`, `reason=N`: the programs cannot hold tables of names) replaced by names.
pub struct ProgramLogNames;

impl ProgramLogNames {
    /// `hook=0 reason=8` becomes `hook=xdp reason=pass_no_route`.
    pub fn name_numbers(message: &str) -> String {
        message
            .split(' ')
            .map(|word| {
                let named = |value: &str, name: fn(u32) -> Option<&'static str>| {
                    value.parse().ok().and_then(name)
                };
                if let Some(v) = word.strip_prefix("hook=")
                    && let Some(name) = named(v, |h| Hook::from_u32(h).map(Hook::name))
                {
                    return format!("hook={name}");
                }
                if let Some(v) = word.strip_prefix("reason=")
                    && let Some(name) = named(v, |r| Counter::from_u32(r).map(Counter::name))
                {
                    return format!("reason={name}");
                }
                word.to_string()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl log::Log for ProgramLogNames {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        log::logger().enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        let message = Self::name_numbers(&record.args().to_string());
        log::logger().log(
            &log::Record::builder()
                .args(format_args!("{message}"))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        log::logger().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_log_numbers_get_their_names() {
        assert_eq!(
            ProgramLogNames::name_numbers("passed a frame to the kernel: hook=1 reason=8"),
            "passed a frame to the kernel: hook=tc reason=pass_no_route"
        );
        assert_eq!(
            ProgramLogNames::name_numbers("dropped a frame: hook=0 reason=999"),
            "dropped a frame: hook=xdp reason=999"
        );
    }
}
