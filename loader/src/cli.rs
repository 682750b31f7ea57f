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
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the programs, fill the maps from the route table, attach to the interfaces it
    /// names, and stay in the foreground, following the file: each change is applied as a
    /// difference within a second; a change that does not parse or resolve is logged with its
    /// line and the running tables stay as they were. SIGINT or SIGTERM detach everything and
    /// exit.
    ///
    /// A route table that does not parse or cannot be resolved (missing interface, next hop
    /// that does not answer ARP) is reported with its line numbers, and nothing is attached.
    Run {
        /// The route table (format: README.md, "Route table").
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Serve Prometheus metrics (counters, map fill levels, routes, apply errors) at
        /// http://ADDR/metrics, ADDR taken in the host's network namespace.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        #[command(flatten)]
        target: Target,
    },
    /// Detach the dataplane of this host: stop its loader if one runs (SIGTERM, then SIGKILL
    /// after --timeout) and remove any program of ours still attached to an interface.
    Detach {
        /// Seconds to wait for a running loader to exit before killing it.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Print the running loader's record: pid, attachments, kernel program and map IDs.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print the route map as the kernel holds it.
    Routes {
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
    /// Wire a workload namespace to this host as a CNI plugin would (Calico style): veth pair,
    /// /32 address, default route via 169.254.1.1 answered by proxy ARP, host route.
    WireWorkload(WireArgs),
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
