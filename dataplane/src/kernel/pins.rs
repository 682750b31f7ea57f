//! Where a host's dataplane lives in a BPF filesystem, so that it outlives the loader.
//!
//! Layout: `<bpffs>/ebpf-dataplane/netns-<cookie>/{maps,links}/...`. The directory is named by
//! the network namespace's cookie, which the kernel never hands out twice (inode numbers of
//! namespaces are reused): a new namespace never adopts the pins of a dead one, and two hosts
//! that are namespaces of one machine never share pins.
//!
//! The bpffs itself (mounted where, and refused where it would not outlive the loader) is
//! `crate::system::bpffs`'s business.
use std::path::{Path, PathBuf};

use dataplane_common::maps::map_names;

use crate::{model::route_table::Attach, system::netns::netns_cookie};

/// Our directory under the bpffs.
const APP_DIR: &str = "ebpf-dataplane";

/// The maps a host's dataplane keeps across loader restarts: everything the routing programs
/// use (routes, ports, addresses, VXLAN settings, policy and its admitted flows, services and
/// their open connections, and the counters, which therefore keep counting across a
/// restart). The bench's softirq timer map is not part of a host's state.
pub const PINNED_MAPS: [&str; 21] = [
    map_names::ROUTES,
    map_names::TX_PORTS,
    map_names::WORKLOAD_SRCS,
    map_names::HOST_ADDRS,
    map_names::COUNTERS,
    map_names::FWD_BY_EGRESS,
    map_names::VXLAN_CONFIG,
    map_names::VXLAN_VNIS,
    map_names::VXLAN_VTEPS,
    map_names::POLICIES,
    map_names::POLICY_PEERS,
    map_names::POLICY_VERDICTS,
    map_names::POLICY_FLOWS,
    map_names::POLICY_NEWFLOWS,
    map_names::POLICY_DENIED,
    map_names::POLICY_ACTIVE,
    map_names::SERVICES,
    map_names::BACKENDS,
    map_names::SERVICE_FLOWS,
    map_names::SERVICE_REPLIES,
    map_names::SERVICES_ACTIVE,
];

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read this network namespace's cookie: {0}")]
    Cookie(std::io::Error),
    #[error(
        "{path} is {problem}: anyone who can write there can unpin the dataplane's links or \
         take their place; not using it (remove it, or make it root's with mode 0700)"
    )]
    Untrusted { path: String, problem: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The pin directory of one host (network namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// The pin directory of the calling thread's network namespace under `bpffs` (which is not
    /// created or mounted here: see `crate::system::bpffs::ensure_bpffs`).
    pub fn for_current_netns(bpffs: &Path) -> Result<Self, PinError> {
        let cookie = netns_cookie().map_err(PinError::Cookie)?;
        Ok(Self::at(
            bpffs.join(APP_DIR).join(format!("netns-{cookie}")),
        ))
    }

    /// A pin directory at an explicit path.
    pub fn at(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True if a dataplane is pinned here.
    pub fn exists(&self) -> bool {
        self.maps_dir().is_dir()
    }

    fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Where the link attaching the routing program to `ifindex` the `attach` way is pinned.
    pub fn link(&self, attach: Attach, ifindex: u32) -> PathBuf {
        self.links_dir().join(format!("{attach}-{ifindex}"))
    }

    /// The pinned links present now.
    pub fn links(&self) -> Result<Vec<PathBuf>, PinError> {
        let dir = self.links_dir();
        match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .map(|e| e.map(|e| e.path()).map_err(io(&dir)))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(PinError::Io {
                path: dir.display().to_string(),
                source,
            }),
        }
    }

    /// Creates the directories (the bpffs must be mounted), mode 0700, and refuses ones that
    /// exist but are not root's alone (see [`trusted`]).
    pub fn create(&self) -> Result<(), PinError> {
        let app = self.root.parent().unwrap_or(&self.root).to_path_buf();
        for dir in [app, self.root.clone(), self.maps_dir(), self.links_dir()] {
            match std::fs::metadata(&dir) {
                Ok(meta) => trusted(&dir, &meta)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    use std::os::unix::fs::DirBuilderExt;
                    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                        Ok(()) => {}
                        // Another loader (another host's) made it meanwhile: check it as found.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                            trusted(&dir, &std::fs::metadata(&dir).map_err(io(&dir))?)?;
                        }
                        Err(e) => return Err(io(&dir)(e)),
                    }
                }
                Err(source) => {
                    return Err(PinError::Io {
                        path: dir.display().to_string(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Unpins everything: the links go first (which detaches the programs from their
    /// interfaces), then the maps. Objects still held by a running process stay until it lets
    /// go of them.
    pub fn remove(&self) -> Result<(), PinError> {
        if !self.root.exists() {
            return Ok(());
        }
        for link in self.links()? {
            std::fs::remove_file(&link).map_err(io(&link))?;
        }
        std::fs::remove_dir_all(&self.root).map_err(io(&self.root))
    }
}

/// Refuses a directory of ours that someone other than root owns or can write to.
fn trusted(dir: &Path, meta: &std::fs::Metadata) -> Result<(), PinError> {
    use std::os::unix::fs::MetadataExt;
    let problem = if !meta.is_dir() {
        Some("not a directory".to_string())
    } else if meta.uid() != 0 {
        Some(format!("owned by uid {}, not root", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "writable by others (mode {:o})",
            meta.mode() & 0o777
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(PinError::Untrusted {
            path: dir.display().to_string(),
            problem,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pinned_map_name_fits_the_kernels_fifteen_characters() {
        // The kernel keeps 15 characters of a map's name: a longer one would not be found
        // by name among a running program's maps (`Dataplane::kernel_ids`).
        for name in PINNED_MAPS {
            assert!(name.len() <= 15, "{name}: longer than the kernel keeps");
        }
    }

    #[test]
    fn a_directory_others_can_write_to_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dpt-pins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = trusted(&dir, &std::fs::metadata(&dir).unwrap());
        std::fs::remove_dir(&dir).unwrap();
        assert!(
            matches!(refused, Err(PinError::Untrusted { .. })),
            "{refused:?}"
        );
        // Root's, and writable by root alone (as / is on any host this runs on).
        assert!(trusted(Path::new("/"), &std::fs::metadata("/").unwrap()).is_ok());
    }

    #[test]
    fn pin_paths_name_the_attach_kind_and_ifindex() {
        let pins = PinDir::at("/sys/fs/bpf/ebpf-dataplane/netns-7".into());
        assert_eq!(
            pins.link(Attach::Tc, 12),
            Path::new("/sys/fs/bpf/ebpf-dataplane/netns-7/links/tc-12")
        );
        assert_eq!(
            pins.link(Attach::XdpGeneric, 3),
            Path::new("/sys/fs/bpf/ebpf-dataplane/netns-7/links/xdp-generic-3")
        );
        assert_eq!(
            pins.map("ROUTES"),
            Path::new("/sys/fs/bpf/ebpf-dataplane/netns-7/maps/ROUTES")
        );
    }
}
