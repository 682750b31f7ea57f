//! Running a routing program once on a crafted frame (BPF_PROG_TEST_RUN): nothing is sent,
//! the verdict and the frame as the program left it come back.
use aya::programs::{TestRun, TestRunOptions};
use dataplane_common::{Hook, maps::program_names};

use super::{error::DataplaneError, object::Dataplane};

impl Dataplane {
    /// Runs the routing program of `hook` once on `frame` (BPF_PROG_TEST_RUN; nothing is sent)
    /// and returns its verdict and the frame as the program left it.
    pub fn run_on_frame(&self, hook: Hook, frame: &[u8]) -> Result<(u32, Vec<u8>), DataplaneError> {
        let name = match hook {
            Hook::Xdp => program_names::XDP_ROUTE,
            Hook::Tc => program_names::TC_ROUTE,
        };
        let program = self.bpf.program(name).ok_or(DataplaneError::Missing {
            kind: "program",
            name,
        })?;
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        };
        let result = match program {
            aya::programs::Program::Xdp(p) => p.test_run(opts),
            aya::programs::Program::SchedClassifier(p) => p.test_run(opts),
            _ => {
                return Err(DataplaneError::Missing {
                    kind: "routing program",
                    name,
                });
            }
        }
        .map_err(|source| DataplaneError::Program { name, source })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }
}
