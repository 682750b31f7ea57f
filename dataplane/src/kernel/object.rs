//! The eBPF object: loaded, its programs verified, its maps created or adopted from pins.
//!
//! Attachments are fd-based links (XDP through `bpf_link`, TC through tcx). Loaded with
//! [`Dataplane::load`], everything belongs to the process and goes when it ends however it
//! ends (the bench and the program tests work this way). Loaded with
//! [`Dataplane::load_pinned`], maps and links are pinned in a bpffs ([`PinDir`]) and outlive
//! the process: a later load adopts them, reusing the maps (routes and counters carry on) and
//! swapping its programs into the existing links atomically (`BPF_LINK_UPDATE`), so a restart
//! or an upgrade of the loader never leaves an interface without its program.
use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapError, MapInfo},
    programs::{ProgramError, SchedClassifier, Xdp, links::PinnedLink},
};
use dataplane_common::maps::{
    MAX_ROUTES, MAX_SERVICE_BACKENDS, MAX_SERVICE_FLOWS, MAX_SERVICES, map_names, program_names,
};

use super::{
    error::{DataplaneError, map_err},
    pins::{PINNED_MAPS, PinDir},
    program_log::{ProgramLogNames, ProgramLogger},
};
use crate::{
    model::route_table::{Attach, Role},
    plan::services::CompiledServices,
};

/// The eBPF object, built by dataplane's build script from `dataplane-ebpf` (never stale;
/// empty when the build was not asked for, which [`Dataplane::load`] refuses).
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dataplane.bpf.o"));

/// Choices made at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Capacity of the route map (LPM trie entries).
    pub max_routes: u32,
    /// Capacities of the service maps: services, backends (all services' together), and
    /// connections to services (each of the two flow maps).
    pub max_services: u32,
    pub max_service_backends: u32,
    pub max_service_flows: u32,
    /// The programs' log level (aya-log): 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    /// Fixed into the programs at load; off, the verifier removes the logging code.
    pub ebpf_log_level: u8,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_routes: MAX_ROUTES,
            max_services: MAX_SERVICES,
            max_service_backends: MAX_SERVICE_BACKENDS,
            max_service_flows: MAX_SERVICE_FLOWS,
            ebpf_log_level: 0,
        }
    }
}

impl LoadOptions {
    /// The maps whose capacity these options set, with it.
    pub fn sized_maps(&self) -> [(&'static str, u32); 5] {
        [
            (map_names::ROUTES, self.max_routes),
            (map_names::SERVICES, self.max_services),
            (map_names::BACKENDS, self.max_service_backends),
            (map_names::SERVICE_FLOWS, self.max_service_flows),
            (map_names::SERVICE_REPLIES, self.max_service_flows),
        ]
    }
}

/// The loaded programs and maps of one host, and the links attaching them.
pub struct Dataplane {
    pub(super) bpf: Ebpf,
    pub(super) options: LoadOptions,
    pub(super) pins: Option<PinDir>,
    /// Links this process attached and pinned; dropping them closes our descriptors only.
    pub(super) pinned_links: Vec<(PathBuf, PinnedLink)>,
    pub(super) logger: Option<ProgramLogger>,
    /// What this process last wrote into the service maps (their only writer: one loader per
    /// host), so that a change is diffed against it instead of reading every entry back.
    pub(super) services: Option<CompiledServices>,
}

impl Dataplane {
    /// Loads the object and verifies every program; attaches nothing. Nothing is pinned:
    /// maps and attachments end with the process.
    pub fn load() -> Result<Self, DataplaneError> {
        Self::load_with(None, LoadOptions::default())
    }

    /// As [`Dataplane::load`], with the choices of `options` (a route map of another size).
    pub fn load_unpinned(options: LoadOptions) -> Result<Self, DataplaneError> {
        Self::load_with(None, options)
    }

    /// Loads the object with its maps pinned in `pins`, reusing the maps already pinned there
    /// (their entries and counters carry on). Refuses, changing nothing, if a pinned map does
    /// not have the layout and size this object and `options` need.
    pub fn load_pinned(pins: &PinDir, options: LoadOptions) -> Result<Self, DataplaneError> {
        check_pinned_maps(pins, options)?;
        pins.create()?;
        Self::load_with(Some(pins), options)
    }

