//! IPv4 prefixes, as every format here writes them.
use std::{fmt, net::Ipv4Addr, str::FromStr};

/// An IPv4 prefix with no bits set past its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Prefix {
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, String> {
        if len > 32 {
            return Err(format!("prefix length {len} is over 32"));
        }
        let masked = Ipv4Addr::from(u32::from(addr) & Self::mask(len));
        if masked != addr {
            return Err(format!(
                "{addr}/{len} has host bits set (the prefix is {masked}/{len})"
            ));
        }
        Ok(Self { addr, len })
    }

    fn mask(len: u8) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - len) }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == u32::from(self.addr)
    }

    /// True if `other` lies wholly inside this prefix.
    pub fn covers(&self, other: &Ipv4Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = String;

    /// `A.B.C.D/LEN`, or a bare address meaning `/32`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => {
                let len = len
                    .parse::<u8>()
                    .map_err(|_| format!("`{len}` in `{s}` is not a prefix length (0-32)"))?;
                (addr, len)
            }
            None => (s, 32),
        };
        let addr = addr
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("`{addr}` in `{s}` is not an IPv4 address"))?;
        Self::new(addr, len)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}
