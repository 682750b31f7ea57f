//! Facts about the current network namespace: links, addresses, neighbours, routes.
//!
//! Links, addresses and neighbours are read over rtnetlink (the private [`rtnl`] module); the routing
//! table, whose protocols are named as iproute2 names them (`bird`, `boot`, from its tables),
//! through `ip -j`. Changes go through `ip` (`ip link add`, `ip route add`...). Every call
//! runs in the network namespace of the calling thread.
use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

mod rtnl;

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
    /// Whether the link's other end lives in another network namespace (a veth whose peer was
    /// moved into a container's, say): the kernel names that namespace for such links only.
    pub peer_elsewhere: bool,
}

impl Link {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    /// Whether this can be a workload's interface: the host end of a veth whose other end is
    /// in another network namespace (never `lo`, the underlay, or a veth within the host).
    pub fn is_workload_veth(&self) -> bool {
        self.is_veth() && self.peer_elsewhere
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
    #[error("reading {what} over netlink: {message}")]
    Netlink { what: String, message: String },
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
    let out = command.output().map_err(|source| NetInfoError::Spawn {
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

/// Every link of the current namespace.
pub fn links() -> Result<Vec<Link>, NetInfoError> {
    rtnl::links()
}

/// Every link of the network namespace whose file is `netns`.
pub fn links_in(netns: &Path) -> Result<Vec<Link>, NetInfoError> {
    rtnl::in_namespace(netns, rtnl::links)
}

/// Every IPv4 address configured in the current namespace (loopback included), with the
/// interface that carries it, in the kernel's order (primary addresses first).
pub fn ipv4_addrs() -> Result<Vec<(String, Ipv4Addr)>, NetInfoError> {
    Ok(rtnl::ipv4_addrs()?
        .into_iter()
        .map(|(name, addr, _)| (name, addr))
        .collect())
}

/// As [`ipv4_addrs`], in the network namespace whose file is `netns`.
pub fn ipv4_addrs_in(netns: &Path) -> Result<Vec<(String, Ipv4Addr)>, NetInfoError> {
    rtnl::in_namespace(netns, ipv4_addrs)
}

/// The first IPv4 address of `ifname` and the length of its network's prefix.
pub fn ipv4_network_of(ifname: &str) -> Result<Option<(Ipv4Addr, u8)>, NetInfoError> {
    Ok(rtnl::ipv4_addrs()?
        .into_iter()
        .find(|(name, _, _)| name == ifname)
        .map(|(_, addr, len)| (addr, len)))
}

/// The neighbour table's usable MAC for `addr` on `dev`, if it has one.
pub fn neighbour(addr: Ipv4Addr, dev: &str) -> Result<Option<[u8; 6]>, NetInfoError> {
    match rtnl::ifindex(dev) {
        Some(ifindex) => rtnl::neighbour(addr, ifindex),
        None => Ok(None),
    }
}

/// Every usable neighbour of the table as (address, interface name, MAC): one dump.
pub fn neighbour_table() -> Result<Vec<(Ipv4Addr, String, [u8; 6])>, NetInfoError> {
    let names: std::collections::HashMap<u32, String> =
        links()?.into_iter().map(|l| (l.ifindex, l.name)).collect();
    Ok(rtnl::neighbours()?
        .into_iter()
        .filter_map(|(ifindex, addr, mac)| Some((addr, names.get(&ifindex)?.clone(), mac)))
        .collect())
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
