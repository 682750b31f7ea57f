//! The routing programs on crafted frames (BPF_PROG_TEST_RUN), at XDP and at TC: verdict,
//! output bytes and the counter each frame lands in. Needs root (skipped, with a message,
//! without it). Each test runs in a network namespace of its own (unshared by its thread), so
//! the device map's entry for `lo` (ifindex 1 there) touches nothing outside; test runs send
//! nothing anyway.
mod fixture;

use dataplane::model::{Ipv4Prefix, policy::Direction, route_table::Role};
use std::{collections::BTreeSet, net::Ipv4Addr};

use dataplane::kernel::{inspect as stats, synthetic::*};
use dataplane_common::{
    Hook, NextHop,
    checksum::{checksum, flow_source_port},
};
use fixture::*;

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
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    both_hooks(|hook| {
        let input = ipv4_frame(LOCAL_WORKLOAD, 64);
        let (verdict, out) = fx.run_counted(hook, &input, &["forwarded"]);
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
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    both_hooks(|hook| {
        let input = ipv4_frame(Ipv4Addr::new(198, 18, 2, 77), 2);
        let (verdict, out) = fx.run_counted(hook, &input, &["forwarded"]);
        assert_eq!(verdict, verdicts(hook).1);
        assert_eq!(out, expected_forward(&input, &remote_nh()));
        assert_eq!(out[14 + 8], 1, "TTL 2 forwards with TTL 1");
    });
}

#[test]
fn counts_forwarded_frames_per_egress() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    let ids = fx.dataplane.kernel_ids().unwrap();
    for _ in 0..3 {
        fx.dataplane
            .run_on_frame(Hook::Xdp, Role::Underlay, &ipv4_frame(LOCAL_WORKLOAD, 64))
            .unwrap();
    }
    fx.dataplane
        .run_on_frame(Hook::Tc, Role::Underlay, &ipv4_frame(LOCAL_WORKLOAD, 64))
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
    let (verdict, out) = fx.run_counted(hook, input, &[counter]);
    assert_eq!(
        verdict,
        verdicts(hook).0,
        "{hook:?}: {counter} frames pass to the kernel"
    );
    assert_eq!(out, input, "{hook:?}: a passed frame is untouched");
}

#[test]
fn ttl_one_and_zero_go_to_the_kernel() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    assert_passed(&fx, &ipv4_frame(LOCAL_WORKLOAD, 1), "pass_ttl_expired");
    assert_passed(&fx, &ipv4_frame(LOCAL_WORKLOAD, 0), "pass_ttl_expired");
}

#[test]
fn unknown_destinations_go_to_the_kernel() {
    netlab::root_or_skip!();
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
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    assert_passed(&fx, &ipv4_frame(HOST_ADDR, 64), "pass_host_addr");
}

#[test]
fn a_host_address_stays_the_kernels_under_a_route_that_covers_it_until_it_leaves_the_host() {
    netlab::root_or_skip!();
    let mut fx = Fixture::new(true);
    // The underlay's /24, the host address inside it, and even a /32 for the host address
    // itself: the host's own packets are still the kernel's.
    let mut covered = plan(true);
    let underlay: Ipv4Prefix = "198.19.0.0/24".parse().unwrap();
    let host: Ipv4Prefix = Ipv4Prefix::new(HOST_ADDR, 32).unwrap();
    covered.routes.insert(underlay, remote_nh());
    covered.routes.insert(host, remote_nh());
    fx.dataplane.apply(&covered).expect("filling the maps");
    both_hooks(|hook| {
        assert_passed_at(&fx, hook, &ipv4_frame(HOST_ADDR, 64), "pass_host_addr");
        let neighbour = ipv4_frame(Ipv4Addr::new(198, 19, 0, 9), 64);
        let (verdict, _) = fx.run_counted(hook, &neighbour, &["forwarded"]);
        assert_eq!(verdict, verdicts(hook).1);
    });
    // The address leaves the host: its packets now follow the routes.
    let mut moved = covered.clone();
    moved.host_addrs.clear();
    moved.routes.remove(&host);
    moved.vxlan = None;
    fx.dataplane.apply(&moved).expect("filling the maps");
    both_hooks(|hook| {
        let (verdict, _) = fx.run_counted(hook, &ipv4_frame(HOST_ADDR, 64), &["forwarded"]);
        assert_eq!(verdict, verdicts(hook).1);
    });
}

#[test]
fn arp_and_other_protocols_go_to_the_kernel() {
    netlab::root_or_skip!();
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
fn broadcast_and_multicast_frames_from_the_underlay_go_to_the_kernel_and_a_workload_s_are_dropped()
{
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    let broadcast = frame([0xff; 6], 0x0800, HOST_ADDR, 64, 0);
    let multicast = frame([0x01, 0x00, 0x5e, 0, 0, 1], 0x0800, HOST_ADDR, 64, 0);
    for input in [&broadcast, &multicast] {
        assert_passed(&fx, input, "pass_not_unicast");
        both_hooks(|hook| {
            // From the workload, in its own name or not: the kernel would take it for the
            // host's own address past the source check and policy.
            for source in [LOCAL_WORKLOAD, Ipv4Addr::new(198, 18, 9, 9)] {
                let forged = from_source(input, source);
                let (verdict, out) = fx.run_counted_from(
                    hook,
                    Role::Workload,
                    &forged,
                    &["drop_not_unicast_from_workload"],
                );
                assert_eq!(
                    verdict,
                    drop_verdict(hook),
                    "{hook:?}: {source} in a group frame"
                );
                assert_eq!(out, forged);
            }
        });
    }
}

/// An ARP request as the workload behind `lo` sends it: who has `target`, tell `sender`.
fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    dataplane::kernel::synthetic::arp_request([0x02, 0, 0, 0, 0, 0x42], sender, target)
}

