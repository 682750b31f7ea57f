//! Ethernet addresses as the formats and the CLI write them.

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let mac = parse_mac("02:ab:00:10:ff:09").unwrap();
        assert_eq!(mac, [0x02, 0xab, 0x00, 0x10, 0xff, 0x09]);
        assert_eq!(format_mac(&mac), "02:ab:00:10:ff:09");
    }

    #[test]
    fn bad_macs_are_refused() {
        for bad in [
            "",
            "02:ab:00:10:ff",
            "02:ab:00:10:ff:09:01",
            "zz:ab:00:10:ff:09",
            "0:1:2:3:4:100",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