    fn load_with(pins: Option<&PinDir>, options: LoadOptions) -> Result<Self, DataplaneError> {
        let mut loader = EbpfLoader::new();
        for (name, capacity) in options.sized_maps() {
            loader.map_max_entries(name, capacity);
        }
        loader.override_global(aya_log::LEVEL, &options.ebpf_log_level, true);
        if let Some(pins) = pins {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        if OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let mut bpf = loader.load(OBJECT)?;
        let logger = match options.ebpf_log_level {
            0 => None,
            _ => Some(
                ProgramLogger::init_with_logger(&mut bpf, ProgramLogNames)
                    .map_err(DataplaneError::Logger)?,
            ),
        };
        for name in [
            program_names::XDP_WORKLOAD,
            program_names::XDP_UNDERLAY,
            program_names::XDP_PASS,
        ] {
            xdp_program(&mut bpf, name)?
                .load()
                .map_err(|source| DataplaneError::Program { name, source })?;
        }
        for name in [program_names::TC_WORKLOAD, program_names::TC_UNDERLAY] {
            tc_program(&mut bpf, name)?
                .load()
                .map_err(|source| DataplaneError::Program { name, source })?;
        }
        Ok(Self {
            bpf,
            options,
            pins: pins.cloned(),
            pinned_links: Vec::new(),
            logger,
            services: None,
        })
    }

    /// The reader of the programs' log records, when loaded with a log level: poll its fd and
    /// call `flush`, which hands the records to the `log` crate.
    pub fn take_logger(&mut self) -> Option<ProgramLogger> {
        self.logger.take()
    }

    /// The sizes this dataplane was loaded with.
    pub fn options(&self) -> LoadOptions {
        self.options
    }

    /// The number of entries map `name` holds at most.
    pub fn capacity(&self, name: &'static str) -> Result<u32, DataplaneError> {
        let map = self
            .bpf
            .map(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        let fd = match map {
            aya::maps::Map::LpmTrie(m)
            | aya::maps::Map::HashMap(m)
            | aya::maps::Map::DevMapHash(m)
            | aya::maps::Map::Array(m)
            | aya::maps::Map::PerCpuArray(m)
            | aya::maps::Map::PerCpuHashMap(m) => m,
            _ => {
                return Err(DataplaneError::Missing {
                    kind: "sized map",
                    name,
                });
            }
        };
        Ok(fd.info().map_err(map_err(name))?.max_entries())
    }

    pub(crate) fn map<'a, M>(&'a mut self, name: &'static str) -> Result<M, DataplaneError>
    where
        M: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let map = self
            .bpf
            .map_mut(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        M::try_from(map).map_err(map_err(name))
    }
}

/// Checks that every map already pinned in `pins` has the key size, value size and capacity
/// this object (with `options`) declares, so that programs are never loaded against a map of
/// another layout.
fn check_pinned_maps(pins: &PinDir, options: LoadOptions) -> Result<(), DataplaneError> {
    let object = aya_obj::Object::parse(OBJECT)
        .map_err(|e| DataplaneError::Load(aya::EbpfError::ParseError(e)))?;
    for name in PINNED_MAPS {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        let pinned = MapInfo::from_pin(&path).map_err(map_err(name))?;
        let declared = object
            .maps
            .get(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        let max_entries = options
            .sized_maps()
            .into_iter()
            .find(|(sized, _)| *sized == name)
            .map_or(declared.max_entries(), |(_, capacity)| capacity);
        for (what, have, want) in [
            ("key size", pinned.key_size(), declared.key_size()),
            ("value size", pinned.value_size(), declared.value_size()),
            ("capacity", pinned.max_entries(), max_entries),
        ] {
            if have != want {
                return Err(DataplaneError::PinnedMapMismatch {
                    path: path.display().to_string(),
                    what,
                    pinned: have,
                    wanted: want,
                });
            }
        }
    }
    Ok(())
}

/// The loaded program `name` as its type `P` (`Xdp`, `SchedClassifier`).
fn program_mut<'a, P>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, DataplaneError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = bpf.program_mut(name).ok_or(DataplaneError::Missing {
        kind: "program",
        name,
    })?;
    program
        .try_into()
        .map_err(|source| DataplaneError::Program { name, source })
}

pub(super) fn xdp_program<'a>(
    bpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut Xdp, DataplaneError> {
    program_mut(bpf, name)
}

pub(super) fn tc_program<'a>(
    bpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    program_mut(bpf, name)
}

/// The routing program for a hook and the role of the interface it runs on.
pub fn routing_program(attach: Attach, role: Role) -> &'static str {
    match (attach, role) {
        (Attach::Xdp | Attach::XdpGeneric, Role::Workload) => program_names::XDP_WORKLOAD,
        (Attach::Xdp | Attach::XdpGeneric, Role::Underlay) => program_names::XDP_UNDERLAY,
        (Attach::Tc, Role::Workload) => program_names::TC_WORKLOAD,
        (Attach::Tc, Role::Underlay) => program_names::TC_UNDERLAY,
    }
}
