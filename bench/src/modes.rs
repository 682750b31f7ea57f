//! The forwarding modes the bench compares, and the test bed each one is measured on.
//!
//! Every bed has a client workload on host 0 and a server workload on host 1 (cross-host),
//! except `floor`, two namespaces joined by a bare veth pair: the lower bound.
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use dataplane::{
    kernel::Dataplane,
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
    /// Routed /32s, static routes between hosts, iptables FORWARD chains per workload.
    Calico,
    /// A bridge per host, kernel vxlan device (port 8472), FDB and routes per remote host.
    FlannelVxlan,
    /// A bridge per host and plain routes to the other host's prefix.
    FlannelHostGw,
    /// Workloads on macvlan interfaces (bridge mode) of the underlay.
    Macvlan,
    EbpfRoutedXdp,
    EbpfRoutedTc,
    EbpfVxlanXdp,
    EbpfVxlanTc,
    /// eBPF TC on both hosts, but the client's host has no route to the server's prefix:
    /// the traffic leaves the way a workload reaches outside the cluster, through the
    /// kernel's forwarding and the loader's masquerade rule (`--nat-outgoing`). Not in the
    /// default set: `--modes ebpf-tc-nat-out`.
    EbpfTcNatOut,
}

/// Flannel's VXLAN port: every VXLAN mode uses it, so they differ only in who forwards.
pub const VXLAN_PORT: u16 = 8472;

impl Mode {
    pub const ALL: [Mode; 9] = [
        Mode::Floor,
        Mode::Calico,
        Mode::FlannelVxlan,
        Mode::FlannelHostGw,
        Mode::Macvlan,
        Mode::EbpfRoutedXdp,
        Mode::EbpfRoutedTc,
        Mode::EbpfVxlanXdp,
        Mode::EbpfVxlanTc,
    ];

    /// Modes measured only when named (`--modes`).
    pub const OPTIONAL: [Mode; 1] = [Mode::EbpfTcNatOut];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Floor => "floor",
            Mode::Calico => "calico",
            Mode::FlannelVxlan => "flannel-vxlan",
            Mode::FlannelHostGw => "flannel-host-gw",
            Mode::Macvlan => "macvlan",
            Mode::EbpfRoutedXdp => "ebpf-routed-xdp",
            Mode::EbpfRoutedTc => "ebpf-routed-tc",
            Mode::EbpfTcNatOut => "ebpf-tc-nat-out",
            Mode::EbpfVxlanXdp => "ebpf-vxlan-xdp",
            Mode::EbpfVxlanTc => "ebpf-vxlan-tc",
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
            Mode::EbpfRoutedTc | Mode::EbpfVxlanTc | Mode::EbpfTcNatOut => Some(Attach::Tc),
            _ => None,
        }
    }

    /// The kernel mode an eBPF mode replaces, for the headline ratios.
    pub fn baseline(self) -> Option<Mode> {
        match self {
            Mode::EbpfRoutedXdp | Mode::EbpfRoutedTc => Some(Mode::Calico),
            Mode::EbpfVxlanXdp | Mode::EbpfVxlanTc => Some(Mode::FlannelVxlan),
            _ => None,
        }
    }

    /// Whether TCP keeps GSO/TSO end to end in this mode (XDP on veth gives it up).
    pub fn keeps_gso(self) -> bool {
        self.attach() != Some(Attach::Xdp)
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
            Mode::Macvlan => macvlan(),
            _ => topology_bed(mode, calico_rules),
        }
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

/// Flannel's host-gw backend: workloads on a bridge `cni0` (the bridge holds the gateway
/// address), and a plain route to the other host's prefix via its underlay address.
fn host_gw() -> Result<Bed> {
    let v = two_hosts("hostgw")?;
    for i in 0..2usize {
        let (host, wl) = (&v[i], &v[2 + i]);
        let net = i + 1;
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
        wl.ip(&["addr", "add", &format!("198.18.{net}.2/24"), "dev", "eth0"])?;
        wl.ip(&["link", "set", "eth0", "up"])?;
        wl.ip(&["route", "add", "default", "via", &format!("198.18.{net}.1")])?;
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
    })
}

fn topology_bed(mode: Mode, calico_rules: usize) -> Result<Bed> {
    let overlay = match mode {
        Mode::Calico | Mode::EbpfRoutedXdp | Mode::EbpfRoutedTc | Mode::EbpfTcNatOut => {
            Overlay::Routed
        }
        Mode::FlannelVxlan | Mode::EbpfVxlanXdp | Mode::EbpfVxlanTc => {
            Overlay::Vxlan { port: VXLAN_PORT }
        }
        other => bail!("{} is not built on the two-host topology", other.name()),
    };
    let topo = Topology::build(&Options {
        workloads_per_host: 1,
        xdp_ready: mode.attach() == Some(Attach::Xdp),
        overlay,
    })?;
    let mut dataplanes = Vec::new();
    match mode {
        Mode::Calico => {
            for host in &topo.hosts {
                calico_chains(host, calico_rules)?;
            }
        }
        Mode::FlannelVxlan => {
            topo.make_kernel_vxlan_host(0)?;
            topo.make_kernel_vxlan_host(1)?;
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
                if mode == Mode::EbpfTcNatOut && index == 0 {
                    text = text
                        .lines()
                        .filter(|l| !l.contains(" via "))
                        .map(|l| format!("{l}\n"))
                        .collect();
                }
                let table = config::parse(&text)
                    .map_err(|e| anyhow::anyhow!("generated route table: {e:?}"))?;
                let dp = in_netns(topo.hosts[index].ns.name(), || {
                    let plan = resolve::resolve(&table, &LiveSystem)
                        .map_err(|e| anyhow::anyhow!("resolving the route table: {e:?}"))?;
                    let mut dp = Dataplane::load()?;
                    dp.apply(&plan)?;
                    dp.attach(&plan.attachments)?;
                    Ok(dp)
                })?;
                dataplanes.push(dp);
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
    })
}

/// Calico's iptables shape: FORWARD dispatches traffic from and to workload interfaces to a
/// chain per workload and direction, whose first rule accepts ESTABLISHED/RELATED through
/// conntrack, then `rules` policy rules that this traffic does not match, then an accept.
/// Applied atomically with iptables-restore.
fn calico_chains(host: &netlab::topology::Host, rules: usize) -> Result<()> {
    let mut t = String::from("*filter\n:cali-from-wl - [0:0]\n:cali-to-wl - [0:0]\n");
    let mut body =
        String::from("-A FORWARD -i cali+ -j cali-from-wl\n-A FORWARD -o cali+ -j cali-to-wl\n");
    for w in &host.workloads {
        for (dir, chain, flag) in [("fw", "cali-from-wl", "-i"), ("tw", "cali-to-wl", "-o")] {
            let own = format!("cali-{dir}-{}", w.host_if);
            t.push_str(&format!(":{own} - [0:0]\n"));
            body.push_str(&format!("-A {chain} {flag} {} -g {own}\n", w.host_if));
            body.push_str(&format!(
                "-A {own} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            ));
            for r in 0..rules {
                // TEST-NET-3 peers on ports nobody uses here: never matched by bench traffic.
                body.push_str(&format!(
                    "-A {own} -s 203.0.113.{}/32 -p tcp --dport {} -j DROP\n",
                    r % 250 + 1,
                    10_000 + r
                ));
            }
            body.push_str(&format!("-A {own} -j ACCEPT\n"));
        }
    }
    t.push_str(&body);
    t.push_str("COMMIT\n");
    host.ns.feed("iptables-restore", &["--noflush"], &t)
}
