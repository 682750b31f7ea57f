//! Loading the eBPF object, attaching its programs, and keeping its maps equal to a [`Plan`].
//!
//! Attachments are fd-based links (XDP through `bpf_link`, TC through tcx). Loaded with
//! [`Dataplane::load`], everything belongs to the process and goes when it ends however it
//! ends (the bench and the program tests work this way). Loaded with
//! [`Dataplane::load_pinned`], maps and links are pinned in a bpffs ([`PinDir`]) and outlive
//! the process: a later load adopts them, reusing the maps (routes and counters carry on) and
//! swapping its programs into the existing links atomically (`BPF_LINK_UPDATE`), so a restart
//! or an upgrade of the loader never leaves an interface without its program.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMapHash, HashMap, LpmTrie, MapData, MapError, MapInfo, lpm_trie::Key},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};

use crate::{
    config::{Attach, Ipv4Prefix},
    pins::{PINNED_MAPS, PinDir, PinError},
    resolve::{Attachment, Plan, VxlanPlan},
    shared::{Ipv4Key, MAX_ROUTES, NextHop, VxlanConfig, map_names, program_names},
};

/// The eBPF object, built by dataplane's build script from `dataplane-ebpf` (never stale).
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dataplane.bpf.o"));

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
    Logger(String),
    #[error("pinned link {path}: {reason}")]
    PinnedLink { path: String, reason: String },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// What the kernel knows the loaded programs and maps by: lets other processes (`loader
/// stats`, the bench) find the live maps of this host.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelIds {
    pub programs: BTreeMap<String, u32>,
    pub maps: BTreeMap<String, u32>,
}

/// Changes applied to the maps by one [`Dataplane::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub routes_set: usize,
    pub routes_removed: usize,
    pub ports_added: usize,
    pub ports_removed: usize,
}

/// Entries to write and entries to delete to take a map from `current` to `desired`.
#[derive(Debug, PartialEq, Eq)]
pub struct Diff<K, V> {
    pub upserts: Vec<(K, V)>,
    pub removals: Vec<K>,
}

/// Computes the smallest change from `current` to `desired`: unchanged entries are not
/// rewritten.
pub fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Diff<K, V> {
    let upserts = desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let removals = current
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .cloned()
        .collect();
    Diff { upserts, removals }
}

/// The hook a routing program runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

/// Choices made at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Capacity of the route map (LPM trie entries).
    pub max_routes: u32,
    /// The programs' log level (aya-log): 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    /// Fixed into the programs at load; off, the verifier removes the logging code.
    pub ebpf_log_level: u8,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_routes: MAX_ROUTES,
            ebpf_log_level: 0,
        }
    }
}

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
                    && let Some(name) = named(v, |h| Some(crate::stats::hook_name(h)))
                {
                    return format!("hook={name}");
                }
                if let Some(v) = word.strip_prefix("reason=")
                    && let Some(name) = named(v, |r| {
                        crate::shared::counter::NAMES.get(r as usize).copied()
                    })
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
}

/// The loaded programs and maps of one host, and the links attaching them.
pub struct Dataplane {
    bpf: Ebpf,
    options: LoadOptions,
    pins: Option<PinDir>,
    /// Links this process attached and pinned; dropping them closes our descriptors only.
    pinned_links: Vec<(PathBuf, PinnedLink)>,
    logger: Option<ProgramLogger>,
}

