//! ADD, DEL and CHECK.
use std::{net::Ipv4Addr, path::Path};

use dataplane::{
    model::mac::format_mac,
    system::{
        netinfo,
        workload::{self, GATEWAY, WorkloadSpec},
        workloads::{HostDir, HostFacts, Request, WorkloadRecord},
    },
};
use serde_json::Value;

use crate::{
    ipam,
    loader_link::{self, Answer},
    spec::{AddResult, CniError, Env, NetConf, code},
};

/// The host end's name: `dp` and 12 hex digits of a hash of the container and interface, so
/// that DEL finds it again without the record, and two attachments never collide in
/// practice (Calico names its ends `cali` + a hash the same way).
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bits: stable across releases (std's hasher is not).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in container_id.bytes().chain([b'/']).chain(ifname.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("dp{:012x}", hash >> 16)
}

fn host_dir() -> Result<HostDir, CniError> {
    HostDir::current().map_err(|e| {
        CniError::new(code::IO_FAILURE, "reading this network namespace").with_details(e)
    })
}

fn facts(host: &HostDir) -> Result<HostFacts, CniError> {
    Ok(host
        .read_facts()
        .map_err(|e| {
            CniError::new(
                code::IO_FAILURE,
                format!("reading {}", host.facts_path().display()),
            )
            .with_details(e)
        })?
        .unwrap_or_default())
}

fn io_error(what: &str) -> impl FnOnce(std::io::Error) -> CniError + '_ {
    move |e| CniError::new(code::IO_FAILURE, what.to_string()).with_details(e)
}

/// Wires the container, records it, and returns once the loader holds it. Anything that
/// fails on the way is undone (address released, veth deleted, record removed).
pub fn add(env: &Env, conf: &NetConf, raw: &Value) -> Result<Value, CniError> {
    let netns = env
        .netns
        .as_deref()
        .expect("Env::read requires CNI_NETNS for ADD");
    let host = host_dir()?;
    let host_ifname = host_ifname(&env.container_id, &env.ifname);
    if host
        .read_record(&env.container_id, &env.ifname)
        .ok()
        .flatten()
        .is_some()
        && netinfo::links()
            .map_err(wiring)?
            .iter()
            .any(|l| l.name == host_ifname)
    {
        return Err(CniError::new(
            code::WIRING,
            format!(
                "container {} already has {} on this network (DEL it first)",
                env.container_id, env.ifname
            ),
        ));
    }
    let facts = facts(&host)?;
    let ipam_conf = ipam::configuration(raw, facts.subnet.as_deref())?;
    let allocated = ipam::delegate(env, "ADD", &ipam_conf)?;
    let undo_ipam = |e: CniError| {
        let _ = ipam::delegate(env, "DEL", &ipam_conf);
        e
    };
    let addr = ipam::first_ipv4(&allocated).map_err(undo_ipam)?;
    let spec = WorkloadSpec {
        netns: netns.to_path_buf(),
        host_ifname: host_ifname.clone(),
        ifname: env.ifname.clone(),
        addr,
        mtu: conf.mtu.or(facts.mtu),
        xdp_ready: conf.xdp,
    };
    let undo_wiring = |e: CniError| {
        let _ = workload::unwire(&host_ifname);
        undo_ipam(e)
    };
    workload::wire(&spec)
        .map_err(|e| CniError::new(code::WIRING, "wiring the container").with_details(e))
        .map_err(undo_wiring)?;
    let record = WorkloadRecord {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: netns.display().to_string(),
        host_ifname: host_ifname.clone(),
        addr,
        ipam_subnet: facts.subnet.clone(),
    };
    let undo_record = |e: CniError| {
        let _ = host.remove_record(&env.container_id, &env.ifname);
        undo_wiring(e)
    };
    host.write_record(&record)
        .map_err(io_error("writing the workload's record"))
        .map_err(undo_record)?;
    // No container runs without the programs on its interface: with no loader to attach
    // them, ADD is refused (undone) with the spec's "try again later", and the runtime
    // retries once a loader answers.
    sync(&host, Absent::Refuse).map_err(undo_record)?;
    // The loader took the records; this one may still have lost to another source (the
    // route table naming the same address, say): ADD succeeds only if it is in place.
    match loader_link::ask(
        &host,
        &Request::Check {
            host_ifname: host_ifname.clone(),
            addr,
        },
    ) {
        Ok(Answer::Reply(reply)) if reply.ok => {}
        Ok(Answer::Reply(reply)) => {
            return Err(undo_record(
                CniError::new(code::DATAPLANE, "the loader did not take the workload")
                    .with_details(reply.error.unwrap_or_default()),
            ));
        }
        // The loader went away between its sync and this check: nothing vouches for the
        // programs on the interface, so the container is not wired.
        Ok(Answer::NoLoader) => {
            return Err(undo_record(CniError::new(
                code::TRY_AGAIN_LATER,
                "the loader stopped before it confirmed the workload; try again",
            )));
        }
        Err(e) => return Err(undo_record(CniError::new(code::TRY_AGAIN_LATER, e))),
    }
    let macs = (|| -> Result<_, CniError> {
        let host_mac = netinfo::links()
            .map_err(wiring)?
            .into_iter()
            .find(|l| l.name == host_ifname)
            .and_then(|l| l.mac)
            .map(|m| format_mac(&m))
            .unwrap_or_default();
        let mac = workload::workload_mac(netns, &env.ifname).map_err(wiring)?;
        Ok((host_mac, format_mac(&mac)))
    })();
    let (host_mac, mac) = macs.map_err(undo_record)?;
    Ok(AddResult {
        cni_version: conf.cni_version.clone(),
        host_ifname,
        host_mac,
        ifname: env.ifname.clone(),
        mac,
        sandbox: netns.display().to_string(),
        addr,
        gateway: GATEWAY,
        dns: allocated.get("dns").cloned(),
    }
    .document())
}