#[test]
fn a_workload_s_arp_in_its_own_name_goes_to_the_kernel_and_forged_ones_are_dropped() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    both_hooks(|hook| {
        // Controls: in its own name, and a probe (sender 0.0.0.0).
        for sender in [LOCAL_WORKLOAD, Ipv4Addr::UNSPECIFIED] {
            let own = arp_request(sender, HOST_ADDR);
            let (verdict, out) = fx.run_counted_from(hook, Role::Workload, &own, &["pass_arp"]);
            assert_eq!(
                verdict,
                verdicts(hook).0,
                "{hook:?}: ARP from {sender} passes"
            );
            assert_eq!(out, own);
        }
        let mut not_ipv4 = arp_request(LOCAL_WORKLOAD, HOST_ADDR);
        not_ipv4[16] = 0x86; // an IPv6 "ARP"
        let mut other_mac = arp_request(LOCAL_WORKLOAD, HOST_ADDR);
        other_mac[22 + 5] = 0x43; // a sender MAC that is not the frame's
        for forged in [
            arp_request(Ipv4Addr::new(198, 18, 2, 7), HOST_ADDR), // another host's workload
            arp_request(Ipv4Addr::new(198, 19, 0, 2), HOST_ADDR), // the host's peer
            arp_request(Ipv4Addr::new(198, 18, 1, 9), HOST_ADDR), // nobody's
            not_ipv4,
            other_mac,
            arp_request(LOCAL_WORKLOAD, HOST_ADDR)[..30].to_vec(), // cut short
        ] {
            let (verdict, _) =
                fx.run_counted_from(hook, Role::Workload, &forged, &["drop_arp_from_workload"]);
            assert_eq!(verdict, drop_verdict(hook), "{hook:?}: forged ARP refused");
        }
        // From the underlay, ARP is the kernel's, whoever it names.
        let (verdict, _) = fx.run_counted(
            hook,
            &arp_request(Ipv4Addr::new(198, 19, 0, 9), HOST_ADDR),
            &["pass_arp"],
        );
        assert_eq!(verdict, verdicts(hook).0);
    });
}

#[test]
fn ip_options_go_to_the_kernel() {
    netlab::root_or_skip!();
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
    netlab::root_or_skip!();
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
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    both_hooks(|hook| {
        let mut input = ipv4_frame(LOCAL_WORKLOAD, 64);
        input.extend_from_slice(&[0u8; 6]);
        let (verdict, out) = fx.run_counted(hook, &input, &["forwarded"]);
        assert_eq!(verdict, verdicts(hook).1);
        assert_eq!(out, expected_forward(&input, &local_nh()));
    });
}

#[test]
fn xdp_passes_an_untouched_frame_when_the_egress_port_is_missing() {
    netlab::root_or_skip!();
    let fx = Fixture::new(false);
    let input = ipv4_frame(LOCAL_WORKLOAD, 64);
    let (verdict, out) = fx.run_counted(Hook::Xdp, &input, &["pass_no_tx_port"]);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, input);
    assert_eq!(fx.counter(Hook::Xdp, "forwarded"), 0);
}

// ---- VXLAN ----

fn drop_verdict(hook: Hook) -> u32 {
    match hook {
        Hook::Xdp => XDP_DROP,
        Hook::Tc => TC_ACT_SHOT,
    }
}

/// The frame the encapsulation must produce for `inner` (an Ethernet frame to a 198.18.3.0/24
/// address), built field by field here, independently of the program's code.
fn expected_encap(inner: &[u8]) -> Vec<u8> {
    let mut inner_routed = inner.to_vec();
    inner_routed[14 + 8] -= 1;
    inner_routed[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&inner_routed[14..34]);
    inner_routed[24..26].copy_from_slice(&c);
    inner_routed[0..6].copy_from_slice(&REMOTE_VTEP_MAC);
    inner_routed[6..12].copy_from_slice(&LOCAL_VTEP_MAC);

    let total = inner.len() + 50;
    let mut f = Vec::new();
    f.extend_from_slice(&PEER_HOST_MAC);
    f.extend_from_slice(&UNDERLAY_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((total - 14) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&HOST_ADDR.octets());
    ip[16..20].copy_from_slice(&REMOTE_VTEP.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c);
    f.extend_from_slice(&ip);
    let ports = [inner[34], inner[35], inner[36], inner[37]];
    let src: [u8; 4] = inner[26..30].try_into().unwrap();
    let dst: [u8; 4] = inner[30..34].try_into().unwrap();
    let sport = flow_source_port(src, dst, inner[23], ports, 32768, 60999);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&VXLAN_PORT.to_be_bytes());
    f.extend_from_slice(&((total - 34) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x08, 0, 0, 0]);
    f.extend_from_slice(&(VNI << 8).to_be_bytes());
    f.extend_from_slice(&inner_routed);
    f
}

