//! Writing a compiled policy into the programs' maps, atomically per workload: the new version
//! is written under fresh ruleset ids (which no endpoint points at yet), then each endpoint is
//! pointed at its new ruleset (one map write each), then the old version's entries are removed.
//! A packet sees the old rules or the new ones, never a mix.
use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{Array, HashMap, LpmTrie, MapData, lpm_trie::Key};

use dataplane_common::{
    maps::map_names,
    policy::{PolicyEndpoint, PolicyEndpointKey, PolicyPeerKey, PolicyVerdictKey},
};

use super::{
    error::{DataplaneError, map_err},
    object::Dataplane,
};
use crate::{model::policy::Policy, plan::policy::compile};

/// What [`Dataplane::apply_policy`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyReport {
    pub endpoints: usize,
    pub rulesets: u32,
    pub peer_entries: usize,
    pub verdict_entries: usize,
}

impl Dataplane {
    /// Makes the policy maps hold `policy`. Refused whole, before anything is written, if the
    /// old and new versions together would not fit the maps.
    pub fn apply_policy(&mut self, policy: &Policy) -> Result<PolicyReport, DataplaneError> {
        use map_names::{POLICIES, POLICY_PEERS, POLICY_VERDICTS};
        let current_endpoints: BTreeMap<PolicyEndpointKey, PolicyEndpoint> = {
            let map: HashMap<&mut MapData, PolicyEndpointKey, PolicyEndpoint> =
                self.map(POLICIES)?;
            map.iter()
                .collect::<Result<_, _>>()
                .map_err(map_err(POLICIES))?
        };
        let first = current_endpoints
            .values()
            .map(|e| e.ruleset)
            .max()
            .unwrap_or(0)
            .wrapping_add(1)
            .max(1);
        let compiled = compile(policy, first);
        let old_peers = lpm_keys::<PolicyPeerKey>(self, POLICY_PEERS)?;
        let old_verdicts = lpm_keys::<PolicyVerdictKey>(self, POLICY_VERDICTS)?;
        for (map, needed) in [
            (POLICIES, compiled.endpoints.len()),
            (POLICY_PEERS, old_peers.len() + compiled.peers.len()),
            (
                POLICY_VERDICTS,
                old_verdicts.len() + compiled.verdicts.len(),
            ),
        ] {
            self.ensure_room(
                map,
                needed,
                " (the old and the new policy are both held while switching)",
            )?;
        }

        write_lpm(self, POLICY_PEERS, &compiled.peers)?;
        write_lpm(self, POLICY_VERDICTS, &compiled.verdicts)?;
        // The programs skip the policy stage while POLICY_ACTIVE is 0: switched off before
        // the last endpoint goes, on after the first arrives, so no endpoint is ever in the
        // map unenforced (and rewritten every time, so an adopted dataplane agrees too).
        if compiled.endpoints.is_empty() {
            self.set_policy_active(0)?;
        }
        {
            let mut map: HashMap<&mut MapData, PolicyEndpointKey, PolicyEndpoint> =
                self.map(POLICIES)?;
            for (key, value) in &compiled.endpoints {
                map.insert(key, value, 0).map_err(map_err(POLICIES))?;
            }
            for key in current_endpoints.keys() {
                if !compiled.endpoints.contains_key(key) {
                    map.remove(key).map_err(map_err(POLICIES))?;
                }
            }
        }
        if !compiled.endpoints.is_empty() {
            self.set_policy_active(compiled.endpoints.len() as u32)?;
        }
        remove_lpm(self, POLICY_PEERS, &old_peers)?;
        remove_lpm(self, POLICY_VERDICTS, &old_verdicts)?;
        Ok(PolicyReport {
            endpoints: compiled.endpoints.len(),
            rulesets: compiled.rulesets,
            peer_entries: compiled.peers.len(),
            verdict_entries: compiled.verdicts.len(),
        })
    }
}

impl Dataplane {
    /// Tells the programs how many endpoints are under policy (0: skip the policy stage).
    fn set_policy_active(&mut self, endpoints: u32) -> Result<(), DataplaneError> {
        use map_names::POLICY_ACTIVE;
        let mut map: Array<&mut MapData, u32> = self.map(POLICY_ACTIVE)?;
        map.set(0, endpoints, 0).map_err(map_err(POLICY_ACTIVE))
    }
}

fn lpm_keys<K: aya::Pod + Ord>(
    dataplane: &mut Dataplane,
    name: &'static str,
) -> Result<BTreeSet<(u32, K)>, DataplaneError> {
    let map: LpmTrie<&mut MapData, K, u32> = dataplane.map(name)?;
    map.keys()
        .map(|k| k.map(|k| (k.prefix_len(), k.data())))
        .collect::<Result<_, _>>()
        .map_err(map_err(name))
}

fn write_lpm<K: aya::Pod + Ord>(
    dataplane: &mut Dataplane,
    name: &'static str,
    entries: &BTreeMap<(u32, K), u32>,
) -> Result<(), DataplaneError> {
    let mut map: LpmTrie<&mut MapData, K, u32> = dataplane.map(name)?;
    for ((len, data), value) in entries {
        map.insert(&Key::new(*len, *data), value, 0)
            .map_err(map_err(name))?;
    }
    Ok(())
}

fn remove_lpm<K: aya::Pod + Ord>(
    dataplane: &mut Dataplane,
    name: &'static str,
    keys: &BTreeSet<(u32, K)>,
) -> Result<(), DataplaneError> {
    let mut map: LpmTrie<&mut MapData, K, u32> = dataplane.map(name)?;
    for (len, data) in keys {
        map.remove(&Key::new(*len, *data)).map_err(map_err(name))?;
    }
    Ok(())
}
