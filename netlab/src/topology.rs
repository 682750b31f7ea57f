//! Two hosts joined by a veth underlay, workloads on each wired by the product's own wiring
//! step (`dataplane::system::workload`), Calico-style.
//!
//! ```text
//!  wl 198.18.1.2 ─ cali1 ┐                               ┌ cali1 ─ wl 198.18.2.2
//!  wl 198.18.1.3 ─ cali2 ┴ host 0  eth0 ═══ eth0  host 1 ┴ cali2 ─ wl 198.18.2.3
//!                          198.19.0.1/24   198.19.0.2/24
//! ```
//! Addresses are from 198.18.0.0/15, reserved for benchmarking. Between the hosts, traffic is
//! either routed (the kernel path: a route to the other host's /24, as BGP would install) or
//! carried over VXLAN (workload MTU 50 bytes below the underlay's).
use std::{collections::BTreeMap, fmt::Write, net::Ipv4Addr};

use anyhow::{Context, Result};
use dataplane::{
    model::{mac::format_mac, route_table::Attach},
    plan::resolve::default_vtep_mac,
    system::workload,
};

use crate::netns::{Netns, in_netns, run, veth_between};

pub struct Workload {
    pub ns: Netns,
    pub addr: Ipv4Addr,
    /// Host-side veth name.
    pub host_if: String,
}

pub struct Host {
    pub ns: Netns,
    pub underlay_addr: Ipv4Addr,
    pub workloads: Vec<Workload>,
}

impl Host {
    /// This host's workload prefix, 198.18.<index + 1>.0/24.
    pub fn prefix(&self) -> String {
        format!("198.18.{}.0/24", self.underlay_addr.octets()[3])
    }

    /// The VTEP MAC this host's dataplane uses (the loader's default, derived from the
    /// underlay address).
    pub fn vtep_mac(&self) -> [u8; 6] {
        default_vtep_mac(self.underlay_addr)
    }
}

/// How traffic crosses between the hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// Routed: the kernel path has a route to the other host's prefix.
    Routed,
    /// VXLAN with VNI 1 on this UDP port; no kernel route between the hosts' prefixes.
    Vxlan { port: u16 },
}

pub const VXLAN_VNI: u32 = 1;

pub struct Options {
    pub workloads_per_host: usize,
    /// Wire workloads for the XDP attach kind (see `dataplane::system::workload`).
    pub xdp_ready: bool,
    pub overlay: Overlay,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workloads_per_host: 2,
            xdp_ready: false,
            overlay: Overlay::Routed,
        }
    }
}

pub struct Topology {
    pub hosts: Vec<Host>,
    pub overlay: Overlay,
}

pub const UNDERLAY_IF: &str = "eth0";
/// The kernel vxlan device a Flannel-style host gets (Flannel names it flannel.<VNI>).
pub const KERNEL_VXLAN_IF: &str = "flannel.1";

/// Wires `opts.workloads_per_host` workloads to `host`, Calico-style, at
/// 198.18.<prefix_octet>.2, .3, ...
fn wire_workloads(host: &mut Host, prefix_octet: u8, opts: &Options) -> Result<()> {
    for j in 0..opts.workloads_per_host {
        let ns = Netns::create(&format!("h{prefix_octet}w{j}"))?;
        let addr = Ipv4Addr::new(198, 18, prefix_octet, j as u8 + 2);
        let host_if = format!("cali{}", j + 1);
        let host_ns = host.ns.name().to_string();
        let wl_ns = ns.name().to_string();
        let overlay = opts.overlay;
        let xdp_ready = opts.xdp_ready;
        let if_name = host_if.clone();
        in_netns(&host_ns, move || {
            let mtu = match overlay {
                Overlay::Routed => None,
                Overlay::Vxlan { .. } => Some(workload::vxlan_mtu(UNDERLAY_IF)?),
            };
            Ok(workload::wire(&workload::WorkloadSpec {
                netns: std::path::Path::new(dataplane::system::netns::NETNS_DIR).join(wl_ns),
                host_ifname: if_name,
                ifname: "eth0".into(),
                addr,
                mtu,
                xdp_ready,
            })?)
        })
        .with_context(|| format!("wiring workload {addr}"))?;
        host.workloads.push(Workload { ns, addr, host_if });
    }
    Ok(())
}