#[test]
fn encapsulates_byte_exact() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    both_hooks(|hook| {
        let input = ipv4_frame(Ipv4Addr::new(198, 18, 3, 7), 64);
        let (verdict, out) = fx.run_counted(hook, &input, &["forwarded", "vxlan_encap"]);
        assert_eq!(verdict, verdicts(hook).1, "{hook:?} verdict");
        let expected = expected_encap(&input);
        assert_eq!(out.len(), input.len() + 50);
        assert_eq!(out, expected, "{hook:?} encapsulated frame");
        assert_eq!(
            checksum(&out[14..34]),
            [0, 0],
            "outer IPv4 checksum verifies"
        );
        assert_eq!(
            checksum(&out[64..84]),
            [0, 0],
            "inner IPv4 checksum verifies"
        );
    });
}

#[test]
fn the_source_port_follows_the_flow() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    let sport = |src_port: u16| {
        let mut input = ipv4_frame(Ipv4Addr::new(198, 18, 3, 7), 64);
        input[34..36].copy_from_slice(&src_port.to_be_bytes());
        let (_, out) = fx
            .dataplane
            .run_on_frame(Hook::Xdp, Role::Underlay, &input)
            .unwrap();
        u16::from_be_bytes([out[34], out[35]])
    };
    assert_eq!(sport(4000), sport(4000), "one flow, one port");
    let distinct: BTreeSet<u16> = (4000..4016).map(sport).collect();
    assert!(
        distinct.len() >= 12,
        "16 flows gave only {} source ports",
        distinct.len()
    );
    assert!(distinct.iter().all(|p| (32768..=60999).contains(p)));
}

/// ICMP "fragmentation needed" for `input`, as the programs answer it: MACs swapped, from the
/// host's tunnel address, next-hop MTU `mtu`, quoting the packet's header and 44 bytes.
fn expected_frag_needed(input: &[u8], mtu: u16) -> Vec<u8> {
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&input[14..14 + 64]);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c);
    let mut ip = vec![0x45, 0, 0, 92, 0, 0, 0x40, 0, 64, 1, 0, 0];
    ip.extend_from_slice(&HOST_ADDR.octets());
    ip.extend_from_slice(&input[26..30]);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c);
    let mut f = Vec::new();
    f.extend_from_slice(&input[6..12]);
    f.extend_from_slice(&input[0..6]);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

#[test]
fn a_packet_too_big_for_the_tunnel_is_answered_with_frag_needed_or_left_to_the_kernel() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    // 198.18.4.0/24's tunnel has an MTU of 120: an inner IP packet of 60 bytes fits
    // (60 + 50 = 110), one of 80 does not.
    let small = ipv4_frame(Ipv4Addr::new(198, 18, 4, 1), 64);
    assert_eq!(small.len() - 14, 60);
    both_hooks(|hook| {
        let (verdict, _) = fx.run_counted(hook, &small, &["forwarded", "vxlan_encap"]);
        assert_eq!(verdict, verdicts(hook).1);
    });
    let big = with_payload(&small, 20);
    assert_eq!(big.len() - 14, 80);
    assert_eq!(big[20], 0x40, "the test frames have DF");
    both_hooks(|hook| {
        let (verdict, out) = fx.run_counted(hook, &big, &["reply_frag_needed"]);
        assert_eq!(
            verdict,
            verdicts(hook).1,
            "{hook:?}: answered, redirected back where it came from"
        );
        assert_eq!(
            out,
            expected_frag_needed(&big, 120 - 50),
            "{hook:?}: ICMP fragmentation needed with the tunnel's inner MTU"
        );
    });
    // Without DF the sender does not want to hear it: the kernel's (which would fragment).
    let mut no_df = big.clone();
    no_df[20] = 0;
    no_df[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&no_df[14..34]);
    no_df[24..26].copy_from_slice(&c);
    assert_passed(&fx, &no_df, "pass_too_big");
}

/// Fixes the outer IPv4 total length and checksum (and the UDP length) after the frame's
/// length changed, so that it is a well-formed packet of its new size.
fn relength(mut f: Vec<u8>) -> Vec<u8> {
    let ihl = (f[14] & 0x0f) as usize * 4;
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c);
    if f.len() >= 14 + ihl + 6 {
        let udp_len = (f.len() - 14 - ihl) as u16;
        f[14 + ihl + 4..14 + ihl + 6].copy_from_slice(&udp_len.to_be_bytes());
    }
    f
}

/// `f` with `extra` more payload bytes, lengths fixed.
fn with_payload(f: &[u8], extra: usize) -> Vec<u8> {
    let mut g = f.to_vec();
    g.extend(std::iter::repeat_n(0x5a, extra));
    relength(g)
}

/// A well-formed packet whose UDP payload ends after `len` bytes of frame.
fn shortened(f: &[u8], len: usize) -> Vec<u8> {
    relength(f[..len].to_vec())
}

