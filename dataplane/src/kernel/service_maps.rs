//! Writing services into the programs' maps so that a packet always finds a consistent set: a
//! service's backends are written before the service entry that counts them and removed
//! after it, and a new service never takes the id of one on its way out (`plan::slots`).
//! Connections already made keep their backend (the flow maps are left alone).
use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{Array, MapData};
use dataplane_common::{
    maps::map_names::{BACKENDS, SERVICES, SERVICES_ACTIVE},
    services::{BackendKey, Endpoint, ServiceKey, ServiceValue},
};

use super::{
    error::{DataplaneError, map_err},
    hash_maps::{missing, put_in, read_hash, take_out},
    object::Dataplane,
};
use crate::{model::services::Services, plan::services::compile};

/// What [`Dataplane::apply_services`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicesReport {
    pub services: usize,
    pub backends: usize,
    /// Entries written and removed, over both maps.
    pub written: usize,
    pub removed: usize,
}

impl Dataplane {
    /// Makes the service maps hold `services`. Refused whole, before anything is written, if
    /// the old and new versions together would not fit the maps.
    pub fn apply_services(
        &mut self,
        services: &Services,
    ) -> Result<ServicesReport, DataplaneError> {
        // What the maps hold: as this process last wrote them, or (adopted maps) read back.
        let (current, current_backends) = match self.services.take() {
            Some(written) => (written.services, written.backends),
            None => (
                read_hash(&mut self.bpf, SERVICES)?,
                read_hash(&mut self.bpf, BACKENDS)?,
            ),
        };
        let result = self.write_services(services, &current, &current_backends);
        if result.is_err() {
            // Refused before writing, or part-written: read the maps back next time.
            self.services = None;
        }
        result
    }

    fn write_services(
        &mut self,
        services: &Services,
        current: &BTreeMap<ServiceKey, ServiceValue>,
        current_backends: &BTreeMap<BackendKey, Endpoint>,
    ) -> Result<ServicesReport, DataplaneError> {
        let compiled = compile(services, current);
        self.ensure_room(
            SERVICES,
            keys_in_either(current, &compiled.services),
            " (raise it with `loader run --max-services`; old and new are both held while switching)",
        )?;
        self.ensure_room(
            BACKENDS,
            keys_in_either(current_backends, &compiled.backends),
            " (raise it with `loader run --max-service-backends`; old and new are both held while switching)",
        )?;
        let mut report = ServicesReport {
            services: compiled.services.len(),
            backends: compiled.backends.len(),
            ..Default::default()
        };
        report.written += put_in(
            &mut self.bpf,
            BACKENDS,
            current_backends,
            &compiled.backends,
        )?;
        // The programs skip the service lookups while SERVICES_ACTIVE is 0: off before the
        // last service goes, on after the first arrives (rewritten every time, so an adopted
        // dataplane agrees too).
        if compiled.services.is_empty() {
            self.set_services_active(0)?;
        }
        report.written += put_in(&mut self.bpf, SERVICES, current, &compiled.services)?;
        report.removed += take_out::<_, ServiceValue>(
            &mut self.bpf,
            SERVICES,
            missing(current, &compiled.services),
        )?;
        if !compiled.services.is_empty() {
            self.set_services_active(compiled.services.len() as u32)?;
        }
        report.removed += take_out::<_, Endpoint>(
            &mut self.bpf,
            BACKENDS,
            missing(current_backends, &compiled.backends),
        )?;
        Ok(report)
    }

    fn set_services_active(&mut self, services: u32) -> Result<(), DataplaneError> {
        let mut map: Array<&mut MapData, u32> = self.map(SERVICES_ACTIVE)?;
        map.set(0, services, 0).map_err(map_err(SERVICES_ACTIVE))
    }
}

/// How many keys `a` and `b` hold between them.
fn keys_in_either<K: Ord, V>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> usize {
    let keys: BTreeSet<&K> = a.keys().chain(b.keys()).collect();
    keys.len()
}
