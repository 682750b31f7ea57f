//! Turns a parsed route table into what the maps will hold: interfaces by index, next hops
//! with their MAC addresses, the host's own addresses. All system lookups happen here, before
//! anything is loaded or attached, so a table that cannot be realised changes nothing; every
//! failure names the line of the table it comes from.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Duration,
};

use dataplane_common::{
    NH_FLAG_VETH_PEER, NextHop, NextHopKind,
    checksum::ipv4_fixed_sum,
    vxlan::{VXLAN_OUTER_TTL, VXLAN_OVERHEAD},
};

use crate::{
    model::{
        Ipv4Prefix, LineError,
        route_table::{Attach, Config, Role, Target, VxlanDecl},
    },
    system::netinfo::{self, KernelRoute, Link, NetInfoError},
};

/// How long to wait for ARP to answer for a next hop or workload.
pub const NEIGHBOUR_TIMEOUT: Duration = Duration::from_secs(3);

/// What resolution needs from the system; a trait so that the logic is tested without one.
/// `Sync`: next hops are resolved concurrently, so that N that do not answer cost one timeout.
pub trait System: Sync {
    fn links(&self) -> Result<Vec<Link>, NetInfoError>;
    /// Every IPv4 address with the interface that carries it.
    fn ipv4_addrs(&self) -> Result<Vec<(String, Ipv4Addr)>, NetInfoError>;
    fn neighbour_mac(&self, addr: Ipv4Addr, dev: &str) -> Result<Option<[u8; 6]>, NetInfoError>;
    /// As [`System::neighbour_mac`], without waiting: the table's answer now, the kernel asked
    /// to resolve the neighbour if it has none (its answer arrives as a notification).
    fn neighbour_mac_now(&self, addr: Ipv4Addr, dev: &str)
    -> Result<Option<[u8; 6]>, NetInfoError>;
    /// The routes of the kernel's routing table `table` (as `ip route show table` names it).
    fn kernel_routes(&self, table: &str) -> Result<Vec<KernelRoute>, NetInfoError>;
    /// Every neighbour the host knows a MAC for now, as (address, interface, MAC): read once
    /// per pass of planning, so that known neighbours cost no lookup of their own (only those
    /// missing from it are asked for with [`System::neighbour_mac`]).
    fn neighbour_table(&self) -> Result<Vec<(Ipv4Addr, String, [u8; 6])>, NetInfoError>;
}

/// The current network namespace, read through iproute2.
pub struct LiveSystem;

impl System for LiveSystem {
    fn links(&self) -> Result<Vec<Link>, NetInfoError> {
        netinfo::links()
    }
    fn ipv4_addrs(&self) -> Result<Vec<(String, Ipv4Addr)>, NetInfoError> {
        netinfo::ipv4_addrs()
    }
    fn neighbour_mac(&self, addr: Ipv4Addr, dev: &str) -> Result<Option<[u8; 6]>, NetInfoError> {
        netinfo::resolve_neighbour(addr, dev, NEIGHBOUR_TIMEOUT)
    }
    fn neighbour_mac_now(
        &self,
        addr: Ipv4Addr,
        dev: &str,
    ) -> Result<Option<[u8; 6]>, NetInfoError> {
        netinfo::resolve_neighbour(addr, dev, Duration::ZERO)
    }
    fn kernel_routes(&self, table: &str) -> Result<Vec<KernelRoute>, NetInfoError> {
        netinfo::kernel_routes(table)
    }
    fn neighbour_table(&self) -> Result<Vec<(Ipv4Addr, String, [u8; 6])>, NetInfoError> {
        netinfo::neighbour_table()
    }
}

/// Neighbour MACs already asked for, by address and interface (`None`: no answer).
type KnownNeighbours = std::collections::HashMap<(Ipv4Addr, String), Option<[u8; 6]>>;

/// A [`System`] that asks its inner one once per neighbour and interface (for one pass of
/// planning: an answer, or the lack of one, is kept only as long as the cache).
pub(crate) struct NeighbourCache<'a> {
    inner: &'a dyn System,
    known: std::sync::Mutex<KnownNeighbours>,
    /// Whether the host's neighbour table has been read into `known`.
    table_read: std::sync::Once,
}

