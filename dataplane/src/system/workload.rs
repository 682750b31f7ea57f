//! Workload wiring, as a CNI plugin does it in Calico's style: a veth pair between the host and
//! the workload's network namespace, a /32 on the workload, its default route via 169.254.1.1
//! (proxy ARP on the host side, plus a permanent neighbour entry for it in the workload), and a
//! host route to the workload.
//!
//! The TC attach kind needs nothing else: it works with the workload interface exactly as this
//! leaves it (default offloads). The XDP attach kind needs two settings inside the workload,
//! which only this step can make (a route table names host-side interfaces only):
//! - GRO on the workload end, so the veth runs NAPI there and frames XDP-redirected into the
//!   pair are delivered instead of silently lost;
//! - TX checksum offload off on the workload end, because an XDP program on the host end sees
//!   frames without the skb's partial-checksum state and would forward them with bad checksums.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use dataplane_common::vxlan::VXLAN_OVERHEAD;

use super::netinfo::{self, NetInfoError, ip, ip_in};
use crate::model::mac::format_mac;

/// The gateway address every workload routes through (as Calico does); no interface owns it.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// The workload's network namespace (a file: `/run/netns/NAME`, `/proc/PID/ns/net`).
    pub netns: PathBuf,
    /// Host-side veth name (in the current namespace).
    pub host_ifname: String,
    /// Interface name inside the workload.
    pub ifname: String,
    pub addr: Ipv4Addr,
    pub mtu: Option<u32>,
    /// Make the workload end fit the XDP attach kind (see the module docs).
    pub xdp_ready: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Ip(#[from] NetInfoError),
    #[error("{what}: {message}")]
    Step { what: String, message: String },
}

/// Wires the workload; runs in the host's network namespace.
pub fn wire(spec: &WorkloadSpec) -> Result<(), WireError> {
    let WorkloadSpec {
        netns,
        host_ifname,
        ifname,
        addr,
        ..
    } = spec;
    let addr32 = format!("{addr}/32");
    // Every name after its keyword (`name`, `dev`): a legal interface name such as `type` or
    // `up` is never read as a word of `ip`'s own.
    let mut create = vec!["link", "add", "name", host_ifname.as_str()];
    let mtu = spec.mtu.map(|m| m.to_string());
    if let Some(mtu) = &mtu {
        create.extend(["mtu", mtu]);
    }
    let netns_file = netns.display().to_string();
    create.extend(["type", "veth", "peer", "name", ifname, "netns", &netns_file]);
    if let Some(mtu) = &mtu {
        create.extend(["mtu", mtu]);
    }
    ip(&create)?;
    ip(&["link", "set", "dev", host_ifname, "up"])?;
    sysctl(&format!("net/ipv4/conf/{host_ifname}/proxy_arp"), "1")?;
    // Answer at once rather than after the default random delay of up to 0.8 s (Calico too).
    sysctl(&format!("net/ipv4/neigh/{host_ifname}/proxy_delay"), "0")?;
    // The host side carries no address: proxy ARP answers for the gateway, as in Calico.
    // `add`, not `replace`: an address this host already routes (another workload's) is
    // refused, never taken from it.
    match ip(&["route", "add", &addr32, "dev", host_ifname, "scope", "link"]) {
        Err(NetInfoError::Failed { stderr, .. }) if stderr.contains("File exists") => {
            return Err(WireError::Step {
                what: format!("routing {addr} to {host_ifname}"),
                message: format!("{addr} is already routed on this host (another workload has it)"),
            });
        }
        other => {
            other?;
        }
    }

    let gw = GATEWAY.to_string();
    ip_in(netns, &["link", "set", "dev", "lo", "up"])?;
    ip_in(netns, &["addr", "add", &addr32, "dev", ifname])?;
    ip_in(netns, &["link", "set", "dev", ifname, "up"])?;
    ip_in(
        netns,
        &["route", "add", &gw, "dev", ifname, "scope", "link"],
    )?;
    // Proxy ARP answers for the gateway only where the host has a route to it out of another
    // interface (a default route, on most hosts); a permanent entry does not depend on that.
    let host_mac = host_mac(host_ifname)?;
    ip_in(
        netns,
        &[
            "neigh",
            "replace",
            &gw,
            "lladdr",
            &host_mac,
            "dev",
            ifname,
            "nud",
            "permanent",
        ],
    )?;
    ip_in(
        netns,
        &["route", "add", "default", "via", &gw, "dev", ifname],
    )?;
    // The host knows the workload's MAC from now on without asking: the dataplane's route to
    // the workload is ready the moment it is read, and a new MAC under the same address (a
    // restarted container) arrives as a neighbour notification.
    let workload_mac = workload_mac(netns, ifname)?;
    ip(&[
        "neigh",
        "replace",
        &addr.to_string(),
        "lladdr",
        &format_mac(&workload_mac),
        "dev",
        host_ifname,
        "nud",
        "permanent",
    ])?;
    if spec.xdp_ready {
        ethtool_in(netns, &["-K", ifname, "gro", "on", "tx", "off"])?;
    }
    Ok(())
}

