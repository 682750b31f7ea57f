//! Internet checksums, shared by the eBPF programs and the tests.
//!
//! Pure functions over plain integers and byte slices, so they are unit-tested on the host and
//! compiled unchanged into the programs.

/// Folds a 32-bit one's-complement accumulator to 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Incremental checksum update (RFC 1624, eqn. 3): `HC' = ~(~HC + ~m + m')` for one 16-bit
/// word changing from `old` to `new`. All values are the big-endian words read as integers.
#[inline(always)]
pub const fn csum_replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u32 + (!old) as u32 + new as u32)
}

/// [`csum_replace16`] for a 4-byte field (an IPv4 address) changing from `old` to `new`.
#[inline(always)]
pub const fn csum_replace_addr(check: [u8; 2], old: [u8; 4], new: [u8; 4]) -> [u8; 2] {
    let c = csum_replace16(
        u16::from_be_bytes(check),
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    csum_replace16(
        c,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
    .to_be_bytes()
}

/// [`csum_replace16`] on checksum and field bytes.
#[inline(always)]
pub const fn csum_replace_port(check: [u8; 2], old: [u8; 2], new: [u8; 2]) -> [u8; 2] {
    csum_replace16(
        u16::from_be_bytes(check),
        u16::from_be_bytes(old),
        u16::from_be_bytes(new),
    )
    .to_be_bytes()
}

/// Decrements the TTL of an IPv4 header given as its `(ttl, protocol)` word's TTL byte and the
/// checksum bytes, returning the new TTL and checksum bytes. The caller has checked `ttl > 1`.
#[inline(always)]
pub const fn ipv4_decrement_ttl(ttl: u8, proto: u8, check: [u8; 2]) -> (u8, [u8; 2]) {
    let old = u16::from_be_bytes([ttl, proto]);
    let new_ttl = ttl - 1;
    let new = u16::from_be_bytes([new_ttl, proto]);
    let check = csum_replace16(u16::from_be_bytes(check), old, new);
    (new_ttl, check.to_be_bytes())
}

/// The one's-complement sum of an outer IPv4 header's words other than total length and
/// checksum: version/IHL 0x45, TOS 0, identification 0, DF, `ttl`, `proto`, addresses. Computed
/// once per tunnel by the loader; [`ipv4_checksum_with_len`] finishes it per packet.
pub const fn ipv4_fixed_sum(ttl: u8, proto: u8, src: [u8; 4], dst: [u8; 4]) -> u32 {
    0x4500
        + 0x4000
        + (((ttl as u32) << 8) | proto as u32)
        + u16::from_be_bytes([src[0], src[1]]) as u32
        + u16::from_be_bytes([src[2], src[3]]) as u32
        + u16::from_be_bytes([dst[0], dst[1]]) as u32
        + u16::from_be_bytes([dst[2], dst[3]]) as u32
}

/// The header checksum bytes for a header whose fixed words sum to `fixed_sum`, with total
/// length `total_len`.
#[inline(always)]
pub const fn ipv4_checksum_with_len(fixed_sum: u32, total_len: u16) -> [u8; 2] {
    (!fold(fixed_sum + total_len as u32)).to_be_bytes()
}

/// A 32-bit mix of an inner flow's identity (addresses, protocol, ports), spread over the
/// VXLAN source-port range as the Linux driver does for ECMP entropy. Any fixed function of
/// the flow would do; this one is a multiply-xorshift (cheap in eBPF, no tables).
#[inline(always)]
pub const fn flow_source_port(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    ports: [u8; 4],
    min: u16,
    max: u16,
) -> u16 {
    let mut h: u32 = 0x9e37_79b9;
    h = (h ^ u32::from_be_bytes(src)).wrapping_mul(0x85eb_ca6b);
    h = (h ^ u32::from_be_bytes(dst)).wrapping_mul(0xc2b2_ae35);
    h = (h ^ u32::from_be_bytes(ports)).wrapping_mul(0x85eb_ca6b);
    h = (h ^ proto as u32).wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    let span = (max - min) as u32 + 1;
    min + (h % span) as u16
}

/// The Internet checksum (RFC 1071) of a fixed number of bytes, unrolled into the caller (the
/// programs checksum in place a message they build, without a call or a stack copy).
#[inline(always)]
pub fn checksum_of<const N: usize>(bytes: &[u8; N]) -> [u8; 2] {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    if N % 2 == 1 {
        sum += u16::from_be_bytes([bytes[N - 1], 0]) as u32;
    }
    (!fold(sum)).to_be_bytes()
}

/// The Internet checksum (RFC 1071) of `bytes`, as the big-endian bytes to store. Used where a
/// whole header is built (tests, and encapsulation headers of fixed size).
pub fn checksum(bytes: &[u8]) -> [u8; 2] {
    let mut sum: u32 = 0;
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        sum += u16::from_be_bytes([*last, 0]) as u32;
    }
    (!fold(sum)).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_and_port_replacement_match_a_full_recompute() {
        // A UDP header with a pseudo-header in front, as its checksum covers.
        let mut segment = [
            198, 18, 1, 2, 10, 96, 0, 10, 0, 17, 0, 12, // pseudo-header
            0x9c, 0x40, 0, 80, 0, 12, 0, 0, 1, 2, 3, 4, // UDP header and payload
        ];
        let check = checksum(&segment);
        let (vip, backend) = ([10, 96, 0, 10], [198, 18, 2, 3]);
        let c = csum_replace_addr(check, vip, backend);
        let c = csum_replace_port(c, [0, 80], [0x1f, 0x90]);
        segment[4..8].copy_from_slice(&backend);
        segment[14..16].copy_from_slice(&[0x1f, 0x90]);
        assert_eq!(c, checksum(&segment));
    }

    fn header(ttl: u8, proto: u8, src: [u8; 4], dst: [u8; 4]) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&84u16.to_be_bytes());
        h[4..6].copy_from_slice(&0x1c46u16.to_be_bytes());
        h[6] = 0x40;
        h[8] = ttl;
        h[9] = proto;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c);
        h
    }

    #[test]
    fn checksum_of_a_known_header() {
        // The worked example from RFC 1071 section 3 / Wikipedia's IPv4 header checksum.
        let h: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), [0xb8, 0x61]);
    }

    #[test]
    fn a_valid_header_sums_to_zero() {
        let h = header(64, 6, [198, 18, 1, 2], [198, 18, 2, 3]);
        assert_eq!(checksum(&h), [0, 0]);
    }

    #[test]
    fn incremental_ttl_update_matches_full_recompute() {
        // Sweep TTLs and addresses so that carries out of the high byte occur.
        for ttl in 2..=255u8 {
            for (src, dst) in [
                ([198, 18, 1, 2], [198, 18, 2, 3]),
                ([255, 255, 255, 255], [0, 0, 0, 1]),
                ([0, 0, 0, 0], [0, 0, 0, 0]),
                ([198, 19, 255, 254], [198, 18, 0, 255]),
            ] {
                for proto in [1u8, 6, 17, 255] {
                    let h = header(ttl, proto, src, dst);
                    let (new_ttl, new_check) = ipv4_decrement_ttl(ttl, proto, [h[10], h[11]]);
                    let mut expect = header(ttl - 1, proto, src, dst);
                    assert_eq!(new_ttl, ttl - 1);
                    assert_eq!(
                        new_check,
                        [expect[10], expect[11]],
                        "ttl {ttl} proto {proto}"
                    );
                    expect[10..12].copy_from_slice(&new_check);
                    assert_eq!(checksum(&expect), [0, 0]);
                }
            }
        }
    }

    #[test]
    fn outer_checksum_from_fixed_sum_matches_full_checksum() {
        for (len, src, dst) in [
            (84u16, [198, 19, 0, 1], [198, 19, 0, 2]),
            (1500, [255; 4], [255; 4]),
            (36, [0; 4], [10, 0, 0, 1]),
        ] {
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&len.to_be_bytes());
            h[6] = 0x40;
            h[8] = 64;
            h[9] = 17;
            h[12..16].copy_from_slice(&src);
            h[16..20].copy_from_slice(&dst);
            let c = ipv4_checksum_with_len(ipv4_fixed_sum(64, 17, src, dst), len);
            assert_eq!(c, checksum(&h), "len {len}");
        }
    }

    #[test]
    fn flow_source_ports_stay_in_range_and_spread() {
        let mut seen = std::collections::BTreeSet::new();
        for port in 0..2000u16 {
            let p = flow_source_port(
                [198, 18, 1, 2],
                [198, 18, 2, 2],
                6,
                [0x13, 0x88, (port >> 8) as u8, port as u8],
                32768,
                60999,
            );
            assert!((32768..=60999).contains(&p));
            seen.insert(p);
        }
        assert!(
            seen.len() > 1900,
            "only {} distinct ports for 2000 flows",
            seen.len()
        );
        let a = flow_source_port([1, 2, 3, 4], [5, 6, 7, 8], 17, [0, 1, 0, 2], 32768, 60999);
        assert_eq!(
            a,
            flow_source_port([1, 2, 3, 4], [5, 6, 7, 8], 17, [0, 1, 0, 2], 32768, 60999),
            "same flow, same port"
        );
    }

    #[test]
    fn the_fixed_size_checksum_is_the_checksum() {
        let bytes: [u8; 7] = [0x45, 0x00, 0x12, 0x34, 0xff, 0xfe, 0x01];
        assert_eq!(checksum_of(&bytes), checksum(&bytes));
        let even: [u8; 36] = core::array::from_fn(|i| (i * 37 + 11) as u8);
        assert_eq!(checksum_of(&even), checksum(&even));
    }

    #[test]
    fn odd_length_checksum_pads_with_zero() {
        assert_eq!(checksum(&[0x01]), (!0x0100u16).to_be_bytes());
    }
}
