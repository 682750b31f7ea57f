//! Services in the programs, on crafted frames (BPF_PROG_TEST_RUN) at XDP and at TC: a
//! workload's connection to a service address goes to a backend with its destination and
//! checksums rewritten, stays with it, spreads over the backends, and the backend's replies
//! come back with the service's address. Needs root (skipped, with a message, without it).
mod fixture;

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
};

use dataplane::{
    kernel::synthetic::*,
    model::{route_table::Role, services},
};
use dataplane_common::{Hook, checksum::checksum};
use fixture::*;

/// The service address of the tests and two backends behind the routed remote prefix.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKEND_A: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 5);
const BACKEND_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 6);
const BACKEND_C: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 7);

fn with_services(fx: &mut Fixture, text: &str) {
    let parsed = services::parse(text).expect("the test's services parse");
    fx.dataplane
        .apply_services(&parsed)
        .expect("services applied");
}

/// A TCP or UDP frame from `src` to `dst` with a valid L4 checksum (or none, for UDP with
/// `udp_checksum` false).
fn l4(proto: u8, src: SocketAddrV4, dst: SocketAddrV4, udp_checksum: bool) -> Vec<u8> {
    let mut f = l4_frame(*src.ip(), *dst.ip(), proto, src.port(), dst.port(), 0);
    if proto == TCP || udp_checksum {
        let at = l4_check_offset(proto);
        let c = checksum(&pseudo_and_segment(&f));
        f[at..at + 2].copy_from_slice(&c);
    }
    f
}

fn l4_check_offset(proto: u8) -> usize {
    14 + 20 + if proto == TCP { 16 } else { 6 }
}

/// The pseudo-header and the L4 segment of an option-less IPv4 frame, as the L4 checksum
/// covers them.
fn pseudo_and_segment(f: &[u8]) -> Vec<u8> {
    let segment = &f[34..];
    let mut v = Vec::new();
    v.extend_from_slice(&f[26..34]);
    v.extend_from_slice(&[0, f[23]]);
    v.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    v.extend_from_slice(segment);
    v
}

/// Source and destination of a forwarded frame, and whether both its checksums hold.
fn endpoints_and_checksums(f: &[u8]) -> (SocketAddrV4, SocketAddrV4, bool) {
    let addr = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
    let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    let ip_ok = checksum(&f[14..34]) == [0, 0];
    let l4_ok = checksum(&pseudo_and_segment(f)) == [0, 0];
    (
        SocketAddrV4::new(addr(26), port(34)),
        SocketAddrV4::new(addr(30), port(36)),
        ip_ok && l4_ok,
    )
}

fn client(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(LOCAL_WORKLOAD, port)
}

/// Each hook its own client ports: the hooks share the flow maps.
fn client_port(hook: Hook, n: u16) -> u16 {
    match hook {
        Hook::Xdp => 40_000 + n,
        Hook::Tc => 50_000 + n,
    }
}

#[test]
fn a_connection_goes_to_its_backend_and_the_replies_come_from_the_service() {
    netlab::root_or_skip!();
    let mut fx = Fixture::new(true);
    with_services(&mut fx, "service web 10.96.0.10:80 tcp 198.18.2.5:8080\n");
    let (front, backend) = (
        SocketAddrV4::new(VIP, 80),
        SocketAddrV4::new(BACKEND_A, 8080),
    );
    both_hooks(|hook| {
        let me = client(client_port(hook, 1));
        let syn = l4(TCP, me, front, true);
        let counted = ["forwarded", "service_new_flow"];
        let (verdict, out) = fx.run_counted_from(hook, Role::Workload, &syn, &counted);
        assert_eq!(verdict, verdicts(hook).1);
        assert_eq!(endpoints_and_checksums(&out), (me, backend, true));
        assert_eq!(
            &out[0..6],
            &PEER_HOST_MAC,
            "routed on to the backend's next hop"
        );

        // Every later packet of the connection: the same backend.
        let counted = ["forwarded", "service_established"];
        let (_, again) = fx.run_counted_from(hook, Role::Workload, &syn, &counted);
        assert_eq!(endpoints_and_checksums(&again), (me, backend, true));

        // The backend's reply reaches the client from the service's address.
        let reply = l4(TCP, backend, me, true);
        let counted = ["forwarded", "service_reply"];
        let (verdict, out) = fx.run_counted_from(hook, Role::Underlay, &reply, &counted);
        assert_eq!(verdict, verdicts(hook).1);
        assert_eq!(endpoints_and_checksums(&out), (front, me, true));
        assert_eq!(&out[0..6], &WORKLOAD_MAC);

        // The same backend from another port is no reply: left as it is.
        let other = l4(TCP, SocketAddrV4::new(BACKEND_A, 8081), me, true);
        let (_, out) = fx.run_counted_from(hook, Role::Underlay, &other, &["forwarded"]);
        assert_eq!(endpoints_and_checksums(&out).0.port(), 8081);
    });
}