/// Removes a workload's wiring on the host side: deleting the host end of the veth takes the
/// workload's end, the host route and the neighbour entry with it. An interface that is not
/// there is fine (its namespace went first, or it was removed already).
pub fn unwire(host_ifname: &str) -> Result<(), WireError> {
    let exists = netinfo::links()?.iter().any(|l| l.name == host_ifname);
    if exists {
        match ip(&["link", "del", "dev", host_ifname]) {
            // Gone between the look and the delete.
            Err(NetInfoError::Failed { stderr, .. }) if stderr.contains("Cannot find device") => {}
            other => {
                other?;
            }
        }
    }
    Ok(())
}

/// The MAC of `ifname` inside the workload's namespace.
pub fn workload_mac(netns: &Path, ifname: &str) -> Result<[u8; 6], WireError> {
    netinfo::links_in(netns)?
        .into_iter()
        .find(|l| l.name == ifname)
        .and_then(|l| l.mac)
        .ok_or_else(|| WireError::Step {
            what: format!("reading the address of {ifname} in {}", netns.display()),
            message: "no such interface or no Ethernet address".into(),
        })
}

/// The MTU a workload needs so that its packets fit `underlay` after VXLAN encapsulation:
/// the underlay's MTU less the 50 bytes of overhead. Runs in the host's namespace.
pub fn vxlan_mtu(underlay: &str) -> Result<u32, WireError> {
    let link = netinfo::links()?
        .into_iter()
        .find(|l| l.name == underlay)
        .ok_or_else(|| WireError::Step {
            what: format!("reading the MTU of {underlay}"),
            message: "no such interface".into(),
        })?;
    link.mtu
        .checked_sub(VXLAN_OVERHEAD)
        .filter(|m| *m >= 576)
        .ok_or_else(|| WireError::Step {
            what: format!("sizing the workload for VXLAN over {underlay}"),
            message: format!("its MTU of {} leaves too little room", link.mtu),
        })
}

fn host_mac(host_ifname: &str) -> Result<String, WireError> {
    netinfo::links()?
        .into_iter()
        .find(|l| l.name == host_ifname)
        .and_then(|l| l.mac)
        .map(|mac| format_mac(&mac))
        .ok_or_else(|| WireError::Step {
            what: format!("reading the address of {host_ifname}"),
            message: "no such interface or no Ethernet address".into(),
        })
}

fn sysctl(key: &str, value: &str) -> Result<(), WireError> {
    // /proc/sys/net is per network namespace: this writes the calling thread's.
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|e| WireError::Step {
        what: format!("setting {path} to {value}"),
        message: e.to_string(),
    })
}

fn ethtool_in(netns: &Path, args: &[&str]) -> Result<(), WireError> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("ethtool")
        .args(args)
        .output()
        .map_err(|e| WireError::Step {
            what: "running ethtool".into(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(WireError::Step {
            what: format!("ethtool {} in {}", args.join(" "), netns.display()),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
