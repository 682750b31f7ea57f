//! End to end, as root: VXLAN between two hosts made of network namespaces.
//!
//! - Both hosts run the eBPF dataplane (XDP and TC), `iptables -P FORWARD DROP` on both.
//! - Mixed: host 0 runs the eBPF dataplane, host 1 the Linux kernel vxlan device configured as
//!   Flannel configures it. Traffic in both directions, on IANA's port 4789 and Flannel's 8472:
//!   the wire format checked against an implementation nobody here wrote.
mod common;

use common::*;
use dataplane::{kernel::inspect::Stats, model::route_table::Attach};
use netlab::{topology::UNDERLAY_IF, traffic::ping};

/// The calling root test's bed: one workload per host, VXLAN on `port` (None: skipped).
fn vxlan_topology(attach: Attach, port: u16) -> Option<TestBed> {
    TestBed::vxlan(1, attach, port)
}

/// Counters of host `netns` that moved between `before` and `after`.
fn moved(before: &Stats, after: &Stats, hook: &str, name: &str) -> u64 {
    counter(after, hook, name) - counter(before, hook, name)
}

fn vxlan_between_ebpf_hosts(attach: Attach) {
    let hook = hook_of(attach);
    let Some(topo) = vxlan_topology(attach, 4789).map(TestBed::forward_drop) else {
        return;
    };
    let (a, b) = (&topo.hosts[0].workloads[0], &topo.hosts[1].workloads[0]);
    assert!(
        !ping(&a.ns, b.addr, 1).unwrap(),
        "no path exists before the loaders run"
    );

    let loaders = [topo.start_loader(0, attach), topo.start_loader(1, attach)];
    let (h0, h1) = (topo.host(0), topo.host(1));
    let table = routes(h0);
    let tunnel = table
        .iter()
        .find(|r| r["prefix"] == "198.18.2.0/24")
        .expect("route to host 1");
    assert_eq!(
        (
            &tunnel["kind"],
            &tunnel["vtep"],
            &tunnel["vni"],
            &tunnel["port"],
            &tunnel["dev"]
        ),
        (
            &"vxlan".into(),
            &"198.19.0.2".into(),
            &1.into(),
            &4789.into(),
            &"eth0".into()
        )
    );
    assert_eq!(
        tunnel["dst_mac"], "02:76:c6:13:00:02",
        "host 1's default VTEP MAC"
    );

    // 5 echo requests out and 5 replies in on each host: exactly that many encapsulations and
    // decapsulations, each also a forwarded frame.
    let (before, after) = counted_pings(
        a,
        b,
        (h0, h1),
        &format!("cross-host ping over eBPF VXLAN ({hook})"),
    );
    for (host, (before, after)) in [
        ("host 0", (&before.0, &after.0)),
        ("host 1", (&before.1, &after.1)),
    ] {
        assert_eq!(
            moved(before, after, hook, "vxlan_encap"),
            5,
            "{host} encapsulated"
        );
        assert_eq!(
            moved(before, after, hook, "vxlan_decap"),
            5,
            "{host} decapsulated"
        );
        assert_eq!(
            moved(before, after, hook, "forwarded"),
            10,
            "{host} forwarded"
        );
    }
    traffic_works(&format!("eBPF VXLAN ({hook}) host 0 -> host 1"), a, b);

    detach(h0);
    detach(h1);
    for guard in loaders {
        assert!(guard.wait().unwrap().status.success(), "loader exit status");
    }
    assert!(!ping(&a.ns, b.addr, 2).unwrap(), "no path after detach");
}

#[test]
fn vxlan_between_ebpf_hosts_with_tc_attach() {
    vxlan_between_ebpf_hosts(Attach::Tc);
}

#[test]
fn vxlan_between_ebpf_hosts_with_xdp_attach() {
    vxlan_between_ebpf_hosts(Attach::Xdp);
}

/// Host 0: the eBPF dataplane with `attach`, FORWARD DROP. Host 1: the kernel vxlan device,
/// Flannel-style, FORWARD ACCEPT (the kernel forwards there).
fn interop_with_the_kernel_vxlan_driver(attach: Attach, port: u16) {
    let hook = hook_of(attach);
    let Some(topo) = vxlan_topology(attach, port) else {
        return;
    };
    topo.make_kernel_vxlan_host(1).unwrap();
    topo.hosts[0]
        .ns
        .exec("iptables", &["-P", "FORWARD", "DROP"])
        .unwrap();
    if attach != Attach::Tc {
        // Host 0's XDP redirects frames into the underlay veth; the kernel host's end must run
        // NAPI to receive them (see README, "Attach kinds").
        topo.hosts[1]
            .ns
            .exec("ethtool", &["-K", UNDERLAY_IF, "gro", "on"])
            .unwrap();
    }
    let (a, b) = (&topo.hosts[0].workloads[0], &topo.hosts[1].workloads[0]);
    let loader0 = topo.start_loader(0, attach);
    let h0 = topo.hosts[0].ns.name();
    let what = format!("port {port}, eBPF ({hook}) host <-> kernel vxlan host");

    let before = stats(h0);
    assert!(
        ping(&a.ns, b.addr, 5).unwrap(),
        "{what}: ping from the eBPF side"
    );
    assert!(
        ping(&b.ns, a.addr, 5).unwrap(),
        "{what}: ping from the kernel side"
    );
    let after = stats(h0);
    assert_eq!(
        moved(&before, &after, hook, "vxlan_encap"),
        10,
        "{what}: encapsulated on host 0"
    );
    assert_eq!(
        moved(&before, &after, hook, "vxlan_decap"),
        10,
        "{what}: decapsulated on host 0"
    );
    for name in [
        "drop_vxlan_malformed",
        "drop_vxlan_unknown_vni",
        "drop_vxlan_inner",
    ] {
        assert_eq!(moved(&before, &after, hook, name), 0, "{what}: {name}");
    }

    traffic_works(&format!("{what}, eBPF -> kernel"), a, b);
    traffic_works(&format!("{what}, kernel -> eBPF"), b, a);

    detach(h0);
    assert!(loader0.wait().unwrap().status.success());
    assert!(
        !ping(&a.ns, b.addr, 2).unwrap(),
        "{what}: no path after detach"
    );
}

#[test]
fn interop_with_kernel_vxlan_on_port_4789_tc() {
    interop_with_the_kernel_vxlan_driver(Attach::Tc, 4789);
}

#[test]
fn interop_with_kernel_vxlan_on_port_8472_tc() {
    interop_with_the_kernel_vxlan_driver(Attach::Tc, 8472);
}

#[test]
fn interop_with_kernel_vxlan_on_port_8472_xdp() {
    interop_with_the_kernel_vxlan_driver(Attach::Xdp, 8472);
}