/// The inner frame routed to the local workload: what decapsulation must deliver.
fn expected_decap(frame: &[u8]) -> Vec<u8> {
    let inner_start = frame.len() - (14 + 20 + 8 + 32);
    let inner = &frame[inner_start..];
    expected_forward(inner, &local_nh())
}

#[test]
fn decapsulates_what_the_kernel_driver_sends() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    both_hooks(|hook| {
        let input = kernel_vxlan_frame(VNI, VXLAN_PORT, LOCAL_WORKLOAD, 0);
        let (verdict, out) = fx.run_counted(hook, &input, &["forwarded", "vxlan_decap"]);
        assert_eq!(verdict, verdicts(hook).1, "{hook:?} verdict");
        assert_eq!(out, expected_decap(&input), "{hook:?} decapsulated frame");
        assert_eq!(out[14 + 8], 62, "one routed hop after the tunnel");
    });
}

#[test]
fn decapsulates_with_options_on_the_outer_header() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    both_hooks(|hook| {
        let input = kernel_vxlan_frame(VNI, VXLAN_PORT, LOCAL_WORKLOAD, 2);
        let (verdict, out) = fx.run_counted(hook, &input, &["forwarded", "vxlan_decap"]);
        assert_eq!(verdict, verdicts(hook).1);
        assert_eq!(out, expected_decap(&input));
    });
}

fn assert_dropped(fx: &Fixture, hooks: &[Hook], input: &[u8], counter: &str) {
    for &hook in hooks {
        let (verdict, out) = fx.run_counted(hook, input, &[counter]);
        assert_eq!(
            verdict,
            drop_verdict(hook),
            "{hook:?}: {counter} frames are dropped"
        );
        assert_eq!(out, input, "{hook:?}: a dropped frame is left as it came");
    }
}

#[test]
fn vxlan_for_a_vni_this_host_does_not_serve_is_dropped() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    let input = kernel_vxlan_frame(VNI + 1, VXLAN_PORT, LOCAL_WORKLOAD, 0);
    assert_dropped(
        &fx,
        &[Hook::Xdp, Hook::Tc],
        &input,
        "drop_vxlan_unknown_vni",
    );
}

#[test]
fn short_or_flagless_vxlan_is_dropped() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    let full = kernel_vxlan_frame(VNI, VXLAN_PORT, LOCAL_WORKLOAD, 0);
    // UDP payloads that end inside the VXLAN header, right after it (no inner Ethernet
    // header), and inside the inner Ethernet header.
    for len in [14 + 20 + 8 + 4, 14 + 20 + 8 + 8, 14 + 20 + 8 + 8 + 10] {
        assert_dropped(
            &fx,
            &[Hook::Xdp, Hook::Tc],
            &shortened(&full, len),
            "drop_vxlan_malformed",
        );
    }
    // A frame cut short of what its IPv4 header claims is malformed before anything else.
    assert_passed(&fx, &full[..full.len() - 10], "pass_malformed");
    let mut no_i_flag = full;
    no_i_flag[14 + 20 + 8] = 0;
    assert_dropped(
        &fx,
        &[Hook::Xdp, Hook::Tc],
        &no_i_flag,
        "drop_vxlan_malformed",
    );
}

#[test]
fn a_decapsulated_packet_not_for_a_local_workload_is_dropped() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    // The inner destination is another host's prefix: this host is no transit router.
    let transit = kernel_vxlan_frame(VNI, VXLAN_PORT, Ipv4Addr::new(198, 18, 2, 9), 0);
    let mut inner_arp = kernel_vxlan_frame(VNI, VXLAN_PORT, LOCAL_WORKLOAD, 0);
    inner_arp[14 + 20 + 16 + 12..14 + 20 + 16 + 14].copy_from_slice(&[0x08, 0x06]);
    for hook in [Hook::Xdp, Hook::Tc] {
        let (verdict, _) = fx.run_counted(hook, &transit, &["vxlan_decap", "drop_vxlan_inner"]);
        assert_eq!(verdict, drop_verdict(hook));
    }
    assert_dropped(&fx, &[Hook::Xdp, Hook::Tc], &inner_arp, "drop_vxlan_inner");
}

#[test]
fn udp_to_another_port_is_the_kernels() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    assert_passed(
        &fx,
        &kernel_vxlan_frame(VNI, 8472, LOCAL_WORKLOAD, 0),
        "pass_host_addr",
    );
    // A UDP header cut short: not recognisable as VXLAN, so the kernel's too.
    let full = kernel_vxlan_frame(VNI, VXLAN_PORT, LOCAL_WORKLOAD, 0);
    let mut short_udp = full[..14 + 20 + 4].to_vec();
    short_udp[16..18].copy_from_slice(&24u16.to_be_bytes());
    short_udp[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&short_udp[14..34]);
    short_udp[24..26].copy_from_slice(&c);
    assert_passed(&fx, &short_udp, "pass_host_addr");
    // A later fragment of a datagram to the VXLAN port: the kernel reassembles.
    let mut fragment = full;
    fragment[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
    fragment[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&fragment[14..34]);
    fragment[24..26].copy_from_slice(&c);
    assert_passed(&fx, &fragment, "pass_host_addr");
}

