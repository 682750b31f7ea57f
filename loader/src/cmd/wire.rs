//! `loader wire-workload`: a workload wired as a CNI plugin would (see
//! `dataplane::system::workload`).
use anyhow::{Context, Result};
use dataplane::system::workload::{self, WorkloadSpec};

use crate::cli::WireArgs;

pub fn wire(args: WireArgs) -> Result<()> {
    let mtu = match &args.vxlan_underlay {
        Some(underlay) => Some(workload::vxlan_mtu(underlay)?),
        None => args.mtu,
    };
    workload::wire(&WorkloadSpec {
        netns: std::path::Path::new(dataplane::system::netns::NETNS_DIR).join(&args.workload_netns),
        host_ifname: args.host_if,
        ifname: args.ifname,
        addr: args.addr,
        mtu,
        xdp_ready: args.xdp,
    })
    .context("wiring the workload")
}