#[test]
fn new_connections_spread_over_every_backend() {
    netlab::root_or_skip!();
    let mut fx = Fixture::new(true);
    with_services(
        &mut fx,
        "service web 10.96.0.10:80 tcp 198.18.2.5:8080 198.18.2.6:8080 198.18.2.7:8080\n",
    );
    both_hooks(|hook| {
        let mut reached = BTreeSet::new();
        // 90 draws among 3: one backend never drawn has odds of 3 * (2/3)^90, about 1e-15.
        for n in 0..90 {
            let syn = l4(
                TCP,
                client(client_port(hook, 100 + n)),
                SocketAddrV4::new(VIP, 80),
                true,
            );
            let (_, out) = fx.run_counted_from(
                hook,
                Role::Workload,
                &syn,
                &["forwarded", "service_new_flow"],
            );
            let (_, to, checksums_hold) = endpoints_and_checksums(&out);
            assert!(checksums_hold);
            assert_eq!(to.port(), 8080);
            reached.insert(*to.ip());
        }
        assert_eq!(reached, BTreeSet::from([BACKEND_A, BACKEND_B, BACKEND_C]));
    });
}

#[test]
fn udp_gets_its_backend_and_a_missing_checksum_stays_missing() {
    netlab::root_or_skip!();
    let mut fx = Fixture::new(true);
    with_services(&mut fx, "service dns 10.96.0.11:53 udp 198.18.2.5:5353\n");
    let front = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 11), 53);
    both_hooks(|hook| {
        let counted = ["forwarded", "service_new_flow"];
        let me = client(client_port(hook, 200));
        let (_, out) =
            fx.run_counted_from(hook, Role::Workload, &l4(UDP, me, front, true), &counted);
        assert_eq!(
            endpoints_and_checksums(&out),
            (me, SocketAddrV4::new(BACKEND_A, 5353), true)
        );
        let me = client(client_port(hook, 201));
        let (_, out) =
            fx.run_counted_from(hook, Role::Workload, &l4(UDP, me, front, false), &counted);
        let at = l4_check_offset(UDP);
        assert_eq!(&out[at..at + 2], &[0, 0], "no checksum made up");
        assert_eq!(checksum(&out[14..34]), [0, 0]);
        // A TCP connection to the UDP service's port is no connection to it.
        let tcp = l4(TCP, client(client_port(hook, 202)), front, true);
        fx.run_counted_from(hook, Role::Workload, &tcp, &["pass_no_route"]);
    });
}

/// A TCP segment with flags ACK only (not SYN) of the connection `src` -> `dst`.
fn ack(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut f = l4_frame(*src.ip(), *dst.ip(), TCP, src.port(), dst.port(), 0);
    f[14 + 20 + 13] = 0x10;
    let at = l4_check_offset(TCP);
    let c = checksum(&pseudo_and_segment(&f));
    f[at..at + 2].copy_from_slice(&c);
    f
}

#[test]
fn a_removed_backend_keeps_its_connections_and_gets_no_new_ones() {
    netlab::root_or_skip!();
    let mut fx = Fixture::new(true);
    with_services(&mut fx, "service web 10.96.0.10:80 tcp 198.18.2.5:8080\n");
    let front = SocketAddrV4::new(VIP, 80);
    let me = |hook: Hook| client(client_port(hook, 300));
    for hook in Hook::ALL {
        let counted = ["forwarded", "service_new_flow"];
        fx.run_counted_from(
            hook,
            Role::Workload,
            &l4(TCP, me(hook), front, true),
            &counted,
        );
    }
    with_services(&mut fx, "service web 10.96.0.10:80 tcp 198.18.2.6:8080\n");
    let to = |out: &[u8]| *endpoints_and_checksums(out).1.ip();
    for hook in Hook::ALL {
        // The open connection keeps its backend.
        let counted = ["forwarded", "service_established"];
        let (_, out) = fx.run_counted_from(hook, Role::Workload, &ack(me(hook), front), &counted);
        assert_eq!(to(&out), BACKEND_A);
        // A new connection goes to the new backend: from another port, and from the same
        // port too (a SYN after the backends changed is a new connection on a reused port).
        let counted = ["forwarded", "service_new_flow"];
        let other = l4(TCP, client(client_port(hook, 301)), front, true);
        let (_, out) = fx.run_counted_from(hook, Role::Workload, &other, &counted);
        assert_eq!(to(&out), BACKEND_B);
        let reused = l4(TCP, me(hook), front, true);
        let (_, out) = fx.run_counted_from(hook, Role::Workload, &reused, &counted);
        assert_eq!(to(&out), BACKEND_B);
        // That SYN sent again, the service unchanged: the same connection, the same backend.
        let counted = ["forwarded", "service_established"];
        let (_, out) = fx.run_counted_from(hook, Role::Workload, &reused, &counted);
        assert_eq!(to(&out), BACKEND_B);
    }
}

