//! Attaching the routing program to the plan's interfaces, through pinned links that outlive
//! the loader: adopted (program swapped in atomically) where they exist, made and pinned where
//! not, released where the plan no longer names them; undone on failure.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use aya::programs::{
    ProgramError, TcAttachType, XdpMode,
    links::{FdLink, LinkError, PinnedLink},
    tc::SchedClassifierLink,
    xdp::XdpLink,
};

use super::{
    error::DataplaneError,
    object::{Dataplane, routing_program, tc_program, xdp_program},
    pins::PinError,
};
use crate::{model::route_table::Attach, plan::Attachment};

/// How [`Dataplane::attach`] found each interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachReport {
    /// Interfaces whose pinned link now runs this loader's program (swapped atomically).
    pub adopted: Vec<String>,
    /// Interfaces attached anew.
    pub attached: Vec<String>,
    /// Pinned links of interfaces the table no longer names, or whose interface is gone:
    /// unpinned (which detaches them).
    pub released: Vec<PathBuf>,
    /// Interfaces that could not be attached (by [`Dataplane::update_attachments`], which
    /// attaches each on its own), and why.
    pub failed: Vec<(String, String)>,
}

impl Dataplane {
    /// Attaches the routing program to every interface of the plan. Pinned, an interface
    /// whose link is already pinned keeps that link and gets this program swapped in
    /// atomically; new links are pinned; pinned links the plan no longer names are released
    /// once the rest is in place. On any failure the attachments made anew so far are undone
    /// before the error returns (swapped links keep running the new program, which uses the
    /// same maps).
    pub fn attach(&mut self, attachments: &[Attachment]) -> Result<AttachReport, DataplaneError> {
        let mut report = AttachReport::default();
        let mut done: Vec<Undo> = Vec::new();
        for a in attachments {
            match self.attach_or_adopt(a) {
                Ok((undo, adopted)) => {
                    done.push(undo);
                    let list = if adopted {
                        &mut report.adopted
                    } else {
                        &mut report.attached
                    };
                    list.push(a.ifname.clone());
                }
                Err(e) => {
                    for undo in done {
                        undo.run(self);
                    }
                    return Err(e);
                }
            }
        }
        if let Some(pins) = &self.pins {
            let keep: BTreeSet<PathBuf> = attachments
                .iter()
                .map(|a| pins.link(a.attach, a.ifindex))
                .collect();
            for path in pins.links()? {
                if !keep.contains(&path) {
                    remove_pin(&path)?;
                    report.released.push(path);
                }
            }
        }
        Ok(report)
    }

    /// Moves the attachments from `before` (what this dataplane attached) to `after`, live:
    /// new interfaces attached (pinned), gone ones released; the others are left running
    /// untouched. Each new interface is attached on its own: one that fails (listed in the
    /// report's `failed`) holds up no other, and is tried again by the caller. An error only
    /// when a gone interface's pin cannot be removed.
    pub fn update_attachments(
        &mut self,
        before: &[Attachment],
        after: &[Attachment],
    ) -> Result<AttachReport, DataplaneError> {
        let mut report = AttachReport::default();
        for a in after.iter().filter(|a| !before.contains(a)) {
            match self.attach_or_adopt(a) {
                Ok(_) => report.attached.push(a.ifname.clone()),
                Err(e) => report.failed.push((a.ifname.clone(), e.to_string())),
            }
        }
        let Some(pins) = self.pins.clone() else {
            return Ok(report);
        };
        for a in before.iter().filter(|a| !after.contains(a)) {
            let path = pins.link(a.attach, a.ifindex);
            // Another attachment of `after` may share the pin (same interface, other role).
            if after.iter().any(|b| pins.link(b.attach, b.ifindex) == path) {
                continue;
            }
            self.pinned_links.retain(|(p, _)| *p != path);
            if path.exists() {
                remove_pin(&path)?;
            }
            report.released.push(path);
        }
        Ok(report)
    }