// --- Policy -----------------------------------------------------------------------------

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A fixture whose maps also hold `policy`.
fn with_policy(policy: &str) -> Fixture {
    let mut fx = Fixture::new(true);
    let policy = dataplane::model::policy::parse(policy).expect("test policy parses");
    fx.dataplane.apply_policy(&policy).expect("policy applied");
    fx
}

fn assert_forwarded(fx: &Fixture, hook: Hook, frame: &[u8], also: &[&str]) {
    assert_forwarded_from(fx, hook, Role::Underlay, frame, also);
}

/// As [`assert_forwarded`], for a frame arriving on an interface facing `role` (a frame the
/// local workload sends arrives on its own interface: `Role::Workload`).
fn assert_forwarded_from(fx: &Fixture, hook: Hook, role: Role, frame: &[u8], also: &[&str]) {
    let mut counters = vec!["forwarded"];
    counters.extend_from_slice(also);
    let (verdict, _) = fx.run_counted_from(hook, role, frame, &counters);
    assert_eq!(verdict, verdicts(hook).1, "{}: forwarded", hook.name());
}

fn assert_refused(fx: &Fixture, hook: Hook, frame: &[u8], counter: &str) {
    assert_refused_from(fx, hook, Role::Underlay, frame, counter);
}

fn assert_refused_from(fx: &Fixture, hook: Hook, role: Role, frame: &[u8], counter: &str) {
    let (verdict, _) = fx.run_counted_from(hook, role, frame, &[counter]);
    assert_eq!(
        verdict,
        drop_verdict(hook),
        "{}: dropped by {counter}",
        hook.name()
    );
}

fn denied(fx: &Fixture, workload: &str, direction: Direction) -> u64 {
    let stats = stats::read(&fx.dataplane.kernel_ids().unwrap()).unwrap();
    stats
        .policy_denied
        .iter()
        .find(|d| d.workload == ip(workload) && d.direction == direction)
        .map_or(0, |d| d.packets)
}

const WEB: &str = "\
workload 198.18.1.2 ingress deny egress allow
allow ingress 198.18.1.2 peer 198.18.9.0/24 proto tcp port 80-81
deny ingress 198.18.1.2 peer 198.18.9.9/32 proto tcp port 81
";

#[test]
fn ingress_policy_admits_by_rule_denies_by_rule_and_by_default() {
    netlab::root_or_skip!();
    both_hooks(|hook| {
        let fx = with_policy(WEB);
        let to_web =
            |src: &str, proto, dport| l4_frame(ip(src), LOCAL_WORKLOAD, proto, 40_000, dport, 0);
        assert_forwarded(
            &fx,
            hook,
            &to_web("198.18.9.9", TCP, 80),
            &["policy_new_flow"],
        );
        // Deny wins over the /24's allow for this one peer and port.
        assert_refused(
            &fx,
            hook,
            &to_web("198.18.9.9", TCP, 81),
            "drop_policy_ingress",
        );
        assert_forwarded(
            &fx,
            hook,
            &to_web("198.18.9.8", TCP, 81),
            &["policy_new_flow"],
        );
        // Range edges, another protocol, a peer outside every rule: the default (deny).
        assert_refused(
            &fx,
            hook,
            &to_web("198.18.9.8", TCP, 82),
            "drop_policy_ingress",
        );
        assert_refused(
            &fx,
            hook,
            &to_web("198.18.9.8", TCP, 79),
            "drop_policy_ingress",
        );
        assert_refused(
            &fx,
            hook,
            &to_web("198.18.9.8", UDP, 80),
            "drop_policy_ingress",
        );
        assert_refused(
            &fx,
            hook,
            &to_web("198.18.8.1", TCP, 80),
            "drop_policy_ingress",
        );
        assert_eq!(denied(&fx, "198.18.1.2", Direction::Ingress), 5);
        // Traffic not to or from a workload under policy is not looked at.
        let elsewhere = l4_frame(ip("198.18.9.9"), ip("198.18.2.7"), UDP, 1, 2, 0);
        assert_forwarded(&fx, hook, &elsewhere, &[]);
    });
}