/// How many neighbours are asked at once.
const NEIGHBOUR_QUERIES_AT_ONCE: usize = 64;

impl<'a> NeighbourCache<'a> {
    pub(crate) fn new(inner: &'a dyn System) -> Self {
        Self {
            inner,
            known: Default::default(),
            table_read: std::sync::Once::new(),
        }
    }

    /// What is known, the host's neighbour table read in first (once): a neighbour it holds
    /// costs no lookup of its own. A table that cannot be read leaves every neighbour to its
    /// own lookup.
    fn known(&self) -> std::sync::MutexGuard<'_, KnownNeighbours> {
        self.table_read.call_once(|| {
            if let Ok(table) = self.inner.neighbour_table() {
                let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
                for (addr, dev, mac) in table {
                    known.insert((addr, dev), Some(mac));
                }
            }
        });
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for every neighbour of `wanted` not known yet, many at once: a table whose N next
    /// hops do not answer ARP costs one timeout, not N. Errors are left for the lookup that
    /// needs the answer to report.
    fn prefetch(&self, wanted: impl IntoIterator<Item = (Ipv4Addr, String)>) {
        let wanted: std::collections::BTreeSet<(Ipv4Addr, String)> = wanted
            .into_iter()
            .filter(|key| !self.known().contains_key(key))
            .collect();
        let wanted: Vec<_> = wanted.into_iter().collect();
        for batch in wanted.chunks(NEIGHBOUR_QUERIES_AT_ONCE) {
            std::thread::scope(|s| {
                for (addr, dev) in batch {
                    s.spawn(move || {
                        if let Ok(mac) = self.inner.neighbour_mac(*addr, dev) {
                            self.known().insert((*addr, dev.clone()), mac);
                        }
                    });
                }
            });
        }
    }
}

impl System for NeighbourCache<'_> {
    fn links(&self) -> Result<Vec<Link>, NetInfoError> {
        self.inner.links()
    }
    fn ipv4_addrs(&self) -> Result<Vec<(String, Ipv4Addr)>, NetInfoError> {
        self.inner.ipv4_addrs()
    }
    fn neighbour_mac(&self, addr: Ipv4Addr, dev: &str) -> Result<Option<[u8; 6]>, NetInfoError> {
        let key = (addr, dev.to_string());
        if let Some(mac) = self.known().get(&key) {
            return Ok(*mac);
        }
        let mac = self.inner.neighbour_mac(addr, dev)?;
        self.known().insert(key, mac);
        Ok(mac)
    }
    fn neighbour_mac_now(
        &self,
        addr: Ipv4Addr,
        dev: &str,
    ) -> Result<Option<[u8; 6]>, NetInfoError> {
        self.inner.neighbour_mac_now(addr, dev)
    }
    fn kernel_routes(&self, table: &str) -> Result<Vec<KernelRoute>, NetInfoError> {
        self.inner.kernel_routes(table)
    }
    /// What this cache knows (the table it read, and the answers since): a cache over this
    /// one reads no table of its own.
    fn neighbour_table(&self) -> Result<Vec<(Ipv4Addr, String, [u8; 6])>, NetInfoError> {
        Ok(self
            .known()
            .iter()
            .filter_map(|((addr, dev), mac)| Some((*addr, dev.clone(), (*mac)?)))
            .collect())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attachment {
    pub ifname: String,
    pub ifindex: u32,
    pub attach: Attach,
    pub role: Role,
}

/// A route table resolved against the system: exactly what the maps and attachments will be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub attachments: Vec<Attachment>,
    pub routes: BTreeMap<Ipv4Prefix, NextHop>,
    /// Egress interfaces that routes point at: the XDP device map must hold each of them.
    pub tx_ports: BTreeSet<u32>,
    /// This host's own addresses: packets to them are the kernel's (but VXLAN to our port).
    pub host_addrs: BTreeSet<Ipv4Addr>,
    /// This host's tunnel endpoint, if the table has a `vxlan` statement.
    pub vxlan: Option<VxlanPlan>,
    /// The underlay addresses of the hosts the routes lead to (next hops and VTEPs): the only
    /// sources VXLAN is accepted from. A peer reached routed may still send VXLAN here.
    pub peers: BTreeSet<Ipv4Addr>,
    /// Attached workload interfaces whose own address is not routed yet (the workload has not
    /// answered ARP, so its MAC is unknown), by ifindex: the source check still knows the
    /// address as theirs, so that their ARP, which teaches the host their MAC, is not refused.
    pub unresolved_workloads: BTreeMap<u32, Ipv4Addr>,
}

