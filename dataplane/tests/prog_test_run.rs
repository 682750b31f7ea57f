//! The routing programs on crafted frames (BPF_PROG_TEST_RUN), at XDP and at TC: verdict,
//! output bytes and the counter each frame lands in. Needs root. Each test runs in a network
//! namespace of its own (unshared by its thread), so the device map's entry for `lo` (ifindex 1
//! there) touches nothing outside; test runs send nothing anyway.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use dataplane::{
    checksum::checksum,
    ebpf::{Dataplane, Hook},
    resolve::Plan,
    shared::{NEXTHOP_LOCAL, NEXTHOP_REMOTE, NH_FLAG_VETH_PEER, NextHop},
    stats,
};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

const WORKLOAD_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x02];
const HOST_VETH_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0xee, 0x01];
const PEER_HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const UNDERLAY_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const SENDER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x09, 0x09];

const LOCAL_WORKLOAD: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

/// A test's own network namespace and a dataplane loaded in it, with two routes: a local
/// workload 198.18.1.2/32 and a remote prefix 198.18.2.0/24, both out of `lo` (ifindex 1).
struct Fixture {
    dataplane: Dataplane,
}

fn local_nh() -> NextHop {
    NextHop {
        ifindex: 1,
        kind: NEXTHOP_LOCAL,
        flags: NH_FLAG_VETH_PEER,
        dst_mac: WORKLOAD_MAC,
        src_mac: HOST_VETH_MAC,
        ..Default::default()
    }
}

fn remote_nh() -> NextHop {
    NextHop {
        ifindex: 1,
        kind: NEXTHOP_REMOTE,
        flags: 0,
        dst_mac: PEER_HOST_MAC,
        src_mac: UNDERLAY_MAC,
        ..Default::default()
    }
}

impl Fixture {
    fn new(with_tx_port: bool) -> Self {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "program tests need root (BPF_PROG_TEST_RUN)"
        );
        // SAFETY: unshare affects only this test's thread.
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare(CLONE_NEWNET)"
        );
        let mut dataplane = Dataplane::load().expect("loading the programs");
        let plan = Plan {
            attachments: vec![],
            routes: BTreeMap::from([
                ("198.18.1.2/32".parse().unwrap(), local_nh()),
                ("198.18.2.0/24".parse().unwrap(), remote_nh()),
            ]),
            tx_ports: if with_tx_port {
                BTreeSet::from([1])
            } else {
                BTreeSet::new()
            },
            host_addrs: BTreeSet::from([HOST_ADDR]),
        };
        dataplane.apply(&plan).expect("filling the maps");
        Self { dataplane }
    }

    fn counter(&self, hook: Hook, name: &str) -> u64 {
        let ids = self.dataplane.kernel_ids().unwrap();
        let stats = stats::read(&ids).unwrap();
        stats.hooks[hook_name(hook)][name]
    }

    /// Runs the frame and checks that exactly `counter` moved (besides rx), by one.
    fn run_counted(&self, hook: Hook, frame: &[u8], counter: &str) -> (u32, Vec<u8>) {
        let ids = self.dataplane.kernel_ids().unwrap();
        let before = stats::read(&ids).unwrap();
        let result = self.dataplane.run_on_frame(hook, frame).expect("test run");
        let after = stats::read(&ids).unwrap();
        let h = hook_name(hook);
        for (name, value) in &after.hooks[h] {
            let delta = value - before.hooks[h][name];
            let expected = u64::from(name == counter || name == "rx");
            assert_eq!(
                delta, expected,
                "{h}: counter {name} moved by {delta} (expected {counter})"
            );
        }
        result
    }
}

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Xdp => "xdp",
        Hook::Tc => "tc",
    }
}

fn verdicts(hook: Hook) -> (u32, u32) {
    match hook {
        Hook::Xdp => (XDP_PASS, XDP_REDIRECT),
        Hook::Tc => (TC_ACT_OK, TC_ACT_REDIRECT),
    }
}

