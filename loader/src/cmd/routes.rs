//! `loader routes`: the route map as the kernel holds it.
use std::path::Path;

use anyhow::Result;
use dataplane::{common::NextHopKind, kernel::inspect, model::mac::format_mac};

use super::{ifnames, pinned_ids};

/// One route as `loader routes` shows it.
#[derive(serde::Serialize)]
struct RouteRow {
    prefix: String,
    kind: &'static str,
    dev: String,
    ifindex: u32,
    /// The next hop's MAC (routed), or the remote VTEP's MAC (vxlan: the inner frame's).
    dst_mac: String,
    src_mac: String,
    /// VXLAN only: the remote VTEP's underlay address, the VNI, the UDP port.
    #[serde(skip_serializing_if = "Option::is_none")]
    vtep: Option<std::net::Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vni: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

pub fn print(json: bool, bpffs: &Path) -> Result<()> {
    let routes = inspect::routes(&pinned_ids(bpffs)?)?;
    let names = ifnames();
    let rows: Vec<RouteRow> = routes
        .iter()
        .map(|(prefix, nh)| {
            let vxlan = nh.is(NextHopKind::Vxlan);
            RouteRow {
                prefix: prefix.to_string(),
                kind: nh.kind().map_or("unknown", NextHopKind::name),
                dev: names
                    .get(&nh.ifindex)
                    .cloned()
                    .unwrap_or_else(|| nh.ifindex.to_string()),
                ifindex: nh.ifindex,
                dst_mac: format_mac(&nh.dst_mac),
                src_mac: format_mac(&nh.src_mac),
                vtep: vxlan.then(|| std::net::Ipv4Addr::from(nh.outer_dst_ip)),
                vni: vxlan.then(|| u32::from_be_bytes(nh.vni_word) >> 8),
                port: vxlan.then(|| u16::from_be_bytes(nh.udp_dport)),
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<7} {:<15} {:<17} {:<17} VXLAN",
        "PREFIX", "KIND", "DEV", "DST MAC", "SRC MAC"
    );
    for r in &rows {
        let tunnel = match (r.vtep, r.vni, r.port) {
            (Some(vtep), Some(vni), Some(port)) => format!("vtep {vtep} vni {vni} port {port}"),
            _ => String::new(),
        };
        println!(
            "{:<20} {:<7} {:<15} {:<17} {:<17} {tunnel}",
            r.prefix, r.kind, r.dev, r.dst_mac, r.src_mac
        );
    }
    Ok(())
}
