//! Running a routing program once on a crafted frame (BPF_PROG_TEST_RUN): nothing is sent,
//! the verdict and the frame as the program left it come back.
use aya::programs::{TestRun, TestRunOptions};
use dataplane_common::Hook;

use super::{
    error::DataplaneError,
    object::{Dataplane, routing_program},
};
use crate::model::route_table::{Attach, Role};

impl Dataplane {
    /// Runs the routing program of `hook` for an interface facing `role` once on `frame`
    /// (BPF_PROG_TEST_RUN; nothing is sent) and returns its verdict and the frame as the
    /// program left it. The frame arrives on the test's loopback interface (ifindex 1).
    pub fn run_on_frame(
        &self,
        hook: Hook,
        role: Role,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>), DataplaneError> {
        let (verdict, out, _) = self.test_run(hook, role, frame)?;
        Ok((verdict, out))
    }

    /// As [`Dataplane::run_on_frame`], returning the verdict and how long the program ran (the
    /// kernel's own timing of the one run).
    pub fn time_on_frame(
        &self,
        hook: Hook,
        role: Role,
        frame: &[u8],
    ) -> Result<(u32, std::time::Duration), DataplaneError> {
        let (verdict, _, took) = self.test_run(hook, role, frame)?;
        Ok((verdict, took))
    }

    fn test_run(
        &self,
        hook: Hook,
        role: Role,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>, std::time::Duration), DataplaneError> {
        let attach = match hook {
            Hook::Xdp => Attach::Xdp,
            Hook::Tc => Attach::Tc,
        };
        let name = routing_program(attach, role);
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
        Ok((result.return_value, out, result.duration))
    }
}
