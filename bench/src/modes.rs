//! The forwarding modes the bench compares, and the test bed each one is measured on.
//!
//! Every bed has a client workload on host 0 and a server workload on host 1 (cross-host),
//! except `floor`, two namespaces joined by a bare veth pair: the lower bound.
use std::{fmt::Write, net::Ipv4Addr, time::Instant};

use anyhow::{Context, Result, bail};
use dataplane::{
    kernel::{Dataplane, LoadOptions},
    model::route_table::{self as config, Attach},
    plan::resolve::{self, LiveSystem},
    system::nat,
};
use netlab::{
    netns::{Netns, in_netns, veth_between},
    topology::{Options, Overlay, Topology, UNDERLAY_IF},
};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Two workloads on one bare veth pair: no forwarding at all.
    Floor,
    /// Calico's wiring (routed /32s, static routes between hosts) and no netfilter rule at
    /// all: what routing alone costs, so that routing and netfilter separate.
    KernelRouted,
    /// Calico as Felix programs a workload under policy in iptables mode: raw, mangle, filter
    /// and nat chains, marks, per-interface dispatch, conntrack with INVALID dropped,
    /// strict `rp_filter` and proxy ARP on the workload interfaces.
    Calico,
    /// Flannel's vxlan backend as flanneld and the bridge CNI plugin build it: workloads on a
    /// `cni0` bridge (bridged frames through netfilter: `br_netfilter`), the kernel vxlan
    /// device `flannel.1` (port 8472) with FDB, neighbour and route per remote host,
    /// FLANNEL-FWD and flanneld's MASQUERADE rules.
    FlannelVxlan,
    /// Flannel's host-gw backend: the same bridge and rules, plain routes to the other
    /// host's prefix.
    FlannelHostGw,
    /// Workloads on macvlan interfaces (bridge mode) of the underlay.
    Macvlan,
    EbpfRoutedXdp,
    EbpfRoutedTc,
    EbpfVxlanXdp,
    EbpfVxlanTc,
    /// `ebpf-routed-tc` with both workloads under an allow-all policy: the flow table on,
    /// stateful as Calico's conntrack is.
    EbpfRoutedTcPolicy,
    /// `ebpf-vxlan-tc` with both workloads under an allow-all policy.
    EbpfVxlanTcPolicy,
    /// Hybrid attach: XDP on the underlay, TC on the workload interfaces (what Cilium and
    /// Katran do on real NICs).
    EbpfRoutedHybrid,
    EbpfVxlanHybrid,
    /// eBPF TC on both hosts, but the client's host has no route to the server's prefix:
    /// the traffic leaves the way a workload reaches outside the cluster, through the
    /// kernel's forwarding and the loader's masquerade rule (`--nat-outgoing`). Not in the
    /// default set: `--modes ebpf-tc-nat-out`.
    EbpfTcNatOut,
}

/// Flannel's VXLAN port: every VXLAN mode uses it, so they differ only in who forwards.
pub const VXLAN_PORT: u16 = 8472;

impl Mode {
    /// Every mode of `--full`.
    pub const ALL: [Mode; 14] = [
        Mode::Floor,
        Mode::KernelRouted,
        Mode::Calico,
        Mode::FlannelVxlan,
        Mode::FlannelHostGw,
        Mode::Macvlan,
        Mode::EbpfRoutedXdp,
        Mode::EbpfRoutedTc,
        Mode::EbpfRoutedTcPolicy,
        Mode::EbpfVxlanXdp,
        Mode::EbpfVxlanTc,
        Mode::EbpfVxlanTcPolicy,
        Mode::EbpfRoutedHybrid,
        Mode::EbpfVxlanHybrid,
    ];

    /// The default run's modes: the headline pairs, their stateful variants and the bare
    /// routed path (host-gw, macvlan and XDP on veth only under `--full`).
    pub const DEFAULT: [Mode; 8] = [
        Mode::Floor,
        Mode::KernelRouted,
        Mode::Calico,
        Mode::FlannelVxlan,
        Mode::EbpfRoutedTc,
        Mode::EbpfRoutedTcPolicy,
        Mode::EbpfVxlanTc,
        Mode::EbpfVxlanTcPolicy,
    ];

