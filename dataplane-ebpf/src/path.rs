//! The packet path, top to bottom, for either hook (`hook::Shim` says how each hook does the
//! few things that differ) and either kind of interface ([`Role`]). This file holds what every
//! address family shares; the family's own steps are in its module (`crate::ipv4`):
//!
//! 1. the Ethernet step ([`network_layer`]): what is not for the programs goes to the kernel
//!    or, from a workload, is dropped; the rest goes to its family's path;
//! 2. the family's route step: check a workload's source address, keep for the kernel what is
//!    its own, look the destination up (or recognise VXLAN from a known tunnel endpoint on the
//!    underlay);
//! 3. VXLAN for this host: strip the tunnel ([`decapsulate`]), route the inner packet (a local
//!    workload only); a workload's connection to a service: give it its backend, route again;
//! 4. policy: the sending workload's egress rules (on its own host) and a local destination's
//!    ingress rules, also on what goes to the kernel, so no frame to or from a workload under
//!    policy leaves unpoliced;
//! 5. to a remote VTEP: encapsulate ([`encapsulate`]; or answer "fragmentation needed" if it
//!    will not fit); otherwise redirect, give a backend's reply to a local client its service's
//!    address, rewrite MACs and TTL.
use dataplane_common::{Counter, NextHop};

use crate::{
    counters::{Outcome, count},
    hook::Shim,
    ipv4,
    parse::{ETHERTYPE_ARP, ETHERTYPE_IPV4, EthHdr, Frame, ref_at},
    vxlan,
};

/// What the interface a frame arrived on faces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// One local workload (its host-side veth): everything from it is checked as coming from
    /// that workload.
    Workload,
    /// Other hosts and the outside: tunnels end here.
    Underlay,
}

/// The interface a frame arrived on.
#[derive(Clone, Copy)]
pub struct Ingress {
    pub role: Role,
    pub ifindex: u32,
}

/// Which routing of the frame this is: a frame is routed once as it arrived, and once more
/// after a tunnel is stripped or a service's backend written in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// As it arrived.
    Arrived,
    /// The inner frame of a tunnel this host ended, which only a local workload may receive:
    /// the host-address lookup is left out for it, since a host address is no workload's route
    /// and the frame is refused either way.
    Decapsulated,
    /// A workload's packet given its service's backend: its source was checked on arrival
    /// and a connection is translated once, so neither is looked up again.
    Translated,
}

/// The network protocols the programs route, and ARP from a workload (checked, then the
/// kernel's).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    /// ARP from a workload: checked as the workload's own before the kernel answers it.
    Arp,
}

/// Bytes of header the route steps read (the longest of the families').
pub const HEADERS_LEN: usize = ipv4::HEADERS_LEN;

/// What happens to the frame the hook `h` holds, which arrived on an interface facing `role`.
#[inline(always)]
pub fn process<H: Shim>(h: &H, role: Role) -> Outcome {
    count(H::HOOK, Counter::Rx);
    if h.vlan_tagged() {
        // Forwarded, it would leave with the tag it came with.
        return match role {
            Role::Workload => Outcome::Drop(Counter::DropNotIpFromWorkload),
            Role::Underlay => Outcome::Pass(Counter::PassVlanTagged),
        };
    }
    let from = Ingress {
        role,
        ifindex: h.arrived_on(),
    };
    let frame = h.headers(HEADERS_LEN);
    match network_layer(frame, role) {
        Ok(Family::Ipv4) => ipv4::process(h, frame, from),
        Ok(Family::Arp) => ipv4::arp::from_workload(frame, from.ifindex),
        Err(outcome) => outcome,
    }
}

/// The Ethernet step: which family the frame in `frame` carries, if it is unicast to a
/// family the programs route (or ARP from a workload, to be checked); otherwise how it
/// leaves. From the underlay, ARP, broadcast, multicast and any other protocol go to the
/// kernel. A workload speaks unicast IPv4 and ARP only: nothing else of its may reach the
/// kernel, which could take it (or forward it) where no source check or policy looks.
#[inline(always)]
pub fn network_layer(frame: Frame, role: Role) -> Result<Family, Outcome> {
    // SAFETY: `frame` is current (the caller's, as every `Frame`), the reference is read at
    // once and dropped, and nothing else refers to the frame meanwhile.
    let (ether_type, dst_mac0) = match unsafe { ref_at::<EthHdr>(frame, 0) } {
        Ok(eth) => (eth.ether_type, eth.dst_addr[0]),
        Err(_) => return Err(Outcome::Pass(Counter::PassMalformed)),
    };
    if ether_type == ETHERTYPE_ARP {
        return match role {
            Role::Workload => Ok(Family::Arp),
            Role::Underlay => Err(Outcome::Pass(Counter::PassArp)),
        };
    }
    if ether_type != ETHERTYPE_IPV4 {
        return Err(match role {
            Role::Workload => Outcome::Drop(Counter::DropNotIpFromWorkload),
            Role::Underlay => Outcome::Pass(Counter::PassNotIpv4),
        });
    }
    if dst_mac0 & 1 != 0 {
        // Broadcast or multicast: the kernel's to handle (it does not forward them), but it
        // takes them for its own addresses too, so never a workload's.
        return Err(match role {
            Role::Workload => Outcome::Drop(Counter::DropNotUnicastFromWorkload),
            Role::Underlay => Outcome::Pass(Counter::PassNotUnicast),
        });
    }
    Ok(Family::Ipv4)
}

/// Strips the tunnel of a VXLAN frame for this host (its first `strip` bytes) and routes the
/// inner packet, which only a local workload may receive: anything else the inner frame is
/// (not unicast, of no family the programs route) is refused.
#[inline(always)]
pub fn decapsulate<H: Shim>(h: &H, strip: usize, from: Ingress) -> Outcome {
    if !h.pop_tunnel(strip) {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    count(H::HOOK, Counter::VxlanDecap);
    let frame = h.headers(HEADERS_LEN);
    match network_layer(frame, from.role) {
        Ok(Family::Ipv4) => ipv4::process_decapsulated(h, frame, from),
        Ok(Family::Arp) | Err(_) => Outcome::Drop(Counter::DropVxlanInner),
    }
}

/// Pushes the outer headers for the remote VTEP `nh` in front of the frame, whose redirect is
/// set up and whose packet is ready to go (TTL decremented): UDP source port `sport`, inner
/// Ethernet type `inner_type`.
#[inline(always)]
pub fn encapsulate<H: Shim>(h: &H, nh: &NextHop, sport: [u8; 2], inner_type: [u8; 2]) -> Outcome {
    if !h.push_tunnel() {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    // Every byte moved: a new frame from the context.
    let frame = h.headers(vxlan::ENCAP_HEADERS_LEN);
    if !vxlan::write_headers(frame, h.frame_len(), nh, sport, inner_type) {
        return Outcome::Drop(Counter::DropAdjustFailed);
    }
    redirected(nh, true)
}

/// The outcome of a frame redirected to `nh` (`encapsulated` if VXLAN headers were pushed).
#[inline(always)]
pub fn redirected(nh: &NextHop, encapsulated: bool) -> Outcome {
    Outcome::Redirected {
        egress: nh.ifindex,
        egress_slot: nh.egress_slot,
        encapsulated,
    }
}

/// Writes the next hop's MACs.
#[inline(always)]
pub fn set_macs(eth: &mut EthHdr, nh: &NextHop) {
    eth.dst_addr = nh.dst_mac;
    eth.src_addr = nh.src_mac;
}