    /// Attaches `a`, through its pinned link if there is one. Returns how to undo it and
    /// whether an existing link was adopted.
    fn attach_or_adopt(&mut self, a: &Attachment) -> Result<(Undo, bool), DataplaneError> {
        let Some(pins) = self.pins.clone() else {
            return Ok((self.attach_one(a)?, false));
        };
        let path = pins.link(a.attach, a.ifindex);
        if path.exists() {
            match self.swap_into_pinned_link(a, &path) {
                Ok(()) => return Ok((Undo::Nothing, true)),
                // A link whose interface went away (the kernel answers ENOLINK), or that is
                // not ours: released, then attached anew below.
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "pinned link unusable; attaching anew");
                    remove_pin(&path)?;
                }
            }
        }
        let undo = self.attach_one(a)?;
        let link = self.take_fd_link(undo, &a.ifname)?;
        let pinned = link.pin(&path).map_err(|source| DataplaneError::PinLink {
            ifname: a.ifname.clone(),
            path: path.display().to_string(),
            source,
        })?;
        self.pinned_links.push((path.clone(), pinned));
        Ok((Undo::Unpin(path), false))
    }

    /// Makes the link pinned at `path` run this dataplane's program (one atomic update).
    fn swap_into_pinned_link(&mut self, a: &Attachment, path: &Path) -> Result<(), DataplaneError> {
        let link_err = pinned_link_error(path);
        let link: FdLink = PinnedLink::from_pin(path).map_err(link_err)?.into();
        let name = routing_program(a.attach, a.role);
        let fail = attach_error(a, name);
        match a.attach {
            Attach::Xdp | Attach::XdpGeneric => {
                let link = XdpLink::try_from(link).map_err(link_err)?;
                xdp_program(&mut self.bpf, name)?
                    .attach_to_link(link)
                    .map_err(fail)?;
            }
            Attach::Tc => {
                let link = SchedClassifierLink::try_from(link).map_err(link_err)?;
                tc_program(&mut self.bpf, name)?
                    .attach_to_link(link)
                    .map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Takes a link just attached out of its program's keeping, as a plain fd link to pin.
    fn take_fd_link(&mut self, undo: Undo, ifname: &str) -> Result<FdLink, DataplaneError> {
        let not_fd = |source: LinkError| DataplaneError::LinkNotPinnable {
            ifname: ifname.to_string(),
            source,
        };
        let taken = |name| move |source| DataplaneError::Program { name, source };
        match undo {
            Undo::Xdp(name, id) => {
                let link = xdp_program(&mut self.bpf, name)?
                    .take_link(id)
                    .map_err(taken(name))?;
                FdLink::try_from(link).map_err(not_fd)
            }
            Undo::Tc(name, id) => {
                let link = tc_program(&mut self.bpf, name)?
                    .take_link(id)
                    .map_err(taken(name))?;
                FdLink::try_from(link).map_err(not_fd)
            }
            Undo::Unpin(_) | Undo::Nothing => unreachable!("attach_one returns program links"),
        }
    }

    fn attach_one(&mut self, a: &Attachment) -> Result<Undo, DataplaneError> {
        let name = routing_program(a.attach, a.role);
        let fail = attach_error(a, name);
        match a.attach {
            Attach::Xdp | Attach::XdpGeneric => {
                let mode = if a.attach == Attach::Xdp {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                };
                let id = xdp_program(&mut self.bpf, name)?
                    .attach_to_if_index(a.ifindex, mode)
                    .map_err(fail)?;
                Ok(Undo::Xdp(name, id))
            }
            Attach::Tc => {
                let id = tc_program(&mut self.bpf, name)?
                    .attach(&a.ifname, TcAttachType::Ingress)
                    .map_err(fail)?;
                Ok(Undo::Tc(name, id))
            }
        }
    }
}

/// The error of attaching `program` for `a`.
fn attach_error(
    a: &Attachment,
    program: &'static str,
) -> impl FnOnce(ProgramError) -> DataplaneError {
    let ifname = a.ifname.clone();
    let attach = a.attach;
    move |source| DataplaneError::Attach {
        program,
        attach,
        ifname,
        source,
    }
}

/// What to undo for one attachment when a later one fails.
enum Undo {
    /// A link of the program named here, attached by this process.
    Xdp(&'static str, aya::programs::xdp::XdpLinkId),
    Tc(&'static str, aya::programs::tc::SchedClassifierLinkId),
    /// A link attached and pinned by this process: unpin it and close our descriptor.
    Unpin(PathBuf),
    /// A pinned link adopted: it keeps running, now with this process's program.
    Nothing,
}

impl Undo {
    fn run(self, dataplane: &mut Dataplane) {
        // Best effort: unpinned links are also released when the Dataplane is dropped.
        let bpf = &mut dataplane.bpf;
        match self {
            Undo::Xdp(name, id) => {
                if let Ok(p) = xdp_program(bpf, name) {
                    let _ = p.detach(id);
                }
            }
            Undo::Tc(name, id) => {
                if let Ok(p) = tc_program(bpf, name) {
                    let _ = p.detach(id);
                }
            }
            Undo::Unpin(path) => {
                let _ = std::fs::remove_file(&path);
                dataplane.pinned_links.retain(|(p, _)| *p != path);
            }
            Undo::Nothing => {}
        }
    }
}

/// The error of using the link pinned at `path`.
pub(super) fn pinned_link_error(path: &Path) -> impl Fn(LinkError) -> DataplaneError + Copy + '_ {
    move |source| DataplaneError::PinnedLink {
        path: path.display().to_string(),
        source,
    }
}

fn remove_pin(path: &Path) -> Result<(), DataplaneError> {
    std::fs::remove_file(path).map_err(|source| {
        DataplaneError::Pins(PinError::Io {
            path: path.display().to_string(),
            source,
        })
    })
}
