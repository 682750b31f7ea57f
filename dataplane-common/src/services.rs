//! Services: a virtual address and port (a ClusterIP) and its backends. The maps hold the
//! services (`SERVICES`), their backends by index (`BACKENDS`), and the connections
//! made to them (`SERVICE_FLOWS`: which backend a client's connection goes to;
//! `SERVICE_REPLIES`: which service a backend's reply must seem to come from).

/// Key of `SERVICES`: a virtual address, port (network order) and protocol (6 or 17).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub vip: [u8; 4],
    pub port: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `SERVICES`: the service's number (its backends are `(id, 0..backends)` in
/// `BACKENDS`), how many backends it has (at least one), and which set of backends it has
/// (a hash of the list: it changes whenever a backend comes or goes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    pub id: u32,
    pub backends: u32,
    pub generation: u32,
}

/// Key of `BACKENDS`: a service's number and a backend's index in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub service: u32,
    pub index: u32,
}

/// An address and port (network order): a backend in `BACKENDS`, and the other side
/// of a translation in the flow maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub addr: [u8; 4],
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

/// Value of `SERVICE_FLOWS` (the backend the connection goes to) and `SERVICE_REPLIES` (the
/// service address its replies must come from), with when the flow was last seen (ns) and the
/// service's backend set ([`ServiceValue::generation`]) when the backend was drawn.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceFlow {
    pub endpoint: Endpoint,
    pub seen_ns: u64,
    pub generation: u32,
    pub _pad: u32,
}

/// A connection to a service idle this long is forgotten: the client's next packet with the
/// same addresses and ports is a new connection and may meet another backend. Five minutes,
/// as the policy's flow table (conntrack keeps an established TCP connection for days, but
/// it also tracks FIN and RST, which these maps do not).
pub const SERVICE_FLOW_IDLE_NS: u64 = 300 * 1_000_000_000;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each is `repr(C)`, has no padding (see the size tests) and every bit pattern of
    // its fields is valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ServiceValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BackendKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ServiceFlow {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<ServiceKey>(), 4 + 2 + 1 + 1);
        assert_eq!(size_of::<ServiceValue>(), 4 + 4 + 4);
        assert_eq!(size_of::<BackendKey>(), 4 + 4);
        assert_eq!(size_of::<Endpoint>(), 4 + 2 + 2);
        assert_eq!(size_of::<ServiceFlow>(), 8 + 8 + 4 + 4);
    }
}