#[test]
fn replies_of_an_admitted_flow_pass_and_nothing_else_does() {
    netlab::root_or_skip!();
    let policy = "\
workload 198.18.1.2 ingress deny egress deny
allow egress 198.18.1.2 peer 198.18.2.0/24 proto udp port 53
allow egress 198.18.1.2 proto icmp
";
    both_hooks(|hook| {
        let fx = with_policy(policy);
        let query = l4_frame(LOCAL_WORKLOAD, ip("198.18.2.5"), UDP, 4000, 53, 0);
        let answer = l4_frame(ip("198.18.2.5"), LOCAL_WORKLOAD, UDP, 53, 4000, 0);
        // What the workload sends arrives on its own interface.
        let sent = Role::Workload;
        // No flow yet: the answer meets ingress policy (default deny).
        assert_refused(&fx, hook, &answer, "drop_policy_ingress");
        assert_forwarded_from(&fx, hook, sent, &query, &["policy_new_flow"]);
        assert_forwarded(&fx, hook, &answer, &["policy_established"]);
        assert_forwarded_from(&fx, hook, sent, &query, &["policy_established"]);
        // Same peers, another port: a flow of its own, which no rule admits.
        let other = l4_frame(ip("198.18.2.5"), LOCAL_WORKLOAD, UDP, 53, 4001, 0);
        assert_refused(&fx, hook, &other, "drop_policy_ingress");
        // Egress default deny: TCP to the same peer.
        let tcp = l4_frame(LOCAL_WORKLOAD, ip("198.18.2.5"), TCP, 4000, 53, 0);
        assert_refused_from(&fx, hook, sent, &tcp, "drop_policy_egress");
        assert_eq!(denied(&fx, "198.18.1.2", Direction::Egress), 1);
        // Sent from the underlay with the workload's address, the same frame is not the
        // workload's: its egress rules are enforced where it sends, on its interface.
        assert_forwarded(&fx, hook, &tcp, &[]);
        // Echo: the request is admitted, its reply (type 0, same identifier) is the reverse.
        let echo = l4_frame(LOCAL_WORKLOAD, ip("198.18.2.5"), ICMP, 77, 0, 0);
        assert_forwarded_from(&fx, hook, sent, &echo, &["policy_new_flow"]);
        let mut reply = l4_frame(ip("198.18.2.5"), LOCAL_WORKLOAD, ICMP, 77, 0, 0);
        reply[34] = 0; // echo reply
        assert_forwarded(&fx, hook, &reply, &["policy_established"]);
    });
}

#[test]
fn fragments_and_cut_headers_to_a_workload_under_policy_are_refused() {
    netlab::root_or_skip!();
    both_hooks(|hook| {
        let fx = with_policy(WEB);
        let later_fragment = l4_frame(ip("198.18.9.9"), LOCAL_WORKLOAD, TCP, 40_000, 80, 0x0010);
        assert_refused(&fx, hook, &later_fragment, "drop_policy_uncheckable");
        let first_fragment = l4_frame(ip("198.18.9.9"), LOCAL_WORKLOAD, TCP, 40_000, 80, 0x2000);
        assert_refused(&fx, hook, &first_fragment, "drop_policy_uncheckable");
    });
}

#[test]
fn a_new_policy_replaces_the_old_one_whole() {
    netlab::root_or_skip!();
    let mut fx = with_policy(WEB);
    let frame = l4_frame(ip("198.18.9.9"), LOCAL_WORKLOAD, TCP, 40_000, 80, 0);
    let other_port = l4_frame(ip("198.18.9.9"), LOCAL_WORKLOAD, TCP, 40_001, 443, 0);
    assert_refused(&fx, Hook::Tc, &other_port, "drop_policy_ingress");
    let open = dataplane::model::policy::parse(
        "workload 198.18.1.2 ingress deny egress allow\nallow ingress 198.18.1.2 proto tcp port 443\n",
    )
    .unwrap();
    let report = fx.dataplane.apply_policy(&open).unwrap();
    assert_eq!(report.endpoints, 2);
    assert_forwarded(&fx, Hook::Tc, &other_port, &["policy_new_flow"]);
    assert_refused(&fx, Hook::Tc, &frame, "drop_policy_ingress");
    // No policy at all: the workload is no longer under policy.
    fx.dataplane
        .apply_policy(&dataplane::model::policy::Policy::default())
        .unwrap();
    assert_forwarded(&fx, Hook::Tc, &frame, &[]);
    let ids = fx.dataplane.kernel_ids().unwrap();
    let fill = stats::map_fill(&ids).unwrap();
    for map in ["POLICIES", "POLICY_PEERS", "POLICY_VERDICTS"] {
        assert_eq!(
            fill.iter().find(|f| f.name == map).unwrap().entries,
            0,
            "{map} emptied with the old versions"
        );
    }
}

// Isolation: what a workload that does not behave (raw sockets, crafted frames) or a foreign
// host on the underlay tries, refused and counted, each next to a control that must pass.

#[test]
fn a_workload_s_spoofed_sources_are_dropped_and_its_own_forwarded() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    let to_remote = ipv4_frame(Ipv4Addr::new(198, 18, 2, 5), 64);
    both_hooks(|hook| {
        // Control: the workload behind `lo` (198.18.1.2/32 dev lo) with its own address.
        let own = from_source(&to_remote, LOCAL_WORKLOAD);
        let (verdict, _) = fx.run_counted_from(hook, Role::Workload, &own, &["forwarded"]);
        assert_eq!(verdict, verdicts(hook).1, "{hook:?}: own source forwarded");
        for spoofed in [
            Ipv4Addr::new(198, 18, 1, 9), // no route: nobody's
            Ipv4Addr::new(198, 18, 2, 7), // another host's workload
            HOST_ADDR,                    // the host itself
            Ipv4Addr::new(8, 8, 8, 8),    // the outside
        ] {
            let frame = from_source(&to_remote, spoofed);
            let (verdict, out) =
                fx.run_counted_from(hook, Role::Workload, &frame, &["drop_spoofed_source"]);
            assert_eq!(verdict, drop_verdict(hook), "{hook:?}: {spoofed} refused");
            assert_eq!(out, frame, "{hook:?}: untouched");
        }
        // From the underlay the source is not a workload's to check.
        let (verdict, _) = fx.run_counted(hook, &to_remote, &["forwarded"]);
        assert_eq!(verdict, verdicts(hook).1);
    });
}