/// Any number of hosts on one L2 underlay (a bridge in a namespace of its own), added and
/// removed one at a time: host N has underlay address 198.19.0.N/24 and workloads in
/// 198.18.N.0/24. Between hosts nothing is routed: the dataplane under test must do it.
pub struct Fabric {
    /// Hosts by their number; a removed host's slot is `None`.
    pub hosts: BTreeMap<u8, Host>,
    opts: Options,
    switch: Netns,
}

impl Fabric {
    pub fn new(opts: Options) -> Result<Self> {
        let switch = Netns::create("switch")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        Ok(Self {
            hosts: BTreeMap::new(),
            opts,
            switch,
        })
    }

    /// Adds host `n` (1-254) with its workloads; FORWARD policy DROP, forwarding on.
    pub fn add_host(&mut self, n: u8) -> Result<&Host> {
        let ns = Netns::create(&format!("host{n}"))?;
        let port = format!("p{n}");
        veth_between(&ns, UNDERLAY_IF, &self.switch, &port)?;
        self.switch
            .ip(&["link", "set", &port, "master", "br0", "up"])?;
        let underlay_addr = Ipv4Addr::new(198, 19, 0, n);
        ns.ip(&[
            "addr",
            "add",
            &format!("{underlay_addr}/24"),
            "dev",
            UNDERLAY_IF,
        ])?;
        ns.ip(&["link", "set", UNDERLAY_IF, "up"])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        ns.exec("iptables", &["-P", "FORWARD", "DROP"])?;
        let mut host = Host {
            ns,
            underlay_addr,
            workloads: Vec::new(),
        };
        wire_workloads(&mut host, n, &self.opts)?;
        self.hosts.insert(n, host);
        Ok(&self.hosts[&n])
    }

    /// Host `n`'s route table for a cluster-mode loader: its interfaces (TC), its own
    /// workloads, and with a VXLAN overlay the `vxlan` statement; the routes to the other
    /// hosts come from the cluster.
    pub fn local_route_table(&self, n: u8) -> String {
        let host = &self.hosts[&n];
        let mut t = format!("interface {UNDERLAY_IF}\n");
        for w in &host.workloads {
            writeln!(t, "interface {}", w.host_if).unwrap();
            writeln!(t, "route {}/32 dev {}", w.addr, w.host_if).unwrap();
        }
        if let Overlay::Vxlan { port } = self.opts.overlay {
            writeln!(t, "vxlan dev {UNDERLAY_IF} vni {VXLAN_VNI} port {port}").unwrap();
        }
        t
    }
}

impl Topology {
    /// Builds the topology. Hosts forward (`ip_forward=1`, FORWARD policy ACCEPT); in the
    /// routed overlay the kernel path works end to end as Calico sets it up.
    pub fn build(opts: &Options) -> Result<Self> {
        let mut hosts = Vec::new();
        for i in 0..2u8 {
            let ns = Netns::create(&format!("host{i}"))?;
            hosts.push(Host {
                ns,
                underlay_addr: Ipv4Addr::new(198, 19, 0, i + 1),
                workloads: Vec::new(),
            });
        }
        veth_between(&hosts[0].ns, UNDERLAY_IF, &hosts[1].ns, UNDERLAY_IF)?;
        for i in 0..2 {
            let other = 1 - i;
            let host = &hosts[i];
            let addr = format!("{}/24", host.underlay_addr);
            host.ns.ip(&["addr", "add", &addr, "dev", UNDERLAY_IF])?;
            host.ns.ip(&["link", "set", UNDERLAY_IF, "up"])?;
            if opts.overlay == Overlay::Routed {
                let via = hosts[other].underlay_addr.to_string();
                host.ns
                    .ip(&["route", "add", &hosts[other].prefix(), "via", &via])?;
            }
            host.ns.sysctl("net.ipv4.ip_forward", "1")?;
        }
        for (i, host) in hosts.iter_mut().enumerate() {
            wire_workloads(host, i as u8 + 1, opts)?;
        }
        Ok(Self {
            hosts,
            overlay: opts.overlay,
        })
    }

