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
    fn odd_length_checksum_pads_with_zero() {
        assert_eq!(checksum(&[0x01]), (!0x0100u16).to_be_bytes());
    }
}