#[test]
fn without_services_nothing_is_translated_and_spoofers_are_still_refused() {
    netlab::root_or_skip!();
    let mut fx = Fixture::new(true);
    with_services(&mut fx, "service web 10.96.0.10:80 tcp 198.18.2.5:8080\n");
    let front = SocketAddrV4::new(VIP, 80);
    both_hooks(|hook| {
        // The source check comes first: a spoofed source gets no backend.
        let spoofed = l4(
            TCP,
            SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 9), 1000),
            front,
            true,
        );
        fx.run_counted_from(hook, Role::Workload, &spoofed, &["drop_spoofed_source"]);
        // From the underlay, a service address is nobody's route: only workloads connect.
        let from_outside = l4(TCP, SocketAddrV4::new(BACKEND_A, 1000), front, true);
        fx.run_counted(hook, &from_outside, &["pass_no_route"]);
    });
    with_services(&mut fx, "");
    both_hooks(|hook| {
        let syn = l4(TCP, client(client_port(hook, 400)), front, true);
        fx.run_counted_from(hook, Role::Workload, &syn, &["pass_no_route"]);
    });
}

#[test]
fn a_service_is_no_way_around_policy() {
    netlab::root_or_skip!();
    let mut fx = Fixture::new(true);
    // The client may not reach port 8080 of the remote prefix; 9090 it may.
    let policy = dataplane::model::policy::parse(
        "workload 198.18.1.2 ingress allow egress allow\n\
         deny egress 198.18.1.2 peer 198.18.2.0/24 proto tcp port 8080\n",
    )
    .unwrap();
    fx.dataplane.apply_policy(&policy).expect("policy applied");
    with_services(
        &mut fx,
        "service web 10.96.0.10:80 tcp 198.18.2.5:8080\n\
         service api 10.96.0.12:80 tcp 198.18.2.5:9090\n",
    );
    both_hooks(|hook| {
        // Policy judges the backend the service leads to, as kube-proxy's DNAT before the
        // filter table makes netfilter judge it; a refused connection leaves no state behind
        // (no `service_new_flow`, no entry in the flow maps), so a workload cannot churn them
        // with connections its policy refuses.
        let denied = l4(
            TCP,
            client(client_port(hook, 500)),
            SocketAddrV4::new(VIP, 80),
            true,
        );
        let flows_before = service_flows(&fx);
        fx.run_counted_from(hook, Role::Workload, &denied, &["drop_policy_egress"]);
        assert_eq!(
            service_flows(&fx),
            flows_before,
            "{hook:?}: state for a refused packet"
        );
        let allowed = l4(
            TCP,
            client(client_port(hook, 501)),
            SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 12), 80),
            true,
        );
        let (_, out) = fx.run_counted_from(
            hook,
            Role::Workload,
            &allowed,
            &["forwarded", "service_new_flow", "policy_new_flow"],
        );
        assert_eq!(endpoints_and_checksums(&out).1.port(), 9090);
        assert_eq!(
            service_flows(&fx),
            flows_before + 1,
            "{hook:?}: the admitted one recorded"
        );
    });
}

/// Entries in `SERVICE_FLOWS` (the client side of every recorded connection).
fn service_flows(fx: &Fixture) -> u64 {
    let ids = fx.dataplane.kernel_ids().unwrap();
    dataplane::kernel::inspect::map_fill(&ids)
        .unwrap()
        .into_iter()
        .find(|m| m.name == dataplane::common::maps::map_names::SERVICE_FLOWS)
        .expect("the service flow map")
        .entries
}