#[test]
fn an_address_that_moves_to_another_interface_is_no_longer_its_old_workload_s() {
    netlab::root_or_skip!();
    let mut fx = Fixture::new(true);
    let own = from_source(
        &ipv4_frame(Ipv4Addr::new(198, 18, 2, 5), 64),
        LOCAL_WORKLOAD,
    );
    both_hooks(|hook| {
        fx.run_counted_from(hook, Role::Workload, &own, &["forwarded"]);
    });
    // The workload's /32 now leads out of another interface (ifindex 7): from `lo` its old
    // address is a spoofed one, the source check's fast path (keyed by interface) included.
    let mut moved = plan(true);
    let local: Ipv4Prefix = "198.18.1.2/32".parse().unwrap();
    let nh = moved.routes[&local];
    moved.routes.insert(local, NextHop { ifindex: 7, ..nh });
    fx.dataplane.apply(&moved).expect("filling the maps");
    both_hooks(|hook| {
        fx.run_counted_from(hook, Role::Workload, &own, &["drop_spoofed_source"]);
    });
}

#[test]
fn vxlan_only_from_known_tunnel_endpoints_on_the_tunnel_s_interface() {
    netlab::root_or_skip!();
    let mut fx = Fixture::new(true);
    let known = kernel_vxlan_frame(VNI, VXLAN_PORT, LOCAL_WORKLOAD, 0);
    let unknown = from_source(&known, Ipv4Addr::new(198, 19, 0, 99));
    both_hooks(|hook| {
        let (verdict, out) = fx.run_counted(hook, &known, &["forwarded", "vxlan_decap"]);
        assert_eq!(verdict, verdicts(hook).1, "{hook:?}: control, a known VTEP");
        assert_eq!(out, expected_decap(&known));
        let (verdict, out) = fx.run_counted(hook, &unknown, &["drop_vxlan_unknown_vtep"]);
        assert_eq!(
            verdict,
            drop_verdict(hook),
            "{hook:?}: unknown VTEP refused"
        );
        assert_eq!(out, unknown);
        // VXLAN a workload sends to the host's VTEP address with its own source: never
        // decapsulated, it is the kernel's (where nothing listens on the port).
        let from_workload = from_source(&known, LOCAL_WORKLOAD);
        let (verdict, out) =
            fx.run_counted_from(hook, Role::Workload, &from_workload, &["pass_host_addr"]);
        assert_eq!(verdict, verdicts(hook).0, "{hook:?}: not decapsulated");
        assert_eq!(out, from_workload);
    });
    // VXLAN on an underlay interface other than the `vxlan` statement's: not decapsulated.
    let mut elsewhere = plan(true);
    elsewhere.vxlan.as_mut().unwrap().ifindex = 99;
    fx.dataplane.apply(&elsewhere).unwrap();
    both_hooks(|hook| {
        let (verdict, out) = fx.run_counted(hook, &known, &["pass_host_addr"]);
        assert_eq!(
            verdict,
            verdicts(hook).0,
            "{hook:?}: not the tunnel's interface"
        );
        assert_eq!(out, known);
    });
}

#[test]
fn a_workload_speaks_ipv4_and_arp_only() {
    netlab::root_or_skip!();
    let fx = Fixture::new(true);
    let to_remote = ipv4_frame(Ipv4Addr::new(198, 18, 2, 5), 64);
    both_hooks(|hook| {
        let mut ipv6 = from_source(&to_remote, LOCAL_WORKLOAD);
        ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        let mut tagged = from_source(&to_remote, LOCAL_WORKLOAD);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        for frame in [&ipv6, &tagged] {
            let (verdict, _) =
                fx.run_counted_from(hook, Role::Workload, frame, &["drop_not_ip_from_workload"]);
            assert_eq!(
                verdict,
                drop_verdict(hook),
                "{hook:?}: refused from a workload"
            );
        }
        // ARP in its own name is the kernel's (what else ARP may be: the ARP test above).
        let arp = arp_request(LOCAL_WORKLOAD, HOST_ADDR);
        let (verdict, _) = fx.run_counted_from(hook, Role::Workload, &arp, &["pass_arp"]);
        assert_eq!(verdict, verdicts(hook).0, "{hook:?}: ARP is the kernel's");
        // From the underlay, the kernel's.
        let (verdict, _) = fx.run_counted(hook, &ipv6, &["pass_not_ipv4"]);
        assert_eq!(verdict, verdicts(hook).0);
    });
}

const EGRESS_TO_DNS_ONLY: &str = "\
workload 198.18.1.2 ingress deny egress deny
allow egress 198.18.1.2 peer 198.19.0.1/32 proto udp port 53
allow egress 198.18.1.2 peer 198.18.2.0/24 proto udp port 53
";