/// Resolves `config` against `system`. Reports every problem, each with its line.
pub fn resolve(config: &Config, system: &dyn System) -> Result<Plan, Vec<LineError>> {
    // Many routes share a next hop (10 000 prefixes behind one neighbour): ask once each.
    let system = &NeighbourCache::new(system);
    let fail = |message: String| vec![LineError { line: 0, message }];
    let links = system.links().map_err(|e| fail(e.to_string()))?;
    let addrs = system.ipv4_addrs().map_err(|e| fail(e.to_string()))?;
    let host_addrs: BTreeSet<Ipv4Addr> = addrs.iter().map(|(_, a)| *a).collect();

    let mut errors = Vec::new();
    let find = |name: &str| links.iter().find(|l| l.name == name);

    let mut attachments = Vec::new();
    for interface in &config.interfaces {
        match find(&interface.name) {
            Some(link) => attachments.push(Attachment {
                ifname: link.name.clone(),
                ifindex: link.ifindex,
                attach: interface.attach,
                role: interface.role,
            }),
            None => errors.push(LineError {
                line: interface.line,
                message: format!(
                    "interface `{}` does not exist in this network namespace",
                    interface.name
                ),
            }),
        }
    }

    let vxlan = match &config.vxlan {
        None => None,
        Some(decl) => match resolve_vxlan(decl, &links, &addrs) {
            Ok(plan) => Some(plan),
            Err(message) => {
                errors.push(LineError {
                    line: decl.line,
                    message,
                });
                errors.sort_by_key(|e| e.line);
                return Err(errors);
            }
        },
    };

    system.prefetch(config.routes.iter().filter_map(|r| match &r.target {
        Target::Remote { via, dev } => Some((*via, dev.clone())),
        Target::Vxlan { vtep, dev, .. } => Some((*vtep, dev.clone())),
        Target::Local { .. } => None,
    }));
    let mut routes = BTreeMap::new();
    let mut peers = BTreeSet::new();
    for route in &config.routes {
        // An undeclared or missing interface was reported above.
        let Some(link) = find(route.target.dev()) else {
            continue;
        };
        match next_hop(
            route.prefix,
            &route.target,
            link,
            &host_addrs,
            vxlan.as_ref(),
            system,
        ) {
            Ok(nh) => {
                routes.insert(route.prefix, nh);
                match &route.target {
                    Target::Remote { via, .. } => peers.insert(*via),
                    Target::Vxlan { vtep, .. } => peers.insert(*vtep),
                    Target::Local { .. } => false,
                };
            }
            Err(message) => errors.push(LineError {
                line: route.line,
                message,
            }),
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    let tx_ports = routes.values().map(|nh| nh.ifindex).collect();
    Ok(Plan {
        attachments,
        routes,
        tx_ports,
        host_addrs,
        vxlan,
        peers,
        unresolved_workloads: BTreeMap::new(),
    })
}

/// This host's tunnel endpoint, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanPlan {
    pub port: u16,
    /// The underlay interface the tunnel runs over: VXLAN is decapsulated from it only.
    pub ifindex: u32,
    pub vnis: BTreeSet<u32>,
    /// The default VNI for routes that name none.
    pub default_vni: u32,
    pub local_ip: Ipv4Addr,
    pub mac: [u8; 6],
}

/// The VTEP MAC a host uses when its table names none: locally administered, derived from
/// the tunnel's source address (02:76 followed by its four bytes), so stable across restarts
/// and predictable for the other hosts' tables.
pub fn default_vtep_mac(local_ip: Ipv4Addr) -> [u8; 6] {
    let o = local_ip.octets();
    [0x02, 0x76, o[0], o[1], o[2], o[3]]
}

fn resolve_vxlan(
    decl: &VxlanDecl,
    links: &[Link],
    addrs: &[(String, Ipv4Addr)],
) -> Result<VxlanPlan, String> {
    let Some(link) = links.iter().find(|l| l.name == decl.dev) else {
        return Err(format!(
            "interface `{}` does not exist in this network namespace",
            decl.dev
        ));
    };
    let local_ip = addrs
        .iter()
        .find(|(dev, _)| *dev == decl.dev)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            format!(
                "interface `{}` has no IPv4 address to source the tunnel from",
                decl.dev
            )
        })?;
    Ok(VxlanPlan {
        port: decl.port,
        ifindex: link.ifindex,
        vnis: decl.vnis.iter().copied().collect(),
        default_vni: decl.vnis[0],
        local_ip,
        mac: decl.mac.unwrap_or_else(|| default_vtep_mac(local_ip)),
    })
}

