//! Command-line interface.
use std::{net::Ipv4Addr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

/// eBPF container-network dataplane: routed forwarding in XDP or TC instead of the kernel's
/// forwarding path and netfilter.
///
/// A host is the network namespace the loader runs in: start it inside one
/// (`ip netns exec HOST loader ...`) or point it at one (`--netns HOST`).
#[derive(Parser, Debug)]
#[command(name = "loader", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Act on this named network namespace (as under /run/netns) instead of the current one.
    #[arg(long, value_name = "NAME", global = true)]
    pub netns: Option<String>,
    /// The BPF filesystem the dataplane is pinned in (mounted by `run` if it is not yet).
    /// Each host (network namespace) gets its own directory under DIR/ebpf-dataplane, named
    /// by the namespace's cookie. Under `ip netns exec`, /sys is private to the command: give a
    /// bpffs mounted elsewhere beforehand, or use --netns.
    #[arg(long, value_name = "DIR", global = true, env = "LOADER_BPFFS",
          default_value = dataplane::system::bpffs::DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant, reason = "parsed once per process")]
pub enum Command {
    /// Load the programs, fill the maps from the route table, attach to the interfaces it
    /// names, and stay in the foreground, following the file: each change is applied as a
    /// difference within a second; a change that does not parse or resolve is logged with its
    /// line and the running tables stay as they were.
    ///
    /// Maps and links are pinned (see --bpffs), so the dataplane keeps forwarding when the
    /// loader stops, whether by SIGINT, SIGTERM or SIGKILL; only `loader detach` removes it.
    /// A loader started on a pinned dataplane adopts it: same maps (routes and counters carry
    /// on), its programs swapped into the existing links atomically, no packet lost.
    ///
    /// A route table that does not parse, or does not fit the maps, is reported with its line
    /// numbers, and nothing is loaded, attached or changed. A line that parses but cannot be
    /// realised on the host now (a missing interface, a next hop that does not answer ARP)
    /// is left out with a warning and counted (its packets go to the kernel), the rest is
    /// applied, and the line is tried again.
    Run {
        /// The route table (format: docs/formats.md, "Route table").
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Network policy for this host's workloads (format: docs/formats.md, "Policy"), applied
        /// before anything is attached and followed like the route table: a change that does
        /// not parse is logged with its line and the running policy stays. Without it, no
        /// workload is under policy (a pinned policy from an earlier run is removed).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Services for this host's workloads (format: docs/formats.md, "Services"): a workload's
        /// connection to a service's virtual address and port goes to one of its backends,
        /// drawn at random per connection, and the replies come back from the service's
        /// address. Applied before anything is attached and followed like the route table: a
        /// change that does not parse or fit the maps is logged with its line and the running
        /// services stay. Without it, no service (pinned ones from an earlier run are removed).
        /// In cluster mode the store's services (`<prefix>/services/<name>`) are added to the
        /// file's.
        #[arg(long, value_name = "FILE")]
        services: Option<PathBuf>,
        /// The service range: every service's virtual address (the file's and the store's)
        /// must lie in it, as Kubernetes' --service-cluster-ip-range. The service lookup runs
        /// before routing, so a service anywhere else would take that destination over; a
        /// file with such a service is refused on its line, a store record refused and
        /// counted (`service_front_outside_range`). Must not overlap --cluster-cidr.
        #[arg(long, value_name = "CIDR", default_value = dataplane::model::services::DEFAULT_SERVICE_RANGE)]
        service_cidr: dataplane::model::Ipv4Prefix,
        /// Capacity of the service map (services). Fixed when the dataplane is first pinned,
        /// like every capacity here: changing it needs `loader detach` first.
        #[arg(long, value_name = "N", default_value_t = dataplane::common::maps::MAX_SERVICES,
              value_parser = clap::value_parser!(u32).range(1..=4_194_304))]
        max_services: u32,
        /// Capacity of the backend map (all services' backends together).
        #[arg(long, value_name = "N",
              default_value_t = dataplane::common::maps::MAX_SERVICE_BACKENDS,
              value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
        max_service_backends: u32,
        /// Connections to services the programs remember (each way; least recently used
        /// forgotten first, when full: such a connection's next packet draws a backend anew).
        #[arg(long, value_name = "N", default_value_t = dataplane::common::maps::MAX_SERVICE_FLOWS,
              value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
        max_service_flows: u32,
        /// Capacity of the route map. Fixed when the dataplane is first pinned: changing it
        /// needs `loader detach` first.
        #[arg(long, value_name = "N", default_value_t = dataplane::common::maps::MAX_ROUTES,
              value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
        max_routes: u32,
        /// How the interfaces of the CNI plugin's workloads are attached (xdp, xdp-generic or
        /// tc). The plugin tells the loader of each workload it wires (docs/operating.md, "With
        /// podman"); the loader attaches, routes and polices it before the plugin's ADD
        /// returns, and releases it on DEL or when its interface disappears.
        #[arg(long, value_name = "KIND", default_value = "tc")]
        workload_attach: dataplane::model::route_table::Attach,
        /// Masquerade traffic from workloads in CIDR (the cluster's range) to addresses
        /// outside it, behind this host's address, as Calico's natOutgoing and Flannel's
        /// ipMasq do: one nftables rule in a table the loader owns (`ip ebpf_dataplane_nat`),
        /// removed without this option and by `loader detach`. Such traffic has no route in
        /// the maps, so the programs pass it to the kernel, which forwards and translates it.
        #[arg(long, value_name = "CIDR")]
        nat_outgoing: Option<dataplane::model::Ipv4Prefix>,
        #[command(flatten)]
        kernel: KernelRoutesArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Log from inside the programs (aya-log) at this level and above, through the
        /// loader's log: `debug` tells why each frame was passed to the kernel or dropped,
        /// `trace` also each forward. For diagnosis only: every logged frame costs a ring
        /// buffer write. `off` (the default) compiles the logging out at load time.
        #[arg(long, value_name = "LEVEL", value_enum, default_value_t = EbpfLog::Off)]
        ebpf_log: EbpfLog,
        /// Serve Prometheus metrics (counters, map fill levels, routes, apply errors) at
        /// http://ADDR/metrics, ADDR taken in the host's network namespace.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        #[command(flatten)]
        target: Target,
    },
    /// Detach the dataplane of this host: stop its loader if one runs (SIGTERM, then SIGKILL
    /// after --timeout), unpin its links and maps (which detaches the programs), and remove
    /// any program of ours still attached to an interface the older netlink way.
    Detach {
        /// Seconds to wait for a running loader to exit before killing it.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Print this host's dataplane: where it is pinned, its links and map IDs, and the running
    /// loader's record (pid, route table, attachments) if one runs.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print the route map as the kernel holds it (works whether or not a loader runs).
    Routes {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print the services as the kernel holds them: each service's address, port and
    /// protocol, and its backends in the order the programs draw from (works whether or not a
    /// loader runs).
    Services {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print the packet counters (summed over CPUs): received, forwarded per egress, passed
    /// to the kernel and dropped, by reason.
    Stats {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the hosts of a cluster as the store has them: prefix, underlay address, encap,
    /// VTEP MAC, VNI.
    Cluster {
        #[command(flatten)]
        store: StoreArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Wire a workload namespace to this host as a CNI plugin would (Calico style): veth pair,
    /// /32 address, default route via 169.254.1.1 answered by proxy ARP, host route.
    WireWorkload(WireArgs),
}

/// Log levels of the programs, as aya-log numbers them.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EbpfLog {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl EbpfLog {
    /// The `tracing` directive that lets the programs' records through the loader's filter
    /// (their target is the module they come from in the eBPF crate, whose binary is named
    /// `dataplane`).
    pub fn directive(self) -> Option<&'static str> {
        match self {
            EbpfLog::Off => None,
            EbpfLog::Error => Some("dataplane::program_log=error"),
            EbpfLog::Warn => Some("dataplane::program_log=warn"),
            EbpfLog::Info => Some("dataplane::program_log=info"),
            EbpfLog::Debug => Some("dataplane::program_log=debug"),
            EbpfLog::Trace => Some("dataplane::program_log=trace"),
        }
    }
}

/// Where the cluster's records are kept, and how to reach it.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// etcd endpoints, comma-separated (http://ADDR:2379, or https:// with the TLS options).
    /// With `run`: join the cluster whose records are there, publish this host's record
    /// under a lease kept alive, and route to every other host's prefix as their records
    /// say (routed or VXLAN), following changes. The store being away never flushes routes:
    /// the last known ones stay until it is back.
    #[arg(long = "etcd", value_name = "ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Key prefix of the cluster's records in etcd.
    #[arg(long, value_name = "PREFIX", default_value = "/ebpf-dataplane")]
    pub etcd_prefix: String,
    /// TLS: the CA certificate (PEM) that etcd's server certificates are checked against.
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// TLS client certificate (PEM), for etcd's --client-cert-auth; with --etcd-key.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// TLS client key (PEM), with --etcd-cert.
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd's own authentication: the user the loader signs in as (etcd `auth enable`), with
    /// --etcd-password-file. The user needs read and write on --etcd-prefix.
    #[arg(long, value_name = "NAME", requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// A file holding the password of --etcd-user (one line; a file, not the command line,
    /// where every local user could read it).
    #[arg(long, value_name = "FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

/// Cluster mode: sharing prefixes and VTEPs with the other hosts through etcd.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// This host's workload prefix. Without it the host keeps the one it had, or takes a
    /// free one from --cluster-cidr (claimed with an etcd transaction: never two hosts).
    #[arg(long, value_name = "CIDR")]
    pub host_prefix: Option<dataplane::model::Ipv4Prefix>,
    /// The range host prefixes are allocated from.
    #[arg(long, value_name = "CIDR", default_value = "198.18.0.0/16")]
    pub cluster_cidr: dataplane::model::Ipv4Prefix,
    /// Length of allocated host prefixes.
    #[arg(long, value_name = "LEN", default_value_t = 24,
          value_parser = clap::value_parser!(u8).range(8..=30))]
    pub subnet_len: u8,
    /// How other hosts reach this one: `vxlan` (default when the route table has a `vxlan`
    /// statement) or `routed`.
    #[arg(long, value_name = "ENCAP")]
    pub cluster_encap: Option<String>,
    /// The interface facing the other hosts, whose address this host publishes (default:
    /// the `vxlan` statement's device).
    #[arg(long, value_name = "IFNAME")]
    pub cluster_underlay: Option<String>,
    /// Seconds the record outlives this loader's last keepalive: a host that goes away has
    /// its routes removed everywhere within this time.
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(i64).range(2..=3600))]
    pub etcd_lease_ttl: i64,
    /// Where the host keeps what must outlive a reboot: the prefix it held (asked for again
    /// when it rejoins, even after its record expired), under a directory named after the
    /// host.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ebpf-dataplane")]
    pub state_dir: std::path::PathBuf,
}

