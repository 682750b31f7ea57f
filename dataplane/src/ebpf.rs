//! Loading the eBPF object, attaching its programs, and keeping its maps equal to a [`Plan`].
//!
//! Attachments are fd-based links (XDP through `bpf_link`, TC through tcx), owned by the
//! [`Dataplane`]: dropping it, or the process ending however it ends, detaches everything.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::{
    Ebpf,
    maps::{Array, DevMapHash, HashMap, LpmTrie, MapData, MapError, MapInfo, lpm_trie::Key},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
    },
};

use crate::{
    config::{Attach, Ipv4Prefix},
    resolve::{Attachment, Plan, VxlanPlan},
    shared::{Ipv4Key, NextHop, VxlanConfig, map_names, program_names},
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

/// The loaded programs and maps of one host, and the links attaching them.
pub struct Dataplane {
    bpf: Ebpf,
}

impl Dataplane {
    /// Loads the object and verifies every program; attaches nothing.
    pub fn load() -> Result<Self, DataplaneError> {
        let mut bpf = Ebpf::load(OBJECT)?;
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
        Ok(Self { bpf })
    }

    /// Attaches the routing program to every interface of the plan. On any failure the
    /// attachments made so far are undone before the error returns.
    pub fn attach(&mut self, attachments: &[Attachment]) -> Result<(), DataplaneError> {
        let mut done: Vec<Undo> = Vec::new();
        for a in attachments {
            match self.attach_one(a) {
                Ok(undo) => done.push(undo),
                Err(e) => {
                    for undo in done {
                        undo.run(&mut self.bpf);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn attach_one(&mut self, a: &Attachment) -> Result<Undo, DataplaneError> {
        let fail = |program: &'static str| {
            let ifname = a.ifname.clone();
            let attach = a.attach;
            move |source| DataplaneError::Attach {
                program,
                attach,
                ifname,
                source,
            }
        };
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
    pub fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, DataplaneError> {
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

    fn map<'a, M>(&'a mut self, name: &'static str) -> Result<M, DataplaneError>
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

/// What to undo for one attachment when a later one fails.
enum Undo {
    Xdp(aya::programs::xdp::XdpLinkId),
    Tc(aya::programs::tc::SchedClassifierLinkId),
}

impl Undo {
    fn run(self, bpf: &mut Ebpf) {
        // Best effort: the links are also released when the Dataplane is dropped.
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
        }
    }
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
    fn route_keys_carry_length_and_network_order_address() {
        let key = route_key(&"198.18.2.0/24".parse().unwrap());
        assert_eq!(key.prefix_len(), 24);
        assert_eq!(key.data(), [198, 18, 2, 0]);
    }
}