impl Dataplane {
    /// Loads the object and verifies every program; attaches nothing. Nothing is pinned:
    /// maps and attachments end with the process.
    pub fn load() -> Result<Self, DataplaneError> {
        Self::load_with(None, LoadOptions::default())
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
        loader.map_max_entries(map_names::ROUTES, options.max_routes);
        loader.override_global(aya_log::LEVEL, &options.ebpf_log_level, true);
        if let Some(pins) = pins {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, pins.map(name));
            }
        }
        let mut bpf = loader.load(OBJECT)?;
        let logger = match options.ebpf_log_level {
            0 => None,
            _ => Some(
                ProgramLogger::init_with_logger(&mut bpf, ProgramLogNames)
                    .map_err(|e| DataplaneError::Logger(e.to_string()))?,
            ),
        };
        for name in [program_names::XDP_ROUTE, program_names::XDP_PASS] {
            xdp_program(&mut bpf, name)?
                .load()
                .map_err(|source| DataplaneError::Program { name, source })?;
        }
        tc_program(&mut bpf)?
            .load()
            .map_err(|source| DataplaneError::Program {
                name: program_names::TC_ROUTE,
                source,
            })?;
        Ok(Self {
            bpf,
            options,
            pins: pins.cloned(),
            pinned_links: Vec::new(),
            logger,
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
        let link = self.take_fd_link(undo)?;
        let pinned = link.pin(&path).map_err(|e| DataplaneError::PinnedLink {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.pinned_links.push((path.clone(), pinned));
        Ok((Undo::Unpin(path), false))
    }

    /// Makes the link pinned at `path` run this dataplane's program (one atomic update).
    fn swap_into_pinned_link(&mut self, a: &Attachment, path: &Path) -> Result<(), DataplaneError> {
        let link_err = pinned_link_error(path);
        let link: FdLink = PinnedLink::from_pin(path).map_err(link_err)?.into();
        let fail = |program| attach_error(a, program);
        match a.attach {
            Attach::Xdp | Attach::XdpGeneric => {
                let link = XdpLink::try_from(link).map_err(link_err)?;
                xdp_program(&mut self.bpf, program_names::XDP_ROUTE)?
                    .attach_to_link(link)
                    .map_err(fail(program_names::XDP_ROUTE))?;
            }
            Attach::Tc => {
                let link = SchedClassifierLink::try_from(link).map_err(link_err)?;
                tc_program(&mut self.bpf)?
                    .attach_to_link(link)
                    .map_err(fail(program_names::TC_ROUTE))?;
            }
        }
        Ok(())
    }

    /// Takes a link just attached out of its program's keeping, as a plain fd link to pin.
    fn take_fd_link(&mut self, undo: Undo) -> Result<FdLink, DataplaneError> {
        let not_fd = |e: LinkError| DataplaneError::PinnedLink {
            path: String::new(),
            reason: format!("the kernel attached without a bpf_link, which cannot be pinned: {e}"),
        };
        match undo {
            Undo::Xdp(id) => {
                let program = xdp_program(&mut self.bpf, program_names::XDP_ROUTE)?;
                let link = program
                    .take_link(id)
                    .map_err(|source| DataplaneError::Program {
                        name: program_names::XDP_ROUTE,
                        source,
                    })?;
                FdLink::try_from(link).map_err(not_fd)
            }
            Undo::Tc(id) => {
                let link = tc_program(&mut self.bpf)?.take_link(id).map_err(|source| {
                    DataplaneError::Program {
                        name: program_names::TC_ROUTE,
                        source,
                    }
                })?;
                FdLink::try_from(link).map_err(not_fd)
            }
            Undo::Unpin(_) | Undo::Nothing => unreachable!("attach_one returns program links"),
        }
    }

    fn attach_one(&mut self, a: &Attachment) -> Result<Undo, DataplaneError> {
        let fail = |program| attach_error(a, program);
        match a.attach {
            Attach::Xdp | Attach::XdpGeneric => {
                let mode = if a.attach == Attach::Xdp {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                };
                let id = xdp_program(&mut self.bpf, program_names::XDP_ROUTE)?
                    .attach_to_if_index(a.ifindex, mode)
                    .map_err(fail(program_names::XDP_ROUTE))?;
                Ok(Undo::Xdp(id))
            }
            Attach::Tc => {
                let id = tc_program(&mut self.bpf)?
                    .attach(&a.ifname, TcAttachType::Ingress)
                    .map_err(fail(program_names::TC_ROUTE))?;
                Ok(Undo::Tc(id))
            }
        }
    }

    /// Makes the maps hold exactly the plan. Order keeps every packet's view consistent:
    /// host addresses and egress ports are added before the routes that need them, and
    /// removed after the routes that used them.
    ///
    /// A plan that does not fit a map is refused whole before anything is written
    /// ([`DataplaneError::MapFull`]): a full map never drops part of a table silently.
    pub fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, DataplaneError> {
        self.check_fits(plan)?;
        let mut report = ApplyReport::default();
        sync_set(
            &mut self.bpf,
            map_names::HOST_ADDRS,
            plan.host_addrs.iter().map(|a| a.octets()),
        )?;
        sync_vxlan(&mut self.bpf, plan.vxlan.as_ref())?;

        let mut ports: DevMapHash<&mut MapData> = self.map(map_names::TX_PORTS)?;
        let current_ports: BTreeSet<u32> = ports
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(map_names::TX_PORTS))?;
        for port in plan.tx_ports.difference(&current_ports) {
            ports
                .insert(*port, *port, None, 0)
                .map_err(|source| DataplaneError::TxPort {
                    ifindex: *port,
                    source,
                })?;
            report.ports_added += 1;
        }

        let mut routes: LpmTrie<&mut MapData, Ipv4Key, NextHop> = self.map(map_names::ROUTES)?;
        let current = read_routes(&routes)?;
        let change = diff(&current, &plan.routes);
        for (prefix, nh) in &change.upserts {
            routes
                .insert(&route_key(prefix), *nh, 0)
                .map_err(map_err(map_names::ROUTES))?;
        }
        for prefix in &change.removals {
            routes
                .remove(&route_key(prefix))
                .map_err(map_err(map_names::ROUTES))?;
        }
        report.routes_set = change.upserts.len();
        report.routes_removed = change.removals.len();

        let mut ports: DevMapHash<&mut MapData> = self.map(map_names::TX_PORTS)?;
        for port in current_ports.difference(&plan.tx_ports) {
            ports.remove(*port).map_err(map_err(map_names::TX_PORTS))?;
            report.ports_removed += 1;
        }
        Ok(report)
    }

    /// Refuses a plan with more entries than a map it fills can hold.
    fn check_fits(&self, plan: &Plan) -> Result<(), DataplaneError> {
        let vnis = plan.vxlan.as_ref().map_or(0, |v| v.vnis.len());
        for (map, needed, hint) in [
            (
                map_names::ROUTES,
                plan.routes.len(),
                " (raise it with `loader run --max-routes`)",
            ),
            (map_names::TX_PORTS, plan.tx_ports.len(), ""),
            (map_names::HOST_ADDRS, plan.host_addrs.len(), ""),
            (map_names::VXLAN_VNIS, vnis, ""),
        ] {
            self.ensure_room(map, needed, hint)?;
        }
        Ok(())
    }

    /// Refuses (`MapFull`, with `hint` appended) if map `map` cannot hold `needed` entries.
    pub fn ensure_room(
        &self,
        map: &'static str,
        needed: usize,
        hint: &'static str,
    ) -> Result<(), DataplaneError> {
        let capacity = self.capacity(map)?;
        if needed > capacity as usize {
            return Err(DataplaneError::MapFull {
                map,
                needed,
                capacity,
                hint,
            });
        }
        Ok(())
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

    /// Run time and run count of the routing programs so far, summed over both hooks, as the
    /// kernel's BPF statistics have them (zero unless `kernel.bpf_stats_enabled` is on or a
    /// stats fd is held, see `aya::sys::enable_stats`).
    pub fn run_stats(&self) -> Result<(u64, u64), DataplaneError> {
        let mut time = 0;
        let mut count = 0;
        for name in [program_names::XDP_ROUTE, program_names::TC_ROUTE] {
            let program = self.bpf.program(name).ok_or(DataplaneError::Missing {
                kind: "program",
                name,
            })?;
            let info = program
                .info()
                .map_err(|source| DataplaneError::Program { name, source })?;
            time += info.run_time().as_nanos() as u64;
            count += info.run_count();
        }
        Ok((time, count))
    }

    /// The kernel IDs of the programs and maps.
    pub fn kernel_ids(&self) -> Result<KernelIds, DataplaneError> {
        let mut ids = KernelIds::default();
        for (name, program) in self.bpf.programs() {
            let info = match program.info() {
                Ok(info) => info,
                // The object's other programs (the bench's softirq timers) are not loaded here.
                Err(ProgramError::NotLoaded) => continue,
                Err(source) => {
                    return Err(DataplaneError::Program {
                        name: "info",
                        source,
                    });
                }
            };
            ids.programs.insert(name.to_string(), info.id());
            let map_ids = info
                .map_ids()
                .map_err(|source| DataplaneError::Program {
                    name: "info",
                    source,
                })?
                .unwrap_or_default();
            for id in map_ids {
                let info = MapInfo::from_id(id).map_err(map_err("info"))?;
                if let Some(name) = info.name_as_str() {
                    ids.maps.insert(name.to_string(), id);
                }
            }
        }
        Ok(ids)
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
    Xdp(aya::programs::xdp::XdpLinkId),
    Tc(aya::programs::tc::SchedClassifierLinkId),
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
            Undo::Xdp(id) => {
                if let Ok(p) = xdp_program(bpf, program_names::XDP_ROUTE) {
                    let _ = p.detach(id);
                }
            }
            Undo::Tc(id) => {
                if let Ok(p) = tc_program(bpf) {
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
fn pinned_link_error(path: &Path) -> impl Fn(LinkError) -> DataplaneError + Copy + '_ {
    move |e| DataplaneError::PinnedLink {
        path: path.display().to_string(),
        reason: e.to_string(),
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
        let max_entries = if name == map_names::ROUTES {
            options.max_routes
        } else {
            declared.max_entries()
        };
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

/// The kernel IDs of a pinned dataplane's maps and programs, read from its pins: how other
/// processes find a host's dataplane whether or not a loader runs.
pub fn kernel_ids_from_pins(pins: &PinDir) -> Result<KernelIds, DataplaneError> {
    let mut ids = KernelIds::default();
    for name in PINNED_MAPS {
        let info = MapInfo::from_pin(pins.map(name)).map_err(map_err(name))?;
        ids.maps.insert(name.to_string(), info.id());
    }
    for path in pins.links()? {
        let link_err = pinned_link_error(&path);
        let link: FdLink = PinnedLink::from_pin(&path).map_err(link_err)?.into();
        let info = link.info().map_err(link_err)?;
        let name = match info.link_type().map_err(link_err)? {
            aya::programs::links::LinkType::Xdp => program_names::XDP_ROUTE,
            _ => program_names::TC_ROUTE,
        };
        ids.programs.insert(name.to_string(), info.program_id());
    }
    Ok(ids)
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

fn xdp_program<'a>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, DataplaneError> {
    program_mut(bpf, name)
}

fn tc_program(bpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    program_mut(bpf, program_names::TC_ROUTE)
}

/// Makes the hash map `name`, used as a set (values 1), hold exactly `desired`.
fn sync_set<K: aya::Pod + Ord>(
    bpf: &mut Ebpf,
    name: &'static str,
    desired: impl IntoIterator<Item = K>,
) -> Result<(), DataplaneError> {
    let map = bpf
        .map_mut(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    let mut set: HashMap<&mut MapData, K, u32> = HashMap::try_from(map).map_err(map_err(name))?;
    let current: BTreeMap<K, u32> = set
        .iter()
        .collect::<Result<_, _>>()
        .map_err(map_err(name))?;
    let desired: BTreeMap<K, u32> = desired.into_iter().map(|k| (k, 1)).collect();
    let change = diff(&current, &desired);
    for (key, value) in change.upserts {
        set.insert(key, value, 0).map_err(map_err(name))?;
    }
    for key in change.removals {
        set.remove(&key).map_err(map_err(name))?;
    }
    Ok(())
}

/// Writes this host's VXLAN settings: the VNIs first, then the port that turns decapsulation
/// on (or the port off first, then the VNIs, when VXLAN goes away).
fn sync_vxlan(bpf: &mut Ebpf, vxlan: Option<&VxlanPlan>) -> Result<(), DataplaneError> {
    let vnis: Vec<u32> = vxlan
        .map(|v| v.vnis.iter().copied().collect())
        .unwrap_or_default();
    let config = VxlanConfig {
        port: vxlan.map(|v| v.port.to_be_bytes()).unwrap_or([0, 0]),
        _pad: [0; 2],
    };
    if vxlan.is_some() {
        sync_set(bpf, map_names::VXLAN_VNIS, vnis.iter().copied())?;
    }
    let name = map_names::VXLAN_CONFIG;
    let map = bpf
        .map_mut(name)
        .ok_or(DataplaneError::Missing { kind: "map", name })?;
    let mut array: Array<&mut MapData, VxlanConfig> =
        Array::try_from(map).map_err(map_err(name))?;
    array.set(0, config, 0).map_err(map_err(name))?;
    if vxlan.is_none() {
        sync_set(bpf, map_names::VXLAN_VNIS, vnis)?;
    }
    Ok(())
}

fn route_key(prefix: &Ipv4Prefix) -> Key<Ipv4Key> {
    Key::new(prefix.prefix_len() as u32, prefix.addr().octets())
}

/// Reads a route map (this process's own, or another's opened by ID).
pub fn read_routes<T: std::borrow::Borrow<MapData>>(
    routes: &LpmTrie<T, Ipv4Key, NextHop>,
) -> Result<BTreeMap<Ipv4Prefix, NextHop>, DataplaneError> {
    let mut out = BTreeMap::new();
    for entry in routes.iter() {
        let (key, nh) = entry.map_err(map_err(map_names::ROUTES))?;
        let prefix = Ipv4Prefix::new(Ipv4Addr::from(key.data()), key.prefix_len() as u8)
            .expect("the kernel's LPM trie holds only prefixes this crate wrote");
        out.insert(prefix, nh);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_writes_only_what_changes() {
        let current = BTreeMap::from([(1, 'a'), (2, 'b'), (3, 'c')]);
        let desired = BTreeMap::from([(2, 'b'), (3, 'x'), (4, 'd')]);
        let d = diff(&current, &desired);
        assert_eq!(d.upserts, vec![(3, 'x'), (4, 'd')]);
        assert_eq!(d.removals, vec![1]);
    }

    #[test]
    fn diff_of_equal_maps_is_empty() {
        let m = BTreeMap::from([(1, 'a')]);
        assert_eq!(
            diff(&m, &m),
            Diff {
                upserts: vec![],
                removals: vec![]
            }
        );
    }

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

    #[test]
    fn route_keys_carry_length_and_network_order_address() {
        let key = route_key(&"198.18.2.0/24".parse().unwrap());
        assert_eq!(key.prefix_len(), 24);
        assert_eq!(key.data(), [198, 18, 2, 0]);
    }
}