/// Mirroring the kernel's routes into the maps.
#[derive(Args, Debug, Clone)]
pub struct KernelRoutesArgs {
    /// Also take routes from the kernel's routing table and follow their changes (netlink
    /// notifications), so that a BGP daemon such as BIRD, or `ip
    /// route` commands, drive the dataplane. Only the protocols named by --kernel-proto are
    /// taken, only through interfaces the route table declares, only unicast routes with one
    /// next hop; the default route never unless --kernel-default. Routes of the file win over
    /// the kernel's for the same prefix.
    #[arg(long, requires = "kernel_proto")]
    pub routes_from_kernel: bool,
    /// Routing table to read (`main`, a number, a name from rt_tables).
    #[arg(
        long,
        value_name = "TABLE",
        default_value = "main",
        requires = "routes_from_kernel"
    )]
    pub kernel_table: String,
    /// Route protocols to take, as `ip route` names them (`bird`, `static`, `boot` for plain
    /// `ip route add`, `kernel` for the host's own link routes, or a number). Comma-separated
    /// or repeated; required with --routes-from-kernel.
    #[arg(
        long,
        value_name = "PROTO",
        value_delimiter = ',',
        requires = "routes_from_kernel"
    )]
    pub kernel_proto: Vec<String>,
    /// Take only routes inside these prefixes (comma-separated or repeated; default: any).
    #[arg(
        long,
        value_name = "CIDR",
        value_delimiter = ',',
        requires = "routes_from_kernel"
    )]
    pub kernel_prefix: Vec<dataplane::model::Ipv4Prefix>,
    /// Take the default route (0.0.0.0/0) too.
    #[arg(long, requires = "routes_from_kernel")]
    pub kernel_default: bool,
}

