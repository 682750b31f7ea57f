//! Services compiled into the maps' entries: each service under a stable id (the one it has
//! in the maps now, or a fresh one), its backends under `(id, 0..n)`.
use std::collections::{BTreeMap, BTreeSet};

use dataplane_common::services::{BackendKey, Endpoint, ServiceKey, ServiceValue};

use super::slots;
use crate::model::services::Services;

/// What the service maps must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledServices {
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    pub backends: BTreeMap<BackendKey, Endpoint>,
}

/// Compiles `services`, keeping the id of every service the maps hold now (`current`): a
/// service whose backends change keeps its id and its connections, and a new service never
/// takes the id of one on its way out.
pub fn compile(
    services: &Services,
    current: &BTreeMap<ServiceKey, ServiceValue>,
) -> CompiledServices {
    let current_ids: BTreeMap<ServiceKey, u32> = current.iter().map(|(k, v)| (*k, v.id)).collect();
    let keys: BTreeSet<ServiceKey> = services.services.values().map(key_of).collect();
    let ids = slots::assign(&current_ids, &keys, u32::MAX)
        .expect("fewer services than ids: the maps refuse more long before");
    let mut compiled = CompiledServices::default();
    for service in services.services.values() {
        let key = key_of(service);
        let id = ids[&key];
        compiled.services.insert(
            key,
            ServiceValue {
                id,
                backends: service.backends.len() as u32,
                generation: generation(&service.backends),
            },
        );
        for (index, backend) in service.backends.iter().enumerate() {
            compiled.backends.insert(
                BackendKey {
                    service: id,
                    index: index as u32,
                },
                endpoint(backend),
            );
        }
    }
    compiled
}

/// A number for a set of backends (FNV-1a over the list): another list, another number, so
/// the programs tell a connection drawn before a change from one drawn after it.
fn generation(backends: &[std::net::SocketAddrV4]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for backend in backends {
        for b in backend
            .ip()
            .octets()
            .into_iter()
            .chain(backend.port().to_be_bytes())
        {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
    }
    h
}

fn key_of(service: &crate::model::services::Service) -> ServiceKey {
    ServiceKey {
        vip: service.front.ip().octets(),
        port: service.front.port().to_be_bytes(),
        proto: service.transport.number(),
        _pad: 0,
    }
}

/// An address and port as the maps hold them.
pub fn endpoint(addr: &std::net::SocketAddrV4) -> Endpoint {
    Endpoint {
        addr: addr.ip().octets(),
        port: addr.port().to_be_bytes(),
        _pad: [0; 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::services::parse;

    #[test]
    fn backends_are_numbered_under_their_service() {
        let s = parse("service web 10.96.0.10:80 tcp 198.18.1.3:8080 198.18.2.2:8080\n").unwrap();
        let c = compile(&s, &BTreeMap::new());
        let (key, value) = c.services.iter().next().unwrap();
        assert_eq!(key.vip, [10, 96, 0, 10]);
        assert_eq!(key.port, 80u16.to_be_bytes());
        assert_eq!(key.proto, 6);
        assert_eq!((value.id, value.backends), (0, 2));
        assert_eq!(
            c.backends[&BackendKey {
                service: 0,
                index: 1
            }]
                .addr,
            [198, 18, 2, 2]
        );
        assert_eq!(
            c.backends[&BackendKey {
                service: 0,
                index: 1
            }]
                .port,
            8080u16.to_be_bytes()
        );
    }

    #[test]
    fn a_service_keeps_its_id_and_a_newcomer_takes_none_in_use() {
        let before = parse(
            "service a 10.96.0.10:80 tcp 198.18.1.3:1\nservice b 10.96.0.11:80 tcp 198.18.1.3:2\n",
        )
        .unwrap();
        let first = compile(&before, &BTreeMap::new());
        // `a` goes as `c` arrives, and `b` loses its only backend for two others.
        let after = parse(
            "service b 10.96.0.11:80 tcp 198.18.1.4:2 198.18.1.5:2\nservice c 10.96.0.12:80 tcp 198.18.1.3:3\n",
        )
        .unwrap();
        let second = compile(&after, &first.services);
        let id = |c: &CompiledServices, vip: [u8; 4]| {
            c.services.iter().find(|(k, _)| k.vip == vip).unwrap().1.id
        };
        assert_eq!(id(&second, [10, 96, 0, 11]), id(&first, [10, 96, 0, 11]));
        let generation = |c: &CompiledServices, vip: [u8; 4]| {
            c.services
                .iter()
                .find(|(k, _)| k.vip == vip)
                .unwrap()
                .1
                .generation
        };
        assert_ne!(
            generation(&second, [10, 96, 0, 11]),
            generation(&first, [10, 96, 0, 11]),
            "new backends, new generation"
        );
        assert_eq!(
            compile(&after, &second.services),
            second,
            "the same services compile to the same entries"
        );
        let old_ids: BTreeSet<u32> = first.services.values().map(|v| v.id).collect();
        assert!(!old_ids.contains(&id(&second, [10, 96, 0, 12])));
    }
}
