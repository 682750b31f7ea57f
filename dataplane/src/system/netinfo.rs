//! Facts about the current network namespace: links, addresses, neighbours.
//!
//! Read through iproute2's JSON output (`ip -j`): iproute2 is on every host this runs on, its
//! JSON is stable, and it keeps netlink message handling out of this crate. Every call runs in
//! the network namespace of the calling thread.
use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::model::mac::parse_mac;

/// A network interface of the current namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    /// `linkinfo.info_kind` (`veth`, `bridge`, ...), `None` for a plain device.
    pub kind: Option<String>,
    pub mtu: u32,
    pub up: bool,
}

impl Link {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetInfoError {
    #[error("cannot run `ip {args}`: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("cannot read the output of `ip {args}`: {message}")]
    Parse { args: String, message: String },
}

/// Runs `ip ARGS` and returns its standard output.
pub fn ip(args: &[&str]) -> Result<String, NetInfoError> {
    run_ip(Command::new("ip").args(args), args)
}

/// Runs `ip ARGS` in the network namespace whose file is `netns` (through `nsenter`, which
/// takes any namespace file, where `ip -n` takes only names under /run/netns).
pub fn ip_in(netns: &Path, args: &[&str]) -> Result<String, NetInfoError> {
    run_ip(
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("ip")
            .args(args),
        args,
    )
}

fn run_ip(command: &mut Command, args: &[&str]) -> Result<String, NetInfoError> {
    let shown = args.join(" ");
    let out = command
        .output()
        .map_err(|source| NetInfoError::Spawn {
            args: shown.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetInfoError::Failed {
            args: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_json<T: for<'de> Deserialize<'de>>(args: &[&str]) -> Result<T, NetInfoError> {
    parse_json(&ip(args)?, args)
}

fn parse_json<T: for<'de> Deserialize<'de>>(text: &str, args: &[&str]) -> Result<T, NetInfoError> {
    let text = if text.trim().is_empty() { "[]" } else { text };
    serde_json::from_str(text).map_err(|e| NetInfoError::Parse {
        args: args.join(" "),
        message: e.to_string(),
    })
}

#[derive(Deserialize)]
struct JsonLink {
    ifindex: u32,
    ifname: String,
    address: Option<String>,
    mtu: u32,
    #[serde(default)]
    flags: Vec<String>,
    linkinfo: Option<JsonLinkInfo>,
}

#[derive(Deserialize)]
struct JsonLinkInfo {
    info_kind: Option<String>,
}

/// Every link of the current namespace.
pub fn links() -> Result<Vec<Link>, NetInfoError> {
    Ok(to_links(ip_json(&["-j", "-d", "link", "show"])?))
}

/// Every link of the network namespace whose file is `netns`.
pub fn links_in(netns: &Path) -> Result<Vec<Link>, NetInfoError> {
    let args = ["-j", "-d", "link", "show"];
    Ok(to_links(parse_json(&ip_in(netns, &args)?, &args)?))
}

fn to_links(raw: Vec<JsonLink>) -> Vec<Link> {
    raw
        .into_iter()
        .map(|l| Link {
            // `ip` prints a veth as `name@peer` only in text mode; JSON has the bare name.
            name: l.ifname,
            ifindex: l.ifindex,
            mac: l.address.as_deref().and_then(parse_mac),
            kind: l.linkinfo.and_then(|i| i.info_kind),
            mtu: l.mtu,
            up: l.flags.iter().any(|f| f == "UP"),
        })
        .collect()
}

#[derive(Deserialize)]
struct JsonAddrIf {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<JsonAddr>,
}

#[derive(Deserialize)]
struct JsonAddr {
    family: String,
    local: String,
    #[serde(default)]
    prefixlen: u8,
}

/// Every IPv4 address configured in the current namespace (loopback included), with the
/// interface that carries it, in the kernel's order (primary addresses first).
pub fn ipv4_addrs() -> Result<Vec<(String, Ipv4Addr)>, NetInfoError> {
    Ok(to_addrs(ip_json(&["-j", "-4", "addr", "show"])?))
}

/// As [`ipv4_addrs`], in the network namespace whose file is `netns`.
pub fn ipv4_addrs_in(netns: &Path) -> Result<Vec<(String, Ipv4Addr)>, NetInfoError> {
    let args = ["-j", "-4", "addr", "show"];
    Ok(to_addrs(parse_json(&ip_in(netns, &args)?, &args)?))
}

fn to_addrs(raw: Vec<JsonAddrIf>) -> Vec<(String, Ipv4Addr)> {
    raw.into_iter()
        .flat_map(|i| {
            let ifname = i.ifname;
            i.addr_info
                .into_iter()
                .filter(|a| a.family == "inet")
                .filter_map(move |a| Some((ifname.clone(), a.local.parse().ok()?)))
        })
        .collect()
}

/// The first IPv4 address of `ifname` and the length of its network's prefix.
pub fn ipv4_network_of(ifname: &str) -> Result<Option<(Ipv4Addr, u8)>, NetInfoError> {
    let raw: Vec<JsonAddrIf> = ip_json(&["-j", "-4", "addr", "show", "dev", ifname])?;
    Ok(raw
        .into_iter()
        .flat_map(|i| i.addr_info)
        .filter(|a| a.family == "inet")
        .find_map(|a| Some((a.local.parse().ok()?, a.prefixlen))))
}

#[derive(Deserialize)]
struct JsonNeigh {
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

/// The neighbour table's usable MAC for `addr` on `dev`, if it has one.
pub fn neighbour(addr: Ipv4Addr, dev: &str) -> Result<Option<[u8; 6]>, NetInfoError> {
    let a = addr.to_string();
    let raw: Vec<JsonNeigh> = ip_json(&["-j", "-4", "neigh", "show", "to", &a, "dev", dev])?;
    Ok(raw
        .into_iter()
        .filter(|n| !n.state.iter().any(|s| s == "FAILED" || s == "INCOMPLETE"))
        .find_map(|n| n.lladdr.as_deref().and_then(parse_mac)))
}

/// The MAC of `addr` on `dev`: from the neighbour table, or by asking the kernel to resolve it
/// (ARP) and waiting up to `timeout`.
pub fn resolve_neighbour(
    addr: Ipv4Addr,
    dev: &str,
    timeout: Duration,
) -> Result<Option<[u8; 6]>, NetInfoError> {
    let deadline = Instant::now() + timeout;
    let a = addr.to_string();
    loop {
        if let Some(mac) = neighbour(addr, dev)? {
            return Ok(Some(mac));
        }
        // NTF_USE: the kernel starts (or restarts) resolution of this entry as if a packet
        // wanted it, without sending one of ours.
        ip(&["neigh", "replace", &a, "dev", dev, "use"])?;
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One route of `ip -j route show`, as far as we read it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct KernelRoute {
    /// `default`, `A.B.C.D` (a /32) or `A.B.C.D/N`.
    pub dst: String,
    pub gateway: Option<Ipv4Addr>,
    pub dev: Option<String>,
    pub protocol: Option<String>,
    /// Absent for unicast.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Present on multipath routes.
    pub nexthops: Option<serde_json::Value>,
}

/// Reads routing table `table` (as `ip route show table` takes it) of the current network
/// namespace.
pub fn kernel_routes(table: &str) -> Result<Vec<KernelRoute>, NetInfoError> {
    let json = ip(&["-j", "-4", "route", "show", "table", table])?;
    serde_json::from_str(&json).map_err(|e| NetInfoError::Parse {
        args: format!("-j -4 route show table {}", table),
        message: e.to_string(),
    })
}
