//! Keeping the maps equal to a [`Plan`]: whole-plan capacity check first, then the smallest
//! change, in an order that keeps every packet's view consistent.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::{
    Ebpf,
    maps::{
        Array, DevMapHash, LpmTrie, MapData, MapError, PerCpuArray, PerCpuValues, lpm_trie::Key,
    },
    sys::SyscallError,
    util::nr_cpus,
};
use dataplane_common::{
    Ipv4Key, NextHop, NextHopKind,
    counters::EgressCount,
    maps::{MAX_EGRESS_SLOTS, map_names},
    vxlan::VxlanConfig,
};

use super::{
    error::{DataplaneError, map_err},
    hash_maps::{missing, put_in, read_hash, take_out},
    object::Dataplane,
};
use crate::{
    model::Ipv4Prefix,
    plan::{Plan, VxlanPlan, slots},
};

/// Changes applied to the maps by one [`Dataplane::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub routes_set: usize,
    pub routes_removed: usize,
    pub ports_added: usize,
    pub ports_removed: usize,
}

impl Dataplane {
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
        sync_set(
            &mut self.bpf,
            map_names::VXLAN_VTEPS,
            plan.peers.iter().map(|a| a.octets()),
        )?;

        let routes: LpmTrie<&mut MapData, Ipv4Key, NextHop> = self.map(map_names::ROUTES)?;
        let current = read_routes(&routes)?;
        let current_slots: BTreeMap<u32, u32> = current
            .values()
            .map(|nh| (nh.ifindex, nh.egress_slot))
            .collect();
        // Every interface a route leaves by (which the device map holds too, but for a plan
        // that leaves it out on purpose to test a missing port).
        let egresses: BTreeSet<u32> = plan.routes.values().map(|nh| nh.ifindex).collect();
        let slots = slots::assign(&current_slots, &egresses, MAX_EGRESS_SLOTS).ok_or(
            DataplaneError::MapFull {
                map: map_names::FWD_BY_EGRESS,
                needed: current_slots.len() + egresses.len(),
                capacity: MAX_EGRESS_SLOTS,
                hint: "",
            },
        )?;

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
        for (ifindex, slot) in &slots {
            if current_slots.get(ifindex) != Some(slot) {
                self.label_egress_slot(*slot, *ifindex)?;
            }
        }

        // A source the fast path vouches for must still be the interface's when routes change:
        // stale entries go before the routes change, new ones come after.
        let srcs = map_names::WORKLOAD_SRCS;
        let sources = workload_sources(plan);
        let (kept, stale): (BTreeMap<u32, Ipv4Key>, BTreeMap<u32, Ipv4Key>) =
            read_hash::<u32, Ipv4Key>(&mut self.bpf, srcs)?
                .into_iter()
                .partition(|(ifindex, addr)| sources.get(ifindex) == Some(addr));
        take_out::<u32, Ipv4Key>(&mut self.bpf, srcs, stale.keys())?;

        let mut routes: LpmTrie<&mut MapData, Ipv4Key, NextHop> = self.map(map_names::ROUTES)?;
        let with_slot = |nh: &NextHop| NextHop {
            egress_slot: slots[&nh.ifindex],
            ..*nh
        };
        for (prefix, nh) in &plan.routes {
            let nh = with_slot(nh);
            if current.get(prefix) != Some(&nh) {
                routes
                    .insert(&route_key(prefix), nh, 0)
                    .map_err(map_err(map_names::ROUTES))?;
                report.routes_set += 1;
            }
        }
        for prefix in current.keys().filter(|p| !plan.routes.contains_key(*p)) {
            routes
                .remove(&route_key(prefix))
                .map_err(map_err(map_names::ROUTES))?;
            report.routes_removed += 1;
        }

        put_in(&mut self.bpf, srcs, &kept, &sources)?;

        let mut ports: DevMapHash<&mut MapData> = self.map(map_names::TX_PORTS)?;
        for port in current_ports.difference(&plan.tx_ports) {
            ports.remove(*port).map_err(map_err(map_names::TX_PORTS))?;
            report.ports_removed += 1;
        }
        for (ifindex, slot) in &current_slots {
            if !slots.contains_key(ifindex) {
                self.label_egress_slot(*slot, 0)?;
            }
        }
        Ok(report)
    }

    /// Gives forwarded-frame counter slot `slot` to interface `ifindex` (0: frees it), its
    /// count zeroed on every CPU.
    fn label_egress_slot(&mut self, slot: u32, ifindex: u32) -> Result<(), DataplaneError> {
        let name = map_names::FWD_BY_EGRESS;
        let per_cpu = |call: &'static str| {
            move |io_error| DataplaneError::Map {
                name,
                source: MapError::SyscallError(SyscallError { call, io_error }),
            }
        };
        let cpus = nr_cpus()
            .map_err(|(_, io_error)| io_error)
            .map_err(per_cpu("reading the possible CPUs"))?;
        let value = EgressCount {
            ifindex,
            ..Default::default()
        };
        let values =
            PerCpuValues::try_from(vec![value; cpus]).map_err(per_cpu("one value per CPU"))?;
        let mut counts: PerCpuArray<&mut MapData, EgressCount> = self.map(name)?;
        counts.set(slot, values, 0).map_err(map_err(name))
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
            (map_names::VXLAN_VTEPS, plan.peers.len(), ""),
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
}

/// Makes the hash map `name`, used as a set (values 1), hold exactly `desired`.
fn sync_set<K: aya::Pod + Ord>(
    bpf: &mut Ebpf,
    name: &'static str,
    desired: impl IntoIterator<Item = K>,
) -> Result<(), DataplaneError> {
    let desired: BTreeMap<K, u32> = desired.into_iter().map(|k| (k, 1)).collect();
    let current = read_hash(bpf, name)?;
    put_in(bpf, name, &current, &desired)?;
    take_out::<K, u32>(bpf, name, missing(&current, &desired))?;
    Ok(())
}

/// The source check's fast path (`WORKLOAD_SRCS`): each workload interface's /32 (the lowest
/// address, if a route table gives it several; the rest are checked in the route trie).
fn workload_sources(plan: &Plan) -> BTreeMap<u32, Ipv4Key> {
    let mut sources = BTreeMap::new();
    for (prefix, nh) in &plan.routes {
        if nh.is(NextHopKind::Local) && prefix.prefix_len() == 32 {
            sources
                .entry(nh.ifindex)
                .or_insert_with(|| prefix.addr().octets());
        }
    }
    for (ifindex, addr) in &plan.unresolved_workloads {
        sources.entry(*ifindex).or_insert_with(|| addr.octets());
    }
    sources
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
        ifindex: vxlan.map_or(0, |v| v.ifindex),
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
    fn route_keys_carry_length_and_network_order_address() {
        let key = route_key(&"198.18.2.0/24".parse().unwrap());
        assert_eq!(key.prefix_len(), 24);
        assert_eq!(key.data(), [198, 18, 2, 0]);
    }
}
