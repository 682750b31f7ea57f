//! The frame's bytes and the one bounds-checked accessor pair all parsing goes through, and
//! the headers every address family shares: Ethernet, UDP and VXLAN, and the protocol numbers
//! that mean the same in IPv4 and IPv6. Parsers only find and validate headers; what to do
//! with a packet is decided per family (`crate::ipv4`).
use core::mem::{align_of, size_of};

use network_types::ip::IpProto;
pub use network_types::{udp::UdpHdr, vxlan::VxlanHdr};

pub const IPPROTO_TCP: u8 = IpProto::Tcp as u8;
pub const IPPROTO_UDP: u8 = IpProto::Udp as u8;

pub const ETHERTYPE_IPV4: [u8; 2] = 0x0800u16.to_be_bytes();
pub const ETHERTYPE_ARP: [u8; 2] = 0x0806u16.to_be_bytes();

/// The VXLAN header's flags byte with the I flag (VNI valid).
pub const VXLAN_FLAG_I: u8 = network_types::vxlan::VXLAN_I_FLAG_MASK;

/// Bytes of L4 header the policy reads: the ports (TCP, UDP) or type, code, checksum and
/// identifier (ICMP).
pub const L4_LEN: usize = 8;

/// An Ethernet header, bytes only. (network-types' `EthHdr` keeps its type as a `u16`, which
/// needs an alignment of 2 that no frame promises; a reference to it could be misaligned.)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst_addr: [u8; 6],
    pub src_addr: [u8; 6],
    /// Network order: compare with `ETHERTYPE_*`.
    pub ether_type: [u8; 2],
}

impl EthHdr {
    pub const LEN: usize = size_of::<EthHdr>();
}

/// What a frame's bytes can be read as in place: a header of plain bytes.
///
/// # Safety
///
/// Only for types with an alignment of 1 (a frame's bytes may sit at any address), without
/// padding, for which every bit pattern is a valid value: byte arrays and `repr(C)` structs of
/// `u8` and byte arrays. [`ref_at`] also checks the alignment when it compiles.
pub unsafe trait Plain {}

// SAFETY: a byte: alignment 1, no padding, every bit pattern valid.
unsafe impl Plain for u8 {}
// SAFETY: an array of `Plain` elements is `Plain`: same alignment, no padding between elements.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}
// SAFETY: `repr(C)`, byte arrays only.
unsafe impl Plain for EthHdr {}
// SAFETY: `repr(C)` of byte arrays (network-types 0.2: `src`, `dst`, `len`, `check`).
unsafe impl Plain for UdpHdr {}
// SAFETY: `repr(C)` of `u8` and byte arrays (network-types 0.2: `flags`, `_reserved1`, `vni`,
// `_reserved2`).
unsafe impl Plain for VxlanHdr {}

/// A header that is not wholly inside the frame's bytes at the offset asked for.
#[derive(Clone, Copy, Debug)]
pub struct OutOfBounds;

/// The bytes of the frame a program can read directly: `data..data_end` as the hook gave them
/// ([`crate::hook::Shim::headers`]). Every helper that moves or rewrites packet data makes it
/// stale (see [`ref_at`]); the verifier refuses any access through a stale one, so take a new
/// one from the hook after such a call.
#[derive(Clone, Copy)]
pub struct Frame {
    data: usize,
    data_end: usize,
}

impl Frame {
    /// # Safety
    ///
    /// `data..data_end` must be the context's packet bounds (its `data` and `data_end`) as
    /// read after the last helper call that moved packet data.
    #[inline(always)]
    pub unsafe fn new(data: usize, data_end: usize) -> Self {
        Frame { data, data_end }
    }
}

/// The address of a `T` at `offset` bytes into `frame`, if all of it lies inside. The
/// comparison is written so that the verifier sees the bound on the pointer it checks.
#[inline(always)]
fn checked<T: Plain>(frame: Frame, offset: usize) -> Result<usize, OutOfBounds> {
    const { assert!(align_of::<T>() == 1, "frame bytes have no alignment") };
    let start = frame.data + offset;
    if start + size_of::<T>() > frame.data_end {
        return Err(OutOfBounds);
    }
    Ok(start)
}

/// A reference to the `T` at `offset` bytes into `frame`, or `OutOfBounds` if any byte of it
/// lies past the frame's end. Bounds, alignment (1, checked when compiling) and validity
/// (`T: Plain`) are the accessor's business; what the caller must promise is about time and
/// aliasing.
///
/// # Safety
///
/// - `frame` is current: no helper that moves or rewrites packet data ran since the hook gave
///   it. Those are `bpf_xdp_adjust_head`/`_tail`, `bpf_skb_adjust_room`, `bpf_skb_change_tail`,
///   `bpf_skb_pull_data`, `bpf_skb_store_bytes` and `bpf_l3_csum_replace`/`bpf_l4_csum_replace`:
///   every `Shim` method that changes the frame, and `Shim::headers` itself at TC.
/// - The reference is not used after such a call, nor held as an argument of a function that
///   makes one: re-derive it from a new frame instead. (The verifier refuses a moved pointer,
///   but not a value the compiler kept from before a rewrite.)
/// - No `&mut` to any of its bytes lives while it does.
#[inline(always)]
pub unsafe fn ref_at<'a, T: Plain>(frame: Frame, offset: usize) -> Result<&'a T, OutOfBounds> {
    let start = checked::<T>(frame, offset)?;
    // SAFETY: `start..start + size_of::<T>()` lies inside the frame's bytes (checked), `T` has
    // alignment 1 and every bit pattern is a `T` (`Plain`); the caller promises the frame is
    // current and that nothing writes these bytes while the reference lives.
    Ok(unsafe { &*(start as *const T) })
}

/// A mutable reference to the `T` at `offset` bytes into `frame`, or `OutOfBounds` if any
/// byte of it lies past the frame's end.
///
/// # Safety
///
/// As for [`ref_at`], and: no other reference (shared or mutable) to any of its bytes lives
/// while it does. Two references may be held together only if their bytes do not overlap
/// (the Ethernet and the IP header, say).
#[inline(always)]
pub unsafe fn ref_mut_at<'a, T: Plain>(
    frame: Frame,
    offset: usize,
) -> Result<&'a mut T, OutOfBounds> {
    let start = checked::<T>(frame, offset)?;
    // SAFETY: as in `ref_at`; the caller also promises that no other reference reaches these
    // bytes while this one lives.
    Ok(unsafe { &mut *(start as *mut T) })
}