impl KernelRoutesArgs {
    pub fn filter(&self) -> Option<dataplane::plan::kernel_routes::KernelRouteFilter> {
        self.routes_from_kernel
            .then(|| dataplane::plan::kernel_routes::KernelRouteFilter {
                table: self.kernel_table.clone(),
                protocols: self.kernel_proto.clone(),
                within: self.kernel_prefix.clone(),
                include_default: self.kernel_default,
            })
    }
}

#[derive(Args, Debug)]
pub struct WireArgs {
    /// The workload's named network namespace (must exist).
    #[arg(long, value_name = "NAME")]
    pub workload_netns: String,
    /// Host-side veth name (also what the route table names with `dev`).
    #[arg(long, value_name = "IFNAME")]
    pub host_if: String,
    /// The workload's address; it gets it as a /32.
    #[arg(long)]
    pub addr: Ipv4Addr,
    /// Interface name inside the workload.
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    /// MTU of both ends (default: the kernel's veth default, or as --vxlan-underlay says).
    #[arg(long, conflicts_with = "vxlan_underlay")]
    pub mtu: Option<u32>,
    /// The workload's traffic leaves this host VXLAN-encapsulated over this underlay
    /// interface: its MTU becomes the underlay's less the 50 bytes of overhead.
    #[arg(long, value_name = "IFNAME")]
    pub vxlan_underlay: Option<String>,
    /// Also make the workload end fit the XDP attach kind (GRO on, TX checksum offload off);
    /// not needed for TC.
    #[arg(long)]
    pub xdp: bool,
    #[command(flatten)]
    pub target: Target,
}