#[test]
fn what_a_workload_sends_the_kernel_meets_its_egress_policy() {
    netlab::root_or_skip!();
    both_hooks(|hook| {
        let fx = with_policy(EGRESS_TO_DNS_ONLY);
        let send = |dst: Ipv4Addr, port: u16, counters: &[&str]| {
            let frame = l4_frame(LOCAL_WORKLOAD, dst, UDP, 40000, port, 0);
            fx.run_counted_from(hook, Role::Workload, &frame, counters)
                .0
        };
        // To the host itself, and out of the cluster (no route): egress rules apply.
        assert_eq!(
            send(HOST_ADDR, 53, &["pass_host_addr", "policy_new_flow"]),
            verdicts(hook).0
        );
        assert_eq!(
            send(HOST_ADDR, 54, &["drop_policy_egress"]),
            drop_verdict(hook)
        );
        assert_eq!(
            send(ip("8.8.8.8"), 53, &["drop_policy_egress"]),
            drop_verdict(hook)
        );
        assert_eq!(denied(&fx, "198.18.1.2", Direction::Egress), 2);
    });
}

#[test]
fn ip_options_to_or_from_a_workload_under_policy_are_refused() {
    netlab::root_or_skip!();
    // Not under policy: the kernel's (as `ip_options_go_to_the_kernel` checks).
    let fx = with_policy(WEB);
    let options_to_workload = frame(HOST_VETH_MAC, 0x0800, LOCAL_WORKLOAD, 64, 1);
    let options_from_workload = from_source(
        &frame(HOST_VETH_MAC, 0x0800, Ipv4Addr::new(198, 18, 2, 5), 64, 1),
        LOCAL_WORKLOAD,
    );
    both_hooks(|hook| {
        let (verdict, _) = fx.run_counted(hook, &options_to_workload, &["drop_policy_bypass"]);
        assert_eq!(
            verdict,
            drop_verdict(hook),
            "{hook:?}: to a workload under policy"
        );
        let (verdict, _) = fx.run_counted_from(
            hook,
            Role::Workload,
            &options_from_workload,
            &["drop_policy_bypass"],
        );
        assert_eq!(
            verdict,
            drop_verdict(hook),
            "{hook:?}: from a workload under policy"
        );
        // Control: to a remote prefix, nobody under policy.
        let other = frame(HOST_VETH_MAC, 0x0800, Ipv4Addr::new(198, 18, 2, 5), 64, 1);
        let (verdict, _) = fx.run_counted(hook, &other, &["pass_ip_options"]);
        assert_eq!(verdict, verdicts(hook).0);
    });
}

/// ICMP `kind`/`code` from `from` to `to`, quoting `quoted` (a frame) as an error does.
fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted[14..14 + 28]);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&from.octets());
    ip.extend_from_slice(&to.octets());
    seal_ipv4(&mut ip);
    to_host_veth(&[&ip, &icmp])
}

#[test]
fn replies_and_icmp_errors_about_a_flow_pass_an_ingress_deny() {
    netlab::root_or_skip!();
    both_hooks(|hook| {
        let fx = with_policy(EGRESS_TO_DNS_ONLY);
        let server = ip("198.18.2.5");
        let query = l4_frame(LOCAL_WORKLOAD, server, UDP, 40000, 53, 0);
        let never_sent = l4_frame(LOCAL_WORKLOAD, server, UDP, 40001, 53, 0);
        // The workload's query: admitted by its egress rule, recorded as a new flow.
        let (verdict, _) = fx.run_counted_from(
            hook,
            Role::Workload,
            &query,
            &["forwarded", "policy_new_flow"],
        );
        assert_eq!(verdict, verdicts(hook).1);
        // The server's ICMP port unreachable about it passes the workload's ingress deny...
        let unreachable = icmp_error(server, LOCAL_WORKLOAD, 3, 3, &query);
        assert_forwarded(&fx, hook, &unreachable, &["policy_established"]);
        // ...an error about a packet the workload never sent does not...
        let forged = icmp_error(server, LOCAL_WORKLOAD, 3, 3, &never_sent);
        assert_refused(&fx, hook, &forged, "drop_policy_ingress");
        // ...and the reply passes, as part of the flow.
        let reply = l4_frame(server, LOCAL_WORKLOAD, UDP, 53, 40000, 0);
        assert_forwarded(&fx, hook, &reply, &["policy_established"]);
        assert_forwarded(&fx, hook, &reply, &["policy_established"]);
    });
}

// The per-path cost table (`bench paths`): every path is timed and every run took the path
// it is named for (its verdict checked on each run, by `measure` itself).
#[test]
fn every_path_is_timed_and_takes_its_own_turn() {
    netlab::root_or_skip!();
    // SAFETY: unshare affects only this test's thread.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
    let costs = dataplane::kernel::path_costs::measure(200).expect("every path takes its turn");
    assert_eq!(costs.len(), 10 * 2, "10 paths at 2 hooks: {costs:?}");
    for c in &costs {
        assert_eq!(c.runs, 200);
        assert!(
            c.p10_ns > 0.0 && c.p10_ns <= c.p50_ns && c.p50_ns <= c.p90_ns,
            "{c:?}"
        );
    }
}
