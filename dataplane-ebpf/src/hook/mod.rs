//! What differs between the hooks: how a program reads the frame, makes room for a tunnel or
//! removes one, and hands the frame to its egress. The packet path (`crate::path`) is written
//! once over this shim; each hook's file implements it with that hook's helpers.
pub mod tc;
pub mod xdp;

use dataplane_common::{Hook, NextHop, services::Endpoint};

use crate::{counters::Outcome, parse::Frame};

/// Which end of a packet a translation rewrites.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

/// The contract with the frame's references: the methods that change the frame
/// (`push_tunnel`, `pop_tunnel`, `grow_after_ethernet`, `truncate`, `translate_v4`, and
/// `headers` itself at TC, which may pull) make every `Frame` and every reference into the
/// frame stale. Callers hold none across them and take a new `Frame` from `headers` after
/// (see `parse::ref_at`). The others (`redirect`, `send_back`, the reads) leave the frame alone.
pub trait Shim {
    /// Whose counters count.
    const HOOK: Hook;

    /// The frame's bytes the program can read directly, pulled so that at least `want` bytes
    /// are there when the frame has them (at TC the linear part can be shorter than the frame;
    /// at XDP it is the whole frame). Every reference into the frame must be re-derived from a
    /// new one after a helper moved or rewrote the data (see `parse::ref_at`); at TC, pulling
    /// is such a helper.
    fn headers(&self, want: usize) -> Frame;

    /// The frame's full length.
    fn frame_len(&self) -> usize;

    /// The interface the frame arrived on.
    fn arrived_on(&self) -> u32;

    /// True if the kernel took a VLAN tag off the frame before the program ran (it would put
    /// it back on whatever interface the frame leaves by).
    fn vlan_tagged(&self) -> bool;

    /// Makes `nh`'s egress the frame's destination; the frame leaves through it when the
    /// program returns the redirect verdict. False if this hook cannot reach it.
    fn redirect(&self, nh: &NextHop) -> bool;

    /// How a frame leaves whose redirect failed: untouched to the kernel where the hook can
    /// still pass it, otherwise dropped. `decapsulated`: its tunnel headers are gone.
    fn redirect_failed(decapsulated: bool) -> Outcome;

    /// True if the frame, once encapsulated, fits an underlay of MTU `mtu`.
    fn fits_tunnel(&self, mtu: u16) -> bool;

    /// Grows the frame by the tunnel overhead in front of the payload the outer headers will
    /// carry. False if the kernel refused.
    fn push_tunnel(&self) -> bool;

    /// Removes the first `strip` bytes of a VXLAN frame (outer headers and the inner Ethernet
    /// header's room, as the hook lays it out), leaving an Ethernet frame of the inner packet.
    /// False if the kernel refused.
    fn pop_tunnel(&self, strip: usize) -> bool;

    /// Makes `len` bytes of room right after the Ethernet header (the rest of the frame moves
    /// back by `len`). False if the kernel refused.
    fn grow_after_ethernet(&self, len: usize) -> bool;

    /// Cuts the frame to its first `len` bytes. False if the kernel refused.
    fn truncate(&self, len: usize) -> bool;

    /// Rewrites the address and port of one side of the TCP or UDP (`proto`) packet whose
    /// option-less IPv4 header (the caller checked) follows the Ethernet header, from `from` to
    /// `to`, updating the IPv4 and L4 checksums (a UDP checksum of zero, none, stays zero).
    /// False if the kernel refused or the L4 header is cut short. The caller must hold no
    /// reference into the frame, and re-derive every one afterwards. (IPv4's: an IPv6 one, with
    /// no header checksum, would sit beside it.)
    fn translate_v4(&self, proto: u8, side: Side, from: &Endpoint, to: &Endpoint) -> bool;

    /// Sends the frame back out of the interface it came in by (the verdict for it is
    /// `Outcome::Replied`). False if this hook cannot.
    fn send_back(&self) -> bool;
}