    /// Modes measured only when named (`--modes`).
    pub const OPTIONAL: [Mode; 1] = [Mode::EbpfTcNatOut];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Floor => "floor",
            Mode::KernelRouted => "kernel-routed",
            Mode::Calico => "calico",
            Mode::FlannelVxlan => "flannel-vxlan",
            Mode::FlannelHostGw => "flannel-host-gw",
            Mode::Macvlan => "macvlan",
            Mode::EbpfRoutedXdp => "ebpf-routed-xdp",
            Mode::EbpfRoutedTc => "ebpf-routed-tc",
            Mode::EbpfTcNatOut => "ebpf-tc-nat-out",
            Mode::EbpfVxlanXdp => "ebpf-vxlan-xdp",
            Mode::EbpfVxlanTc => "ebpf-vxlan-tc",
            Mode::EbpfRoutedTcPolicy => "ebpf-routed-tc-policy",
            Mode::EbpfVxlanTcPolicy => "ebpf-vxlan-tc-policy",
            Mode::EbpfRoutedHybrid => "ebpf-routed-hybrid",
            Mode::EbpfVxlanHybrid => "ebpf-vxlan-hybrid",
        }
    }

    pub fn parse(s: &str) -> Result<Mode> {
        let every = || Mode::ALL.into_iter().chain(Mode::OPTIONAL);
        every().find(|m| m.name() == s).with_context(|| {
            let names: Vec<&str> = every().map(|m| m.name()).collect();
            format!("unknown mode `{s}` (one of: {})", names.join(", "))
        })
    }

    pub fn attach(self) -> Option<Attach> {
        match self {
            Mode::EbpfRoutedXdp | Mode::EbpfVxlanXdp => Some(Attach::Xdp),
            Mode::EbpfRoutedTc
            | Mode::EbpfVxlanTc
            | Mode::EbpfTcNatOut
            | Mode::EbpfRoutedTcPolicy
            | Mode::EbpfVxlanTcPolicy
            | Mode::EbpfRoutedHybrid
            | Mode::EbpfVxlanHybrid => Some(Attach::Tc),
            _ => None,
        }
    }

    /// The attach kind on the underlay: XDP in the hybrid modes, else as everywhere.
    pub fn underlay_attach(self) -> Option<Attach> {
        match self {
            Mode::EbpfRoutedHybrid | Mode::EbpfVxlanHybrid => Some(Attach::Xdp),
            other => other.attach(),
        }
    }

    /// The kernel mode an eBPF mode replaces, for the headline ratios. The XDP modes have
    /// none: on veth they run with offloads changed (GRO on, TX checksum off in the
    /// workload), which neither the floor nor the baselines have, so part of their work moves
    /// out of the meter; they are reported, not ratioed.
    pub fn baseline(self) -> Option<Mode> {
        match self {
            Mode::EbpfRoutedTc | Mode::EbpfRoutedTcPolicy => Some(Mode::Calico),
            Mode::EbpfVxlanTc | Mode::EbpfVxlanTcPolicy => Some(Mode::FlannelVxlan),
            _ => None,
        }
    }

    /// What this mode has of the product it stands for, and what it lacks (report and
    /// README's table).
    pub fn fidelity(self) -> (&'static str, &'static str) {
        match self {
            Mode::Floor => (
                "two namespaces on one veth pair",
                "any forwarding: the lower bound",
            ),
            Mode::KernelRouted => (
                "Calico's wiring: veth per workload, /32 scope-link routes, static routes between hosts",
                "netfilter entirely (no rules, no conntrack rules loaded)",
            ),
            Mode::Calico => (
                "Felix's iptables for a workload under policy: raw/mangle/filter/nat chains, marks, per-interface dispatch, conntrack ESTABLISHED accept and INVALID drop, VXLAN/IPIP from workloads dropped, policy chain (--calico-rules unmatched rules + allow), profile chain, nat-outgoing MASQUERADE; rp_filter strict, proxy_arp, /32 routes",
                "ipsets (pool CIDR instead), host-endpoint chains empty, BGP (static routes), kube-proxy's chains",
            ),
            Mode::FlannelVxlan => (
                "cni0 bridge with hairpin, bridged frames through iptables (bridge-nf-call-iptables=1), flannel.1 vxlan (VNI 1, port 8472, nolearning) with route, permanent neighbour and FDB entry per remote host, FLANNEL-FWD accept and FLANNEL-POSTRTG masquerade rules",
                "flanneld itself (entries written once, as it would), kube-proxy's chains",
            ),
            Mode::FlannelHostGw => (
                "the same bridge and rules as flannel-vxlan, a plain route per remote host",
                "flanneld itself, kube-proxy's chains",
            ),
            Mode::Macvlan => (
                "macvlan (bridge mode) on the underlay, workloads on one L2 segment",
                "any policy or isolation between workloads",
            ),
            Mode::EbpfRoutedXdp | Mode::EbpfVxlanXdp => (
                "our programs at XDP on every interface, workload offloads changed for XDP on veth (GRO on, TX checksum off)",
                "a matching floor or baseline (so no headline ratio), GSO for TCP",
            ),
            Mode::EbpfRoutedTc | Mode::EbpfVxlanTc => (
                "our programs at TC, every isolation check on (source validation, tunnel peer check), no workload under policy, kernel FORWARD policy DROP",
                "a flow table (no workload under policy: stateless, unlike calico)",
            ),
            Mode::EbpfRoutedHybrid | Mode::EbpfVxlanHybrid => (
                "our programs at XDP on the underlay and TC on workload interfaces; workload offloads changed as for XDP (frames are XDP-redirected into them)",
                "a matching floor or baseline (no headline ratio); on veth the underlay's XDP gives GSO up",
            ),
            Mode::EbpfRoutedTcPolicy | Mode::EbpfVxlanTcPolicy => (
                "as the TC mode, both workloads under an allow-all policy: every packet through the policy stage and its flow table",
                "nothing of the TC mode; the stateful comparison",
            ),
            Mode::EbpfTcNatOut => (
                "eBPF TC, traffic leaving through the kernel's forwarding and the loader's nftables masquerade",
                "a route to the other host (on purpose)",
            ),
        }
    }

    /// Whether both workloads are under an (allow-all) policy: the eBPF flow table on.
    pub fn stateful_ebpf(self) -> bool {
        matches!(self, Mode::EbpfRoutedTcPolicy | Mode::EbpfVxlanTcPolicy)
    }

    /// Whether TCP keeps GSO/TSO end to end in this mode (XDP on veth gives it up).
    pub fn keeps_gso(self) -> bool {
        self.underlay_attach() != Some(Attach::Xdp)
    }
}