/// Ethernet + IPv4 (with `options` 4-byte words of options) + UDP with a 32-byte payload.
fn frame(dst_mac: [u8; 6], ether_type: u16, dst: Ipv4Addr, ttl: u8, options: usize) -> Vec<u8> {
    let payload = [0x5au8; 32];
    let ihl = 5 + options;
    let ip_len = ihl * 4 + 8 + payload.len();
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&SENDER_MAC);
    f.extend_from_slice(&ether_type.to_be_bytes());
    let mut ip = vec![0u8; ihl * 4];
    ip[0] = 0x40 | ihl as u8;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = ttl;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 9, 9]);
    ip[16..20].copy_from_slice(&dst.octets());
    for word in 0..options {
        // NOP options (type 1): valid and ignorable.
        ip[20 + word * 4..24 + word * 4].copy_from_slice(&[1, 1, 1, 1]);
    }
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&5000u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // UDP checksum 0: none (IPv4)
    f.extend_from_slice(&payload);
    f
}

fn ipv4_frame(dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    frame(HOST_VETH_MAC, 0x0800, dst, ttl, 0)
}

fn both_hooks(test: impl Fn(Hook)) {
    test(Hook::Xdp);
    test(Hook::Tc);
}

/// What a correct forward of `input` to `nh` looks like: MACs rewritten, TTL one less,
/// IPv4 checksum recomputed from scratch, everything else identical.
fn expected_forward(input: &[u8], nh: &NextHop) -> Vec<u8> {
    let mut f = input.to_vec();
    f[0..6].copy_from_slice(&nh.dst_mac);
    f[6..12].copy_from_slice(&nh.src_mac);
    f[14 + 8] -= 1;
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let c = checksum(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&c);
    f
}

#[test]
fn forwards_to_a_local_workload_with_rewritten_macs_ttl_and_checksum() {
    let fx = Fixture::new(true);
    both_hooks(|hook| {
        let input = ipv4_frame(LOCAL_WORKLOAD, 64);
        let (verdict, out) = fx.run_counted(hook, &input, "forwarded");
        assert_eq!(verdict, verdicts(hook).1, "{hook:?} verdict");
        assert_eq!(
            out,
            expected_forward(&input, &local_nh()),
            "{hook:?} output frame"
        );
        assert_eq!(out[14 + 8], 63);
        assert_eq!(
            checksum(&out[14..34]),
            [0, 0],
            "the IPv4 header checksum verifies"
        );
    });
}

#[test]
fn forwards_to_a_remote_prefix_by_longest_match() {
    let fx = Fixture::new(true);
    both_hooks(|hook| {
        let input = ipv4_frame(Ipv4Addr::new(198, 18, 2, 77), 2);
        let (verdict, out) = fx.run_counted(hook, &input, "forwarded");
        assert_eq!(verdict, verdicts(hook).1);
        assert_eq!(out, expected_forward(&input, &remote_nh()));
        assert_eq!(out[14 + 8], 1, "TTL 2 forwards with TTL 1");
    });
}

#[test]
fn counts_forwarded_frames_per_egress() {
    let fx = Fixture::new(true);
    let ids = fx.dataplane.kernel_ids().unwrap();
    for _ in 0..3 {
        fx.dataplane
            .run_on_frame(Hook::Xdp, &ipv4_frame(LOCAL_WORKLOAD, 64))
            .unwrap();
    }
    fx.dataplane
        .run_on_frame(Hook::Tc, &ipv4_frame(LOCAL_WORKLOAD, 64))
        .unwrap();
    assert_eq!(
        stats::read(&ids).unwrap().forwarded_by_egress.get(&1),
        Some(&4)
    );
}

/// Frames the programs leave to the kernel: verdict pass, frame untouched, one counter.
fn assert_passed(fx: &Fixture, input: &[u8], counter: &str) {
    both_hooks(|hook| assert_passed_at(fx, hook, input, counter));
}

fn assert_passed_at(fx: &Fixture, hook: Hook, input: &[u8], counter: &str) {
    let (verdict, out) = fx.run_counted(hook, input, counter);
    assert_eq!(
        verdict,
        verdicts(hook).0,
        "{hook:?}: {counter} frames pass to the kernel"
    );
    assert_eq!(out, input, "{hook:?}: a passed frame is untouched");
}

#[test]
fn ttl_one_and_zero_go_to_the_kernel() {
    let fx = Fixture::new(true);
    assert_passed(&fx, &ipv4_frame(LOCAL_WORKLOAD, 1), "pass_ttl_expired");
    assert_passed(&fx, &ipv4_frame(LOCAL_WORKLOAD, 0), "pass_ttl_expired");
}

