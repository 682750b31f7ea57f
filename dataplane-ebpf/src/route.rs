//! The routing decision shared by the XDP and TC entry points: parse Ethernet and IPv4,
//! classify what the kernel must keep, look the destination up, and rewrite for the next hop.
use aya_ebpf::maps::lpm_trie::Key;
use dataplane::{
    checksum::ipv4_decrement_ttl,
    shared::{NextHop, counter},
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    counters::Outcome,
    maps::{HOST_ADDRS, ROUTES},
    parse::ptr_at,
    policy, vxlan,
};

/// Bytes of header the decision reads: Ethernet, an option-less IPv4 header, and the start
/// of the L4 header (ports) for policy.
pub const HEADERS_LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN + policy::L4_LEN;

pub enum Decision {
    /// Hand the frame to the kernel untouched, counted under this `counter::PASS_*` slot.
    Pass(u32),
    /// Drop the frame, counted under this `counter::DROP_*` slot.
    Drop(u32),
    /// VXLAN for this host: remove the first `strip` bytes (everything before the inner
    /// Ethernet header), then route the inner frame to a local workload.
    Decap { strip: usize },
    /// Forward to `nh`. The frame is not modified yet: the entry point calls [`rewrite`] once
    /// its redirect is set up, so that a failed redirect passes an untouched frame.
    Forward {
        nh: NextHop,
        eth: *mut EthHdr,
        ip: *mut Ipv4Hdr,
    },
}

impl Decision {
    /// The next hop and headers of a forwarding decision the policy admits (the frame ends at
    /// `data_end`; `hook` counts), or how the frame leaves otherwise. A `Decap` here is a
    /// tunnel found inside a tunnel (the hooks decapsulate once): refused.
    #[inline(always)]
    pub fn into_forward(
        self,
        hook: u32,
        data_end: usize,
    ) -> Result<(NextHop, *mut EthHdr, *mut Ipv4Hdr), Outcome> {
        match self {
            Decision::Forward { nh, eth, ip } => match policy::admit(hook, ip, data_end, &nh) {
                Ok(()) => Ok((nh, eth, ip)),
                Err(reason) => Err(Outcome::Drop(reason)),
            },
            Decision::Pass(reason) => Err(Outcome::Pass(reason)),
            Decision::Drop(reason) => Err(Outcome::Drop(reason)),
            Decision::Decap { .. } => Err(Outcome::Drop(counter::DROP_VXLAN_INNER)),
        }
    }
}

/// Decides what to do with the frame in `data..data_end`; `frame_len` is its full length
/// (at TC the linear part can be shorter than the frame).
#[inline(always)]
pub fn route(data: usize, data_end: usize, frame_len: usize) -> Decision {
    let Some(eth) = ptr_at::<EthHdr>(data, data_end, 0) else {
        return Decision::Pass(counter::PASS_MALFORMED);
    };
    let (ether_type, dst_mac0) = unsafe { ((*eth).ether_type, (*eth).dst_addr[0]) };
    if ether_type == EtherType::Arp as u16 {
        return Decision::Pass(counter::PASS_ARP);
    }
    if ether_type != EtherType::Ipv4 as u16 {
        return Decision::Pass(counter::PASS_NOT_IPV4);
    }
    if dst_mac0 & 1 != 0 {
        // Broadcast or multicast: the kernel's to handle.
        return Decision::Pass(counter::PASS_NOT_UNICAST);
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(data, data_end, EthHdr::LEN) else {
        return Decision::Pass(counter::PASS_MALFORMED);
    };
    let (vihl, tot_len, ttl, dst) = unsafe {
        (
            (*ip).vihl,
            u16::from_be_bytes((*ip).tot_len) as usize,
            (*ip).ttl,
            (*ip).dst_addr,
        )
    };
    let header_len = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4
        || header_len < Ipv4Hdr::LEN
        || tot_len < header_len
        || tot_len > frame_len - EthHdr::LEN
    {
        return Decision::Pass(counter::PASS_MALFORMED);
    }
    if HOST_ADDRS.get_ptr(&dst).is_some() {
        // Ours: VXLAN to our VTEP is decapsulated (outer options allowed), the rest is the
        // kernel's.
        return vxlan::classify(data, data_end, ip, header_len)
            .unwrap_or(Decision::Pass(counter::PASS_HOST_ADDR));
    }
    if header_len != Ipv4Hdr::LEN {
        // Options (record route, timestamps, source routes) need the kernel's processing on
        // forward; they are rare enough that giving them up costs nothing.
        return Decision::Pass(counter::PASS_IP_OPTIONS);
    }
    let Some(nh) = ROUTES.get(Key::new(32, dst)) else {
        return Decision::Pass(counter::PASS_NO_ROUTE);
    };
    if ttl <= 1 {
        // The kernel sends ICMP time exceeded.
        return Decision::Pass(counter::PASS_TTL_EXPIRED);
    }
    Decision::Forward { nh: *nh, eth, ip }
}

/// Writes the next hop's MACs.
#[inline(always)]
pub fn set_macs(eth: *mut EthHdr, nh: &NextHop) {
    unsafe {
        (*eth).dst_addr = nh.dst_mac;
        (*eth).src_addr = nh.src_mac;
    }
}

/// Decrements the TTL with an incremental checksum update (which leaves the header's
/// one's-complement sum, and so any CHECKSUM_COMPLETE, valid).
#[inline(always)]
pub fn decrement_ttl(ip: *mut Ipv4Hdr) {
    unsafe {
        let (ttl, check) = ipv4_decrement_ttl((*ip).ttl, (*ip).proto, (*ip).check);
        (*ip).ttl = ttl;
        (*ip).check = check;
    }
}

/// A routed hop: MACs for the next hop, TTL one less.
#[inline(always)]
pub fn rewrite(eth: *mut EthHdr, ip: *mut Ipv4Hdr, nh: &NextHop) {
    set_macs(eth, nh);
    decrement_ttl(ip);
}

/// After decapsulation only a local workload may receive the inner packet: anything else the
/// inner frame asks for (another hop, the host, the kernel) is refused.
#[inline(always)]
pub fn only_to_local_workload(inner: Decision) -> Decision {
    match inner {
        Decision::Forward { nh, .. } if nh.kind == dataplane::shared::NEXTHOP_LOCAL => inner,
        _ => Decision::Drop(counter::DROP_VXLAN_INNER),
    }
}