enum Endpoint {
    /// Workload `index` of topology host `host`.
    Workload { host: usize, index: usize },
    /// A namespace of `extra`.
    Extra(usize),
}

/// A built test bed; everything is removed when it drops.
pub struct Bed {
    pub mode: Mode,
    topology: Option<Topology>,
    extra: Vec<Netns>,
    client: Endpoint,
    server: Endpoint,
    pub server_addr: Ipv4Addr,
    pub dataplanes: Vec<Dataplane>,
    /// eBPF beds: how long host 0's route table took to parse, resolve and write into the
    /// maps.
    pub route_load: Option<RouteLoad>,
}

/// Loading a route table into a dataplane, timed.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RouteLoad {
    pub routes: usize,
    pub parse_ms: f64,
    pub resolve_ms: f64,
    pub apply_ms: f64,
}

/// Prefixes the bench's traffic never matches, for the route-scale figure: /32s counted up
/// from 10.0.0.0 (1,048,576 fit in 10.0.0.0/12), via the other host like its own prefix.
pub fn extra_routes(count: usize, via: Ipv4Addr) -> String {
    let mut t = String::with_capacity(count * 40);
    for i in 0..count as u32 {
        let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i);
        writeln!(t, "route {a}/32 via {via} dev {UNDERLAY_IF}").unwrap();
    }
    t
}

impl Bed {
    fn ns(&self, e: &Endpoint) -> &Netns {
        match e {
            Endpoint::Workload { host, index } => {
                &self
                    .topology
                    .as_ref()
                    .expect("workload endpoints have a topology")
                    .hosts[*host]
                    .workloads[*index]
                    .ns
            }
            Endpoint::Extra(i) => &self.extra[*i],
        }
    }

    pub fn client(&self) -> &Netns {
        self.ns(&self.client)
    }

    /// The client workload's address, on beds built on the two-host topology.
    pub fn client_addr(&self) -> Option<Ipv4Addr> {
        match (&self.client, &self.topology) {
            (Endpoint::Workload { host, index }, Some(t)) => {
                Some(t.hosts[*host].workloads[*index].addr)
            }
            _ => None,
        }
    }

    /// Host `index`'s namespace, on beds built on the two-host topology.
    pub fn host(&self, index: usize) -> Option<&Netns> {
        self.topology.as_ref().map(|t| &t.hosts[index].ns)
    }

    pub fn server(&self) -> &Netns {
        self.ns(&self.server)
    }

    /// Builds the bed for `mode`; `calico_rules` non-matching rules go into every Calico
    /// workload chain before its accept.
    pub fn build(mode: Mode, calico_rules: usize) -> Result<Bed> {
        match mode {
            Mode::Floor => floor(),
            Mode::FlannelHostGw => host_gw(),
            Mode::FlannelVxlan => flannel_vxlan(),
            Mode::Macvlan => macvlan(),
            _ => topology_bed(mode, calico_rules, 0),
        }
    }

