//! Traffic through a bed's workloads: counted pings, iperf3 streams, and accounting for what
//! a UDP stream lost (the path's losses against the receiving socket's own).

use dataplane::kernel::inspect::Stats;
use netlab::{
    netns::Netns,
    topology::Workload,
    traffic::{IperfResult, Proto, iperf3, ping},
};

use super::queries::{forwarded, stats};

/// iperf3 TCP and UDP (100 Mbit/s) from `client` to `server` for 2 s each; asserts that TCP
/// moved more than a megabyte and that the path lost under 1 % of the UDP datagrams (losses
/// the receiving socket's kernel counts as buffer overflows are not the path's), and returns
/// both results.
pub fn traffic_works(
    what: &str,
    client: &Workload,
    server: &Workload,
) -> (IperfResult, IperfResult) {
    let tcp = iperf3(&client.ns, &server.ns, server.addr, Proto::Tcp, 2)
        .unwrap_or_else(|e| panic!("{what}: TCP: {e:#}"));
    assert!(
        tcp.bytes > 1_000_000,
        "{what}: TCP moved only {} bytes",
        tcp.bytes
    );
    let overflows_before = udp_receive_buffer_errors(&server.ns);
    let udp = udp_100m(client, server, 2).unwrap_or_else(|e| panic!("{what}: UDP: {e:#}"));
    let overflows = udp_receive_buffer_errors(&server.ns) - overflows_before;
    assert!(
        udp.packets > 10_000,
        "{what}: UDP sent only {} datagrams",
        udp.packets
    );
    // Datagrams the receiving socket overflowed on (its server starved of CPU on a loaded
    // 2-core machine) are counted by its kernel and are not the path's.
    let path_lost = udp.lost_packets.saturating_sub(overflows);
    assert!(
        (path_lost as f64) < 0.01 * udp.packets as f64,
        "{what}: UDP lost {} of {} datagrams on the path ({} more overflowed the receiver)",
        path_lost,
        udp.packets,
        overflows
    );
    eprintln!(
        "{what}: TCP {:.2} Gbit/s ({} retransmits), UDP {} datagrams, {} lost ({overflows} of them receive-buffer overflows)",
        tcp.bits_per_second / 1e9,
        tcp.retransmits,
        udp.packets,
        udp.lost_packets
    );
    (tcp, udp)
}

/// iperf3 UDP at 100 Mbit/s from workload `client` to workload `server` for `secs`: the
/// stream every loss check here is made of.
pub fn udp_100m(client: &Workload, server: &Workload, secs: u32) -> anyhow::Result<IperfResult> {
    iperf3(
        &client.ns,
        &server.ns,
        server.addr,
        Proto::Udp {
            bits_per_second: 100_000_000,
        },
        secs,
    )
}

/// What a UDP stream's loss is made of: frames the eBPF programs of each host forwarded, and
/// datagrams the receiving socket had no room for.
pub struct PathCounts {
    forwarded: Vec<u64>,
    receiver_overflows: u64,
}

impl PathCounts {
    /// Reads the TC forwarded counters of `hosts` and the UDP receive buffer overflows of the
    /// receiving workload namespace.
    pub fn read(hosts: &[&str], receiver: &Netns) -> Self {
        Self {
            forwarded: hosts.iter().map(|h| forwarded(&stats(h), "tc")).collect(),
            receiver_overflows: udp_receive_buffer_errors(receiver),
        }
    }

    /// Asserts that the dataplane lost nothing of `stream` since `self` was read: every host
    /// forwarded at least every datagram sent, and every datagram iperf3 counts as lost is one
    /// the receiving socket's buffer overflowed on (its own kernel counts those: the iperf3
    /// server, starved of CPU for a moment on this 2-core machine, did not read in time).
    /// Returns those overflows, for the record.
    pub fn assert_path_lost_nothing(
        &self,
        stream: &IperfResult,
        hosts: &[&str],
        receiver: &Netns,
    ) -> u64 {
        let after = Self::read(hosts, receiver);
        let overflows = after.receiver_overflows - self.receiver_overflows;
        for ((host, before), now) in hosts.iter().zip(&self.forwarded).zip(&after.forwarded) {
            assert!(
                now - before >= stream.packets,
                "{host} forwarded {} frames, fewer than the {} datagrams sent",
                now - before,
                stream.packets
            );
        }
        assert_eq!(
            stream.lost_packets, overflows,
            "datagrams lost other than to the receiving socket's buffer ({overflows} overflows)"
        );
        overflows
    }
}

/// UDP datagrams dropped for want of receive buffer in `ns` (/proc/net/snmp, RcvbufErrors).
pub fn udp_receive_buffer_errors(ns: &Netns) -> u64 {
    let out = ns
        .command("cat")
        .arg("/proc/net/snmp")
        .output()
        .expect("reading /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (
        udp.next().expect("Udp header"),
        udp.next().expect("Udp values"),
    );
    let column = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .expect("RcvbufErrors column");
    values
        .split_whitespace()
        .nth(column)
        .and_then(|v| v.parse().ok())
        .expect("RcvbufErrors value")
}

/// Five pings from `from` to `to`, which must all be answered (`what` names them in the
/// failure), after a warm-up ping (without it the workloads' ARP could delay the first reply
/// past ping's 0.2 s interval, and ping would send a sixth request); returns the stats of
/// `hosts` before and after the five.
pub fn counted_pings(
    from: &Workload,
    to: &Workload,
    hosts: (&str, &str),
    what: &str,
) -> ((Stats, Stats), (Stats, Stats)) {
    assert!(ping(&from.ns, to.addr, 1).unwrap(), "warm-up ping");
    let before = (stats(hosts.0), stats(hosts.1));
    assert!(ping(&from.ns, to.addr, 5).unwrap(), "{what}");
    let after = (stats(hosts.0), stats(hosts.1));
    (before, after)
}
