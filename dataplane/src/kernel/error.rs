//! What can go wrong between the loader and the kernel, each error naming the program, map,
//! interface or pin it concerns.
use aya::{
    maps::MapError,
    programs::{ProgramError, links::LinkError},
};

use super::pins::PinError;
use crate::model::route_table::Attach;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("attaching `{program}` ({attach}) to `{ifname}`: {source}")]
    Attach {
        program: &'static str,
        attach: Attach,
        ifname: String,
        source: ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("adding ifindex {ifindex} to the XDP device map: {source}")]
    TxPort {
        ifindex: u32,
        source: aya::maps::xdp::XdpMapError,
    },
    #[error("the object has no {kind} named `{name}`")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error(
        "the pinned map {path} has {what} {pinned}, this loader needs {wanted}: the pinned \
         dataplane was made by an incompatible loader or with other sizes; `loader detach` \
         removes it (traffic stops until the new loader attaches)"
    )]
    PinnedMapMismatch {
        path: String,
        what: &'static str,
        pinned: u32,
        wanted: u32,
    },
    #[error(
        "the table needs {needed} entries in map {map}, which holds {capacity}: not applied \
         (nothing was changed){hint}"
    )]
    MapFull {
        map: &'static str,
        needed: usize,
        capacity: u32,
        hint: &'static str,
    },
    #[error("setting up the programs' log reader: {0}")]
    Logger(#[source] aya_log::Error),
    #[error("pinned link {path}: {source}")]
    PinnedLink { path: String, source: LinkError },
    #[error("pinning the link of `{ifname}` at {path}: {source}")]
    PinLink {
        ifname: String,
        path: String,
        source: aya::pin::PinError,
    },
    #[error("the kernel attached `{ifname}` without a bpf_link, which cannot be pinned: {source}")]
    LinkNotPinnable { ifname: String, source: LinkError },
    #[error(
        "path `{path}` at {hook}: the program returned {got}, not {want}: the frame took another \
         path than the one being measured"
    )]
    PathTookAnotherTurn {
        path: &'static str,
        hook: &'static str,
        want: u32,
        got: u32,
    },
    #[error("reading the kernel's record of a loaded program: {0}")]
    ProgramInfo(#[source] ProgramError),
    #[error("reading the kernel's record of map id {id}: {source}")]
    MapInfo { id: u32, source: MapError },
    #[error(
        "this binary was built without its eBPF object (a placeholder): build it with \
         `cargo xtask build` (or DATAPLANE_BUILD_EBPF=1 cargo build)"
    )]
    NoObject,
}

/// The error of an operation on map `name`.
pub(crate) fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}
