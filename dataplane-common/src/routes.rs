//! The route map: destination prefix -> [`NextHop`].

/// Data part of the LPM key: an IPv4 address in network byte order. The trie key is
/// `{ prefix_len: u32, addr }` (aya's `Key<[u8; 4]>` on both sides).
pub type Ipv4Key = [u8; 4];

/// Kind of next hop, stored in [`NextHop::kind`] as its `u32` (a map value must accept every
/// bit pattern, so the field is not the enum itself).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHopKind {
    /// A workload on this host.
    Local = 1,
    /// Another host reached over the underlay, routed (no encapsulation).
    Remote = 2,
    /// Another host's VXLAN tunnel endpoint: encapsulate, then send on the underlay.
    Vxlan = 3,
}

impl NextHopKind {
    pub const fn name(self) -> &'static str {
        match self {
            NextHopKind::Local => "local",
            NextHopKind::Remote => "remote",
            NextHopKind::Vxlan => "vxlan",
        }
    }
}

/// [`NextHop::flags`]: the egress is a veth whose peer is the workload. The TC program then
/// hands the packet straight to the peer's ingress (`bpf_redirect_peer`), skipping the host
/// side's transmit path.
pub const NH_FLAG_VETH_PEER: u32 = 1;

/// Where a route sends a packet: egress interface and the Ethernet addresses to write.
///
/// For [`NextHopKind::Vxlan`], `dst_mac`/`src_mac` are the *inner* frame's (remote and local
/// VTEP MACs) and the `outer_*` fields describe the tunnel; for the other kinds those are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NextHop {
    pub ifindex: u32,
    /// A [`NextHopKind`] as its number (see [`NextHop::kind`]).
    pub kind: u32,
    /// `NH_FLAG_*` bits.
    pub flags: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Underlay next hop's MAC and the underlay interface's own.
    pub outer_dst_mac: [u8; 6],
    pub outer_src_mac: [u8; 6],
    pub outer_src_ip: [u8; 4],
    pub outer_dst_ip: [u8; 4],
    /// Second word of the VXLAN header as sent: VNI << 8, network order.
    pub vni_word: [u8; 4],
    /// UDP destination port, network order.
    pub udp_dport: [u8; 2],
    /// MTU of the underlay interface: an encapsulated packet must fit it.
    pub mtu: u16,
    /// One's-complement sum of every outer IPv4 header word but total length and checksum
    /// (see `checksum::ipv4_fixed_sum`): the program adds the length and folds.
    pub outer_csum_base: u32,
    /// The egress's slot in the per-CPU forwarded-frames counter (`FWD_BY_EGRESS`): the same
    /// for every route out of one interface, kept while the interface is an egress (assigned
    /// by `dataplane::plan::slots`).
    pub egress_slot: u32,
}

impl NextHop {
    /// The kind, if `kind` holds one.
    pub const fn kind(&self) -> Option<NextHopKind> {
        match self.kind {
            1 => Some(NextHopKind::Local),
            2 => Some(NextHopKind::Remote),
            3 => Some(NextHopKind::Vxlan),
            _ => None,
        }
    }

    #[inline(always)]
    pub const fn is(&self, kind: NextHopKind) -> bool {
        self.kind == kind as u32
    }
}

#[cfg(feature = "user")]
// SAFETY: `NextHop` is `repr(C)`, has no padding (see the size test) and every bit pattern
// of its fields is valid.
unsafe impl aya::Pod for NextHop {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn next_hop_layout_has_no_padding() {
        assert_eq!(
            size_of::<NextHop>(),
            4 + 4 + 4 + 6 + 6 + 6 + 6 + 4 + 4 + 4 + 2 + 2 + 4 + 4
        );
        assert_eq!(align_of::<NextHop>(), 4);
        assert_eq!(core::mem::offset_of!(NextHop, dst_mac), 12);
        assert_eq!(core::mem::offset_of!(NextHop, src_mac), 18);
        assert_eq!(core::mem::offset_of!(NextHop, outer_dst_mac), 24);
        assert_eq!(core::mem::offset_of!(NextHop, outer_src_ip), 36);
        assert_eq!(core::mem::offset_of!(NextHop, vni_word), 44);
        assert_eq!(core::mem::offset_of!(NextHop, udp_dport), 48);
        assert_eq!(core::mem::offset_of!(NextHop, mtu), 50);
        assert_eq!(core::mem::offset_of!(NextHop, outer_csum_base), 52);
        assert_eq!(core::mem::offset_of!(NextHop, egress_slot), 56);
    }

    #[test]
    fn next_hop_kinds_round_trip() {
        for kind in [NextHopKind::Local, NextHopKind::Remote, NextHopKind::Vxlan] {
            let nh = NextHop {
                kind: kind as u32,
                ..Default::default()
            };
            assert_eq!(nh.kind(), Some(kind));
            assert!(nh.is(kind));
        }
        assert_eq!(NextHop::default().kind(), None);
    }
}