/// Removes the container's wiring and record and releases its address; whatever is already
/// gone is fine (DEL twice, DEL of a container never added).
pub fn del(env: &Env, raw: &Value) -> Result<(), CniError> {
    let host = host_dir()?;
    let record = host
        .read_record(&env.container_id, &env.ifname)
        .ok()
        .flatten();
    // The range the address came from, as ADD recorded it: released even when the loader's
    // published facts are gone (`loader detach`) or changed by then.
    let recorded_subnet = record.as_ref().and_then(|r| r.ipam_subnet.clone());
    let host_ifname = record
        .map(|r| r.host_ifname)
        .unwrap_or_else(|| host_ifname(&env.container_id, &env.ifname));
    workload::unwire(&host_ifname).map_err(|e| {
        CniError::new(code::WIRING, "removing the container's veth").with_details(e)
    })?;
    host.remove_record(&env.container_id, &env.ifname)
        .map_err(io_error("removing the workload's record"))?;
    // The loader drops the route and the attachment now rather than at its next look; a
    // loader that refuses does not make DEL fail (the interface is gone either way).
    if let Err(e) = sync(&host, Absent::Fine) {
        eprintln!("ebpf-dataplane: DEL: {e}");
    }
    let subnet = recorded_subnet.or(facts(&host)?.subnet);
    match ipam::configuration(raw, subnet.as_deref()) {
        Ok(ipam_conf) => {
            ipam::delegate(env, "DEL", &ipam_conf)?;
        }
        // No range to hand the IPAM plugin: nothing was ever allocated through this host's
        // prefix (the loader never published one), so there is nothing to release.
        Err(e) if e.code == code::INVALID_CONFIG && raw.get("ipam").is_some() => {
            eprintln!("ebpf-dataplane: DEL: address not released: {e}");
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Says what is not as ADD left it: the record, the host end, the host route, the address in
/// the container, the dataplane's attachment and route, the IPAM plugin's allocation.
pub fn check(env: &Env, conf: &NetConf, raw: &Value) -> Result<(), CniError> {
    let host = host_dir()?;
    let fail = |msg: String| CniError::new(code::CHECK_FAILED, msg);
    let record = host
        .read_record(&env.container_id, &env.ifname)
        .map_err(io_error("reading the workload's record"))?
        .ok_or_else(|| {
            fail(format!(
                "container {} has no {} on this network (no record in {})",
                env.container_id,
                env.ifname,
                host.records().display()
            ))
        })?;
    if let Some(prev) = &conf.prev_result {
        let addr = format!("{}/32", record.addr);
        let listed = prev["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|ip| ip["address"].as_str() == Some(addr.as_str()));
        if !listed {
            return Err(fail(format!(
                "the previous result does not list {addr}, the container's address"
            )));
        }
    }
    let links = netinfo::links().map_err(wiring)?;
    let Some(link) = links.iter().find(|l| l.name == record.host_ifname) else {
        return Err(fail(format!(
            "the host end `{}` is gone",
            record.host_ifname
        )));
    };
    if !link.is_veth() || !link.up {
        return Err(fail(format!(
            "the host end `{}` is not an up veth",
            link.name
        )));
    }
    let routes = netinfo::kernel_routes("main").map_err(wiring)?;
    let dst = record.addr.to_string();
    if !routes
        .iter()
        .any(|r| r.dst == dst && r.dev.as_deref() == Some(link.name.as_str()))
    {
        return Err(fail(format!(
            "the host has no route {} dev {}",
            record.addr, link.name
        )));
    }
    check_container(Path::new(&record.netns), &env.ifname, record.addr)?;
    match loader_link::ask(
        &host,
        &Request::Check {
            host_ifname: record.host_ifname.clone(),
            addr: record.addr,
        },
    )
    .map_err(|e| CniError::new(code::TRY_AGAIN_LATER, e))?
    {
        Answer::Reply(reply) if reply.ok => {}
        Answer::Reply(reply) => return Err(fail(reply.error.unwrap_or_default())),
        Answer::NoLoader => {
            return Err(fail(
                "no loader runs on this host: the container is not attached".into(),
            ));
        }
    }
    let facts = facts(&host)?;
    let ipam_conf = ipam::configuration(raw, facts.subnet.as_deref())?;
    ipam::delegate(env, "CHECK", &ipam_conf)?;
    Ok(())
}

fn check_container(netns: &Path, ifname: &str, addr: Ipv4Addr) -> Result<(), CniError> {
    let addrs = netinfo::ipv4_addrs_in(netns).map_err(|e| {
        CniError::new(
            code::CHECK_FAILED,
            format!(
                "cannot look into the container's namespace {}",
                netns.display()
            ),
        )
        .with_details(e)
    })?;
    if !addrs.iter().any(|(i, a)| i == ifname && *a == addr) {
        return Err(CniError::new(
            code::CHECK_FAILED,
            format!("{ifname} in the container does not have {addr}"),
        ));
    }
    Ok(())
}

/// What a missing loader means to a request.
#[derive(Clone, Copy)]
enum Absent {
    /// The change must not stand without a loader (ADD: an interface without the programs).
    Refuse,
    /// The change stands; the loader takes the records when it starts (DEL).
    Fine,
}

/// Has the loader take the records as they are now; a loader that refuses is an error, and
/// so is none running when `absent` says so.
fn sync(host: &HostDir, absent: Absent) -> Result<(), CniError> {
    match loader_link::ask(host, &Request::Sync) {
        Ok(Answer::Reply(reply)) if reply.ok => Ok(()),
        Ok(Answer::Reply(reply)) => Err(CniError::new(
            code::DATAPLANE,
            "the loader did not take the workload",
        )
        .with_details(reply.error.unwrap_or_default())),
        Ok(Answer::NoLoader) => match absent {
            Absent::Refuse => Err(CniError::new(
                code::TRY_AGAIN_LATER,
                "no loader runs on this host: a container is not wired without the dataplane's programs on its interface; try again once the loader runs",
            )),
            Absent::Fine => {
                eprintln!(
                    "ebpf-dataplane: no loader runs on this host; it takes the change when it starts"
                );
                Ok(())
            }
        },
        Err(e) => Err(CniError::new(code::TRY_AGAIN_LATER, e)),
    }
}

fn wiring(e: impl std::fmt::Display) -> CniError {
    CniError::new(code::WIRING, "reading the host's interfaces").with_details(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ends_are_named_stably_within_the_kernels_limit() {
        let a = host_ifname("4f2b0c1d", "eth0");
        assert_eq!(a, host_ifname("4f2b0c1d", "eth0"));
        assert_ne!(a, host_ifname("4f2b0c1d", "eth1"));
        assert_ne!(a, host_ifname("4f2b0c1e", "eth0"));
        assert!(a.starts_with("dp") && a.len() == 14, "{a}");
    }
}