    /// An eBPF routed bed whose hosts' route tables hold `extra` more prefixes (see
    /// [`extra_routes`]), the route map sized for them.
    pub fn build_with_routes(mode: Mode, extra: usize) -> Result<Bed> {
        anyhow::ensure!(
            mode.attach().is_some(),
            "{}: only eBPF modes load a route table",
            mode.name()
        );
        topology_bed(mode, 0, extra)
    }
}

fn floor() -> Result<Bed> {
    let a = Netns::create("floor-a")?;
    let b = Netns::create("floor-b")?;
    veth_between(&a, "eth0", &b, "eth0")?;
    for (ns, addr) in [(&a, "198.18.0.1/24"), (&b, "198.18.0.2/24")] {
        ns.ip(&["addr", "add", addr, "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
    }
    Ok(Bed {
        mode: Mode::Floor,
        topology: None,
        extra: vec![a, b],
        client: Endpoint::Extra(0),
        server: Endpoint::Extra(1),
        server_addr: Ipv4Addr::new(198, 18, 0, 2),
        dataplanes: vec![],
        route_load: None,
    })
}

/// Two hosts joined by a veth underlay, each with one workload namespace (unconfigured).
fn two_hosts(role: &str) -> Result<Vec<Netns>> {
    let mut v = Vec::new();
    for name in ["host0", "host1", "h0w0", "h1w0"] {
        v.push(Netns::create(&format!("{role}-{name}"))?);
    }
    veth_between(&v[0], UNDERLAY_IF, &v[1], UNDERLAY_IF)?;
    for (i, host) in v[..2].iter().enumerate() {
        host.ip(&[
            "addr",
            "add",
            &format!("198.19.0.{}/24", i + 1),
            "dev",
            UNDERLAY_IF,
        ])?;
        host.ip(&["link", "set", UNDERLAY_IF, "up"])?;
        host.sysctl("net.ipv4.ip_forward", "1")?;
    }
    Ok(v)
}

/// The pod network of every bed: Calico's IP pool and Flannel's network, a /24 per host
/// (`198.18.<host + 1>.0/24`).
const POD_NETWORK: &str = "198.18.0.0/16";

/// What the bridge CNI plugin does for a workload on host `net` (1 or 2): a `cni0` bridge
/// holding the gateway address (hairpin on, as flannel's CNI configuration asks), a veth into
/// it, the workload's address and default route; then the netfilter flanneld installs.
fn bridge_workload(host: &Netns, wl: &Netns, net: usize) -> Result<()> {
    host.ip(&["link", "add", "cni0", "type", "bridge"])?;
    host.ip(&["addr", "add", &format!("198.18.{net}.1/24"), "dev", "cni0"])?;
    host.ip(&["link", "set", "cni0", "up"])?;
    host.ip(&[
        "link",
        "add",
        "veth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        wl.name(),
    ])?;
    host.ip(&["link", "set", "veth0", "master", "cni0", "up"])?;
    host.ip(&[
        "link",
        "set",
        "veth0",
        "type",
        "bridge_slave",
        "hairpin",
        "on",
    ])?;
    wl.ip(&["addr", "add", &format!("198.18.{net}.2/24"), "dev", "eth0"])?;
    wl.ip(&["link", "set", "eth0", "up"])?;
    wl.ip(&["route", "add", "default", "via", &format!("198.18.{net}.1")])?;
    flannel_netfilter(host, net)
}

/// flanneld's iptables: FORWARD accepts the pod network both ways (FLANNEL-FWD), and
/// POSTROUTING masquerades what leaves it (FLANNEL-POSTRTG, as flanneld 0.2x writes it). The
/// bridge's frames go through netfilter (`bridge-nf-call-iptables`, as kubeadm requires).
fn flannel_netfilter(host: &Netns, net: usize) -> Result<()> {
    host.sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
    let (all, own) = (POD_NETWORK, format!("198.18.{net}.0/24"));
    let rules = format!(
        "*filter\n:FLANNEL-FWD - [0:0]\n\
         -A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n\
         -A FLANNEL-FWD -s {all} -m comment --comment \"flanneld forward\" -j ACCEPT\n\
         -A FLANNEL-FWD -d {all} -m comment --comment \"flanneld forward\" -j ACCEPT\n\
         COMMIT\n\
         *nat\n:FLANNEL-POSTRTG - [0:0]\n\
         -A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
         -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN\n\
         -A FLANNEL-POSTRTG -s {own} -d {all} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {all} -d {own} -j RETURN\n\
         -A FLANNEL-POSTRTG ! -s {all} -d {own} -j RETURN\n\
         -A FLANNEL-POSTRTG -s {all} ! -d 224.0.0.0/4 -j MASQUERADE --random-fully\n\
         -A FLANNEL-POSTRTG ! -s {all} -d {all} -j MASQUERADE --random-fully\n\
         COMMIT\n"
    );
    host.feed("iptables-restore", &["--noflush"], &rules)
}

/// Flannel's host-gw backend: bridged workloads and a plain route to the other host's
/// prefix via its underlay address.
fn host_gw() -> Result<Bed> {
    let v = two_hosts("hostgw")?;
    for i in 0..2usize {
        let (host, wl) = (&v[i], &v[2 + i]);
        let net = i + 1;
        bridge_workload(host, wl, net)?;
        let other = 2 - i;
        host.ip(&[
            "route",
            "add",
            &format!("198.18.{other}.0/24"),
            "via",
            &format!("198.19.0.{other}"),
        ])?;
    }
    Ok(Bed {
        mode: Mode::FlannelHostGw,
        topology: None,
        extra: v,
        client: Endpoint::Extra(2),
        server: Endpoint::Extra(3),
        server_addr: Ipv4Addr::new(198, 18, 2, 2),
        dataplanes: vec![],
        route_load: None,
    })
}

/// Flannel's vxlan backend: the topology's hosts (no workloads of its own) made kernel VXLAN
/// hosts as flanneld makes them, and bridged workloads.
fn flannel_vxlan() -> Result<Bed> {
    let topo = Topology::build(&Options {
        workloads_per_host: 0,
        xdp_ready: false,
        overlay: Overlay::Vxlan { port: VXLAN_PORT },
    })?;
    let mut workloads = Vec::new();
    for i in 0..2usize {
        topo.make_kernel_vxlan_host(i)?;
        let wl = Netns::create(&format!("flannel-h{i}w0"))?;
        bridge_workload(&topo.hosts[i].ns, &wl, i + 1)?;
        workloads.push(wl);
    }
    Ok(Bed {
        mode: Mode::FlannelVxlan,
        topology: Some(topo),
        extra: workloads,
        client: Endpoint::Extra(0),
        server: Endpoint::Extra(1),
        server_addr: Ipv4Addr::new(198, 18, 2, 2),
        dataplanes: vec![],
        route_load: None,
    })
}

/// Workloads on macvlan interfaces (bridge mode) of each host's underlay: one L2 segment.
fn macvlan() -> Result<Bed> {
    let v = two_hosts("macvlan")?;
    for i in 0..2usize {
        let (host, wl) = (&v[i], &v[2 + i]);
        host.ip(&[
            "link",
            "add",
            "mv0",
            "link",
            UNDERLAY_IF,
            "type",
            "macvlan",
            "mode",
            "bridge",
        ])?;
        host.ip(&["link", "set", "mv0", "netns", wl.name()])?;
        wl.ip(&["link", "set", "mv0", "name", "eth0"])?;
        wl.ip(&[
            "addr",
            "add",
            &format!("198.18.100.{}/24", i + 1),
            "dev",
            "eth0",
        ])?;
        wl.ip(&["link", "set", "eth0", "up"])?;
    }
    Ok(Bed {
        mode: Mode::Macvlan,
        topology: None,
        extra: v,
        client: Endpoint::Extra(2),
        server: Endpoint::Extra(3),
        server_addr: Ipv4Addr::new(198, 18, 100, 2),
        dataplanes: vec![],
        route_load: None,
    })
}

fn topology_bed(mode: Mode, calico_rules: usize, extra: usize) -> Result<Bed> {
    let overlay = match mode {
        Mode::KernelRouted
        | Mode::Calico
        | Mode::EbpfRoutedXdp
        | Mode::EbpfRoutedTc
        | Mode::EbpfRoutedTcPolicy
        | Mode::EbpfRoutedHybrid
        | Mode::EbpfTcNatOut => Overlay::Routed,
        Mode::EbpfVxlanXdp
        | Mode::EbpfVxlanTc
        | Mode::EbpfVxlanTcPolicy
        | Mode::EbpfVxlanHybrid => Overlay::Vxlan { port: VXLAN_PORT },
        other => bail!("{} is not built on the two-host topology", other.name()),
    };
    let topo = Topology::build(&Options {
        workloads_per_host: 1,
        xdp_ready: mode.underlay_attach() == Some(Attach::Xdp),
        overlay,
    })?;
    let mut dataplanes = Vec::new();
    let mut route_load = None;
    match mode {
        Mode::KernelRouted => {}
        Mode::Calico => {
            for host in &topo.hosts {
                calico_host(host, calico_rules)?;
            }
        }
        _ => {
            let attach = mode.attach().expect("eBPF modes have an attach kind");
            if mode == Mode::EbpfTcNatOut {
                // Host 0 sends what it has no route for to the kernel, which forwards and
                // masquerades it; host 1's replies to host 0's address go the kernel's way
                // too.
                let own = topo.hosts[0].prefix().parse().map_err(anyhow::Error::msg)?;
                in_netns(topo.hosts[0].ns.name(), || Ok(nat::install(own)?))?;
            } else {
                topo.set_kernel_forward_policy("DROP")?;
            }
            for index in 0..topo.hosts.len() {
                let mut text = topo.route_table(index, attach);
                if let Some(underlay) = mode.underlay_attach().filter(|u| *u != attach) {
                    text = text.replace(
                        &format!("interface {UNDERLAY_IF} attach {attach}"),
                        &format!("interface {UNDERLAY_IF} attach {underlay}"),
                    );
                }
                if mode == Mode::EbpfTcNatOut && index == 0 {
                    text = text
                        .lines()
                        .filter(|l| !l.contains(" via "))
                        .map(|l| format!("{l}\n"))
                        .collect();
                }
                text.push_str(&extra_routes(extra, topo.hosts[1 - index].underlay_addr));
                let started = Instant::now();
                let table = config::parse(&text)
                    .map_err(|e| anyhow::anyhow!("generated route table: {e:?}"))?;
                let parse_ms = started.elapsed().as_secs_f64() * 1e3;
                let (dp, timing) = in_netns(topo.hosts[index].ns.name(), || {
                    let started = Instant::now();
                    let plan = resolve::resolve(&table, &LiveSystem)
                        .map_err(|e| anyhow::anyhow!("resolving the route table: {e:?}"))?;
                    let resolve_ms = started.elapsed().as_secs_f64() * 1e3;
                    let options = LoadOptions {
                        max_routes: LoadOptions::default()
                            .max_routes
                            .max((plan.routes.len() + 1024) as u32),
                        ..LoadOptions::default()
                    };
                    let mut dp = Dataplane::load_unpinned(options)?;
                    let started = Instant::now();
                    dp.apply(&plan)?;
                    let apply_ms = started.elapsed().as_secs_f64() * 1e3;
                    dp.attach(&plan.attachments)?;
                    Ok((
                        dp,
                        RouteLoad {
                            routes: plan.routes.len(),
                            parse_ms,
                            resolve_ms,
                            apply_ms,
                        },
                    ))
                })?;
                if index == 0 {
                    route_load = Some(timing);
                }
                dataplanes.push(dp);
            }
            if mode.stateful_ebpf() {
                let policy = allow_all(&topo);
                for dp in &mut dataplanes {
                    dp.apply_policy(&policy)?;
                }
            }
        }
    }
    let server_addr = topo.hosts[1].workloads[0].addr;
    Ok(Bed {
        mode,
        topology: Some(topo),
        extra: vec![],
        client: Endpoint::Workload { host: 0, index: 0 },
        server: Endpoint::Workload { host: 1, index: 0 },
        server_addr,
        dataplanes,
        route_load,
    })
}

/// Both hosts' workloads under a policy that admits everything, both ways: every packet goes
/// through the policy stage and its flow table, as every packet of a Calico workload with a
/// policy goes through conntrack.
fn allow_all(topo: &Topology) -> dataplane::model::policy::Policy {
    let text: String = topo
        .hosts
        .iter()
        .flat_map(|h| &h.workloads)
        .map(|w| format!("workload {} ingress allow egress allow\n", w.addr))
        .collect();
    dataplane::model::policy::parse(&text).expect("the allow-all policy parses")
}

/// Felix's marks (iptables mode, default `IptablesMarkMask` 0xffff0000): accept, pass,
/// scratch and endpoint bits.
const MARK_ACCEPT: &str = "0x10000";
const MARK_PASS: &str = "0x20000";
const MARK_SCRATCH: &str = "0x40000";

/// Calico as Felix programs a host whose workloads have a policy (iptables data plane,
/// abridged to the chains a forwarded workload packet meets; chain and rule shapes follow
/// `iptables-save` of a Calico 3.2x node):
///
/// - raw PREROUTING `cali-PREROUTING`: clears the marks, marks what comes from a workload,
///   sends host-endpoint traffic to its chain, accepts what a host endpoint accepted;
/// - mangle PREROUTING `cali-PREROUTING`: ESTABLISHED accepted, then host endpoints;
/// - filter FORWARD `cali-FORWARD`: clears the marks, from/to workload dispatch by interface
///   (an unknown `cali` interface is dropped), host-endpoint forward chains, and an accept of
///   what policy marked; each workload chain accepts RELATED/ESTABLISHED, drops INVALID,
///   drops VXLAN and IP-in-IP a workload sends, then runs the policy chain (`rules` rules the
///   bench traffic never matches, then the allow that sets the accept mark) and the profile
///   chain, and drops what nothing accepted;
/// - nat POSTROUTING `cali-POSTROUTING`/`cali-nat-outgoing`: masquerade from the pool to
///   outside it (Felix matches ipsets; here the pool's CIDR);
/// - workload interfaces: `rp_filter=1` (strict), `proxy_arp=1`, forwarding on, and the /32
///   scope-link routes the topology already installs.
///
/// Applied atomically with iptables-restore.
fn calico_host(host: &netlab::topology::Host, rules: usize) -> Result<()> {
    let pool = POD_NETWORK;
    let mut raw = String::from(
        "*raw\n:cali-PREROUTING - [0:0]\n:cali-OUTPUT - [0:0]\n:cali-from-host-endpoint - [0:0]\n\
         :cali-to-host-endpoint - [0:0]\n:cali-rpf-skip - [0:0]\n\
         -A PREROUTING -m comment --comment \"cali:6gwbT8clXdHdC1b1\" -j cali-PREROUTING\n\
         -A OUTPUT -m comment --comment \"cali:tVnHkvAo15HuiPy0\" -j cali-OUTPUT\n",
    );
    writeln!(raw, "-A cali-PREROUTING -j MARK --set-xmark 0x0/0xf0000").unwrap();
    writeln!(
        raw,
        "-A cali-PREROUTING -i cali+ -j MARK --set-xmark {MARK_SCRATCH}/{MARK_SCRATCH}"
    )
    .unwrap();
    writeln!(
        raw,
        "-A cali-PREROUTING -m mark --mark {MARK_SCRATCH}/{MARK_SCRATCH} -j cali-rpf-skip"
    )
    .unwrap();
    writeln!(
        raw,
        "-A cali-PREROUTING -m mark --mark 0x0/{MARK_SCRATCH} -j cali-from-host-endpoint"
    )
    .unwrap();
    writeln!(
        raw,
        "-A cali-PREROUTING -m mark --mark {MARK_ACCEPT}/{MARK_ACCEPT} -j ACCEPT"
    )
    .unwrap();
    writeln!(raw, "-A cali-OUTPUT -j MARK --set-xmark 0x0/0xf0000").unwrap();
    writeln!(raw, "-A cali-OUTPUT -j cali-to-host-endpoint").unwrap();
    writeln!(
        raw,
        "-A cali-OUTPUT -m mark --mark {MARK_ACCEPT}/{MARK_ACCEPT} -j ACCEPT"
    )
    .unwrap();
    raw.push_str("COMMIT\n");

    let mangle = "*mangle\n:cali-PREROUTING - [0:0]\n:cali-from-host-endpoint - [0:0]\n\
         -A PREROUTING -m comment --comment \"cali:6gwbT8clXdHdC1b1\" -j cali-PREROUTING\n\
         -A cali-PREROUTING -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A cali-PREROUTING -m mark --mark 0x10000/0x10000 -j ACCEPT\n\
         -A cali-PREROUTING -j cali-from-host-endpoint\n\
         -A cali-PREROUTING -m mark --mark 0x10000/0x10000 -j ACCEPT\n\
         COMMIT\n";

    let mut filter = String::from(
        "*filter\n:cali-FORWARD - [0:0]\n:cali-from-wl-dispatch - [0:0]\n:cali-to-wl-dispatch - [0:0]\n\
         :cali-from-hep-forward - [0:0]\n:cali-to-hep-forward - [0:0]\n:cali-cidr-block - [0:0]\n\
         :cali-po-bench - [0:0]\n:cali-pri-kns.bench - [0:0]\n",
    );
    let mut body = String::new();
    writeln!(
        body,
        "-A FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD"
    )
    .unwrap();
    writeln!(body, "-A cali-FORWARD -j MARK --set-xmark 0x0/0xe0000").unwrap();
    writeln!(
        body,
        "-A cali-FORWARD -m mark --mark 0x0/{MARK_ACCEPT} -j cali-from-hep-forward"
    )
    .unwrap();
    writeln!(body, "-A cali-FORWARD -i cali+ -j cali-from-wl-dispatch").unwrap();
    writeln!(body, "-A cali-FORWARD -o cali+ -j cali-to-wl-dispatch").unwrap();
    writeln!(body, "-A cali-FORWARD -j cali-to-hep-forward").unwrap();
    writeln!(body, "-A cali-FORWARD -j cali-cidr-block").unwrap();
    writeln!(
        body,
        "-A cali-FORWARD -m mark --mark {MARK_ACCEPT}/{MARK_ACCEPT} -j ACCEPT"
    )
    .unwrap();
    // The policy: rules this traffic never matches (TEST-NET-3 peers on unused ports), then
    // the allow; the profile allows nothing of its own (default deny comes after).
    for r in 0..rules {
        writeln!(
            body,
            "-A cali-po-bench -s 203.0.113.{}/32 -p tcp -m tcp --dport {} -j DROP",
            r % 250 + 1,
            10_000 + r
        )
        .unwrap();
    }
    writeln!(
        body,
        "-A cali-po-bench -s {pool} -j MARK --set-xmark {MARK_ACCEPT}/{MARK_ACCEPT}"
    )
    .unwrap();
    writeln!(
        body,
        "-A cali-po-bench -m mark --mark {MARK_ACCEPT}/{MARK_ACCEPT} -j RETURN"
    )
    .unwrap();
    for w in &host.workloads {
        for (dir, dispatch, flag) in [
            ("fw", "cali-from-wl-dispatch", "-i"),
            ("tw", "cali-to-wl-dispatch", "-o"),
        ] {
            let own = format!("cali-{dir}-{}", w.host_if);
            writeln!(filter, ":{own} - [0:0]").unwrap();
            writeln!(body, "-A {dispatch} {flag} {} -g {own}", w.host_if).unwrap();
            writeln!(
                body,
                "-A {own} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            )
            .unwrap();
            writeln!(body, "-A {own} -m conntrack --ctstate INVALID -j DROP").unwrap();
            writeln!(body, "-A {own} -j MARK --set-xmark 0x0/{MARK_ACCEPT}").unwrap();
            if dir == "fw" {
                writeln!(body, "-A {own} -p udp -m udp --dport 4789 -j DROP").unwrap();
                writeln!(body, "-A {own} -p ipencap -j DROP").unwrap();
            }
            writeln!(body, "-A {own} -j MARK --set-xmark 0x0/{MARK_PASS}").unwrap();
            writeln!(
                body,
                "-A {own} -m mark --mark 0x0/{MARK_PASS} -j cali-po-bench"
            )
            .unwrap();
            writeln!(
                body,
                "-A {own} -m mark --mark {MARK_ACCEPT}/{MARK_ACCEPT} -j RETURN"
            )
            .unwrap();
            writeln!(body, "-A {own} -j cali-pri-kns.bench").unwrap();
            writeln!(
                body,
                "-A {own} -m mark --mark {MARK_ACCEPT}/{MARK_ACCEPT} -j RETURN"
            )
            .unwrap();
            writeln!(
                body,
                "-A {own} -m comment --comment \"Drop if no profiles matched\" -j DROP"
            )
            .unwrap();
        }
        host.ns
            .sysctl(&format!("net.ipv4.conf.{}.rp_filter", w.host_if), "1")?;
        host.ns
            .sysctl(&format!("net.ipv4.conf.{}.proxy_arp", w.host_if), "1")?;
        host.ns
            .sysctl(&format!("net.ipv4.conf.{}.forwarding", w.host_if), "1")?;
    }
    for dispatch in ["cali-from-wl-dispatch", "cali-to-wl-dispatch"] {
        writeln!(
            body,
            "-A {dispatch} -m comment --comment \"Unknown interface\" -j DROP"
        )
        .unwrap();
    }
    filter.push_str(&body);
    filter.push_str("COMMIT\n");

    let nat = format!(
        "*nat\n:cali-POSTROUTING - [0:0]\n:cali-nat-outgoing - [0:0]\n\
         -A POSTROUTING -m comment --comment \"cali:O3lYWMrLQYEMJtB5\" -j cali-POSTROUTING\n\
         -A cali-POSTROUTING -j cali-nat-outgoing\n\
         -A cali-nat-outgoing -s {pool} ! -d {pool} -j MASQUERADE --random-fully\n\
         COMMIT\n"
    );
    host.ns.feed(
        "iptables-restore",
        &["--noflush"],
        &format!("{raw}{mangle}{filter}{nat}"),
    )
}