    /// Sets the FORWARD policy of both hosts' netfilter: with DROP, only a path that bypasses
    /// the kernel's forwarding can carry workload traffic.
    pub fn set_kernel_forward_policy(&self, policy: &str) -> Result<()> {
        for host in &self.hosts {
            host.ns.exec("iptables", &["-P", "FORWARD", policy])?;
        }
        Ok(())
    }

    /// The route table of host `index` for the loader, every interface attached with `attach`.
    pub fn route_table(&self, index: usize, attach: Attach) -> String {
        let host = &self.hosts[index];
        let other = &self.hosts[1 - index];
        let mut t = String::new();
        writeln!(t, "# host {index}, generated by the bench topology").unwrap();
        writeln!(t, "interface {UNDERLAY_IF} attach {attach}").unwrap();
        for w in &host.workloads {
            writeln!(t, "interface {} attach {attach}", w.host_if).unwrap();
        }
        for w in &host.workloads {
            writeln!(t, "route {}/32 dev {}", w.addr, w.host_if).unwrap();
        }
        match self.overlay {
            Overlay::Routed => {
                writeln!(
                    t,
                    "route {} via {} dev {UNDERLAY_IF}",
                    other.prefix(),
                    other.underlay_addr
                )
                .unwrap();
            }
            Overlay::Vxlan { port } => {
                writeln!(t, "vxlan dev {UNDERLAY_IF} vni {VXLAN_VNI} port {port}").unwrap();
                writeln!(
                    t,
                    "route {} vxlan {} mac {}",
                    other.prefix(),
                    other.underlay_addr,
                    format_mac(&other.vtep_mac())
                )
                .unwrap();
            }
        }
        t
    }

    /// Makes host `index` a Flannel-style kernel VXLAN host towards the other one: a vxlan
    /// device (VNI 1, the overlay's port, nolearning) with its own MAC, the device holding the
    /// .0 address of the host's prefix, a route to the other prefix via the other's .0 address
    /// (onlink), a permanent neighbour entry for that address with the other's VTEP MAC, and an
    /// FDB entry sending that MAC to the other's underlay address. This is what flanneld's
    /// vxlan backend installs for every remote lease.
    pub fn make_kernel_vxlan_host(&self, index: usize) -> Result<()> {
        let Overlay::Vxlan { port } = self.overlay else {
            anyhow::bail!("the topology has no VXLAN overlay");
        };
        let host = &self.hosts[index];
        let other = &self.hosts[1 - index];
        let (dev, mac) = (KERNEL_VXLAN_IF, format_mac(&host.vtep_mac()));
        let other_mac = format_mac(&other.vtep_mac());
        let local = host.underlay_addr.to_string();
        let gateway = |h: &Host| h.prefix().replace(".0/24", ".0");
        let port = port.to_string();
        let vni = VXLAN_VNI.to_string();
        let mtu = (1500 - 50).to_string();
        host.ns.ip(&[
            "link",
            "add",
            dev,
            "type",
            "vxlan",
            "id",
            &vni,
            "local",
            &local,
            "dev",
            UNDERLAY_IF,
            "dstport",
            &port,
            "nolearning",
        ])?;
        host.ns
            .ip(&["link", "set", dev, "address", &mac, "mtu", &mtu, "up"])?;
        host.ns
            .ip(&["addr", "add", &format!("{}/32", gateway(host)), "dev", dev])?;
        host.ns.ip(&[
            "neigh",
            "replace",
            &gateway(other),
            "lladdr",
            &other_mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
        run(std::process::Command::new("ip").args([
            "netns",
            "exec",
            host.ns.name(),
            "bridge",
            "fdb",
            "append",
            &other_mac,
            "dev",
            dev,
            "dst",
            &other.underlay_addr.to_string(),
        ]))?;
        host.ns.ip(&[
            "route",
            "add",
            &other.prefix(),
            "via",
            &gateway(other),
            "dev",
            dev,
            "onlink",
        ])?;
        Ok(())
    }
}
