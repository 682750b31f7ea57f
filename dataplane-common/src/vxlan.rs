//! VXLAN: this host's decapsulation settings, and the constants of the encapsulation both
//! sides compute with.

/// Bytes VXLAN adds in front of the inner IP packet on the wire: outer Ethernet (14) is
/// replaced, so outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// IANA's VXLAN port; Flannel's vxlan backend uses 8472 (the Linux default before IANA's).
pub const VXLAN_DEFAULT_PORT: u16 = 4789;
/// TTL of the outer IPv4 header (the Linux vxlan driver's default when none is set).
pub const VXLAN_OUTER_TTL: u8 = 64;
/// UDP source ports come from this range (the Linux local port range the driver uses).
pub const VXLAN_SPORT_MIN: u16 = 32768;
pub const VXLAN_SPORT_MAX: u16 = 60999;

/// This host's VXLAN settings for decapsulation (slot 0 of `VXLAN_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VxlanConfig {
    /// UDP port, network order; 0 when VXLAN is off (nothing is decapsulated).
    pub port: [u8; 2],
    pub _pad: [u8; 2],
    /// The underlay interface the `vxlan` statement names: VXLAN arriving anywhere else is not
    /// decapsulated.
    pub ifindex: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, no padding (see the size test), every bit pattern valid.
unsafe impl aya::Pod for VxlanConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_config_layout_has_no_padding() {
        assert_eq!(core::mem::size_of::<VxlanConfig>(), 8);
    }
}