#[test]
fn unknown_destinations_go_to_the_kernel() {
    let fx = Fixture::new(true);
    assert_passed(
        &fx,
        &ipv4_frame(Ipv4Addr::new(203, 0, 113, 1), 64),
        "pass_no_route",
    );
    assert_passed(
        &fx,
        &ipv4_frame(Ipv4Addr::new(198, 18, 1, 3), 64),
        "pass_no_route",
    );
}

#[test]
fn packets_for_the_host_itself_go_to_the_kernel() {
    let fx = Fixture::new(true);
    assert_passed(&fx, &ipv4_frame(HOST_ADDR, 64), "pass_host_addr");
}

#[test]
fn arp_and_other_protocols_go_to_the_kernel() {
    let fx = Fixture::new(true);
    let mut arp = frame([0xff; 6], 0x0806, LOCAL_WORKLOAD, 64, 0);
    arp.truncate(14 + 28);
    assert_passed(&fx, &arp, "pass_arp");
    assert_passed(
        &fx,
        &frame(HOST_VETH_MAC, 0x86dd, LOCAL_WORKLOAD, 64, 0),
        "pass_not_ipv4",
    );
    assert_passed(
        &fx,
        &frame(HOST_VETH_MAC, 0x8100, LOCAL_WORKLOAD, 64, 0),
        "pass_not_ipv4",
    );
}

#[test]
fn broadcast_and_multicast_frames_go_to_the_kernel() {
    let fx = Fixture::new(true);
    assert_passed(
        &fx,
        &frame([0xff; 6], 0x0800, LOCAL_WORKLOAD, 64, 0),
        "pass_not_unicast",
    );
    assert_passed(
        &fx,
        &frame([0x01, 0x00, 0x5e, 0, 0, 1], 0x0800, LOCAL_WORKLOAD, 64, 0),
        "pass_not_unicast",
    );
}

#[test]
fn ip_options_go_to_the_kernel() {
    let fx = Fixture::new(true);
    assert_passed(
        &fx,
        &frame(HOST_VETH_MAC, 0x0800, LOCAL_WORKLOAD, 64, 1),
        "pass_ip_options",
    );
    assert_passed(
        &fx,
        &frame(HOST_VETH_MAC, 0x0800, LOCAL_WORKLOAD, 64, 10),
        "pass_ip_options",
    );
}

#[test]
fn truncated_and_malformed_frames_go_to_the_kernel() {
    let fx = Fixture::new(true);
    let full = ipv4_frame(LOCAL_WORKLOAD, 64);
    // Ethernet header only; and an IPv4 header cut short. XDP only: the kernel's test run for
    // skb programs refuses an IPv4 frame without a whole IPv4 header before running anything.
    assert_passed_at(&fx, Hook::Xdp, &full[..14], "pass_malformed");
    assert_passed_at(&fx, Hook::Xdp, &full[..14 + 12], "pass_malformed");
    // Total length claims more than the frame holds (a truncated packet).
    assert_passed(&fx, &full[..full.len() - 8], "pass_malformed");
    // Header length below 20 bytes; version 6 in an IPv4 frame.
    let mut short_ihl = full.clone();
    short_ihl[14] = 0x44;
    assert_passed(&fx, &short_ihl, "pass_malformed");
    let mut wrong_version = full.clone();
    wrong_version[14] = 0x65;
    assert_passed(&fx, &wrong_version, "pass_malformed");
    // Total length shorter than the header.
    let mut tiny_total = full;
    tiny_total[16..18].copy_from_slice(&12u16.to_be_bytes());
    assert_passed(&fx, &tiny_total, "pass_malformed");
}

#[test]
fn ethernet_padding_after_the_packet_is_accepted() {
    let fx = Fixture::new(true);
    both_hooks(|hook| {
        let mut input = ipv4_frame(LOCAL_WORKLOAD, 64);
        input.extend_from_slice(&[0u8; 6]);
        let (verdict, out) = fx.run_counted(hook, &input, "forwarded");
        assert_eq!(verdict, verdicts(hook).1);
        assert_eq!(out, expected_forward(&input, &local_nh()));
    });
}

#[test]
fn xdp_passes_an_untouched_frame_when_the_egress_port_is_missing() {
    let fx = Fixture::new(false);
    let input = ipv4_frame(LOCAL_WORKLOAD, 64);
    let (verdict, out) = fx.run_counted(Hook::Xdp, &input, "pass_no_tx_port");
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, input);
    assert_eq!(fx.counter(Hook::Xdp, "forwarded"), 0);
}