fn next_hop(
    prefix: Ipv4Prefix,
    target: &Target,
    link: &Link,
    host_addrs: &BTreeSet<Ipv4Addr>,
    vxlan: Option<&VxlanPlan>,
    system: &dyn System,
) -> Result<NextHop, String> {
    let link_mac = link
        .mac
        .ok_or_else(|| format!("interface `{}` has no Ethernet address", link.name))?;
    let neighbour = match target {
        Target::Local { .. } => {
            if prefix.prefix_len() != 32 {
                return Err(format!(
                    "a local route names one workload and must be a /32; {prefix} is not"
                ));
            }
            prefix.addr()
        }
        Target::Remote { via, .. } => *via,
        Target::Vxlan { vtep, .. } => *vtep,
    };
    if host_addrs.contains(&neighbour) {
        return Err(format!(
            "{neighbour} is an address of this host, not a neighbour"
        ));
    }
    let neighbour_mac = system
        .neighbour_mac(neighbour, &link.name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "no MAC address for {neighbour} on `{}`: it did not answer ARP within {} s",
                link.name,
                NEIGHBOUR_TIMEOUT.as_secs()
            )
        })?;
    let base = NextHop {
        ifindex: link.ifindex,
        ..Default::default()
    };
    Ok(match target {
        Target::Local { .. } => NextHop {
            kind: NextHopKind::Local as u32,
            flags: if link.is_veth() { NH_FLAG_VETH_PEER } else { 0 },
            dst_mac: neighbour_mac,
            src_mac: link_mac,
            ..base
        },
        Target::Remote { .. } => NextHop {
            kind: NextHopKind::Remote as u32,
            dst_mac: neighbour_mac,
            src_mac: link_mac,
            ..base
        },
        Target::Vxlan { vtep, mac, vni, .. } => {
            let v = vxlan.expect("the parser only accepts vxlan routes with a vxlan statement");
            let vni = vni.unwrap_or(v.default_vni);
            let (src, dst) = (v.local_ip.octets(), vtep.octets());
            let mtu = u16::try_from(link.mtu).unwrap_or(u16::MAX);
            if u32::from(mtu) <= VXLAN_OVERHEAD + 20 {
                return Err(format!(
                    "`{}` has an MTU of {} bytes, too small for VXLAN",
                    link.name, link.mtu
                ));
            }
            NextHop {
                kind: NextHopKind::Vxlan as u32,
                dst_mac: *mac,
                src_mac: v.mac,
                outer_dst_mac: neighbour_mac,
                outer_src_mac: link_mac,
                outer_src_ip: src,
                outer_dst_ip: dst,
                vni_word: (vni << 8).to_be_bytes(),
                udp_dport: v.port.to_be_bytes(),
                mtu,
                outer_csum_base: ipv4_fixed_sum(VXLAN_OUTER_TTL, 17, src, dst),
                ..base
            }
        }
    })
}

#[cfg(test)]
mod tests;
