//! Small packets at the generator's maximum rate: where they stop, and the forwarding
//! capacity per core.
use std::fmt::Write;

use super::table::{self, cell};
use crate::{
    measure::{Point, SMALL_PACKETS as P},
    modes::Mode,
    results::{Results, Spread},
};

/// Published figures this table is laid out to be read against.
const SEED_PPS: &str = "The XDP paper (Høiland-Jørgensen et al., CoNEXT 2018) forwarded \
    64-byte packets on one core at 1.74 Mpps through Linux's stack and 5.36 Mpps through \
    XDP (one route, real 100 Gbit/s NICs). Here every packet also crosses veth pairs and the \
    generator shares the machine's two cores.";

pub(super) fn section(r: &Results) -> String {
    let mut t = String::new();
    writeln!(
        t,
        "\n## Small packets: {}-byte frames, as fast as one sender goes\n",
        r.settings.small_payload + 46
    )
    .unwrap();
    writeln!(
        t,
        "UDP with {} bytes of payload (14 Ethernet + 20 IPv4 + 8 UDP + payload + 4 FCS), one \
         iperf3 sender unpaced, {} s per repetition, beside a floor point. Packets are counted \
         on the devices: sent by the client's interface, received by the server's. **Forwarding \
         capacity** is packets per second per core of kernel-level CPU spent forwarding: 10⁹ / \
         (softirq ns per packet above the floor), the XDP paper's measure. {SEED_PPS}\n",
        r.settings.small_payload, r.settings.duration_s
    )
    .unwrap();
    table::header(
        &mut t,
        "mode",
        [
            "sent kpps",
            "received kpps",
            "lost on the path %",
            "not read by the receiver %",
            "softirq CPU %",
            "ns/packet",
            "ns/packet above floor",
            "Mpps per core forwarding",
        ],
    );
    for mode in r.modes() {
        table::row(&mut t, mode.name(), cells(r, mode));
    }
    writeln!(
        t,
        "\nWhere the packets stop: `lost on the path` is what the client's interface sent and the \
         server's never received (a queue on the way overflowed: the forwarding could not keep \
         up); `not read` is what reached the server's interface but not iperf3 (its socket \
         buffer overflowed: the receiver, not the dataplane). With both near zero the sender \
         is the limit, and the per-packet figures, not the rate, carry the comparison."
    )
    .unwrap();
    t
}

/// One mode's row: rates sent and received, where packets were lost, CPU, and per packet.
fn cells(r: &Results, mode: Mode) -> [String; 8] {
    let spread = |f: &dyn Fn(&Point) -> f64| {
        Spread::of(
            r.small_packets
                .iter()
                .filter(|p| p.mode == mode.name() && p.protocol == P)
                .map(f)
                .collect(),
        )
    };
    let kpps = |n: u64, p: &Point| n as f64 / p.duration_s / 1e3;
    let sent = spread(&|p| kpps(p.client_tx_packets, p));
    let received = spread(&|p| kpps(p.server_rx_packets, p));
    let path_loss = spread(&|p| {
        (p.client_tx_packets.saturating_sub(p.server_rx_packets)) as f64
            / p.client_tx_packets.max(1) as f64
            * 100.0
    });
    let unread = spread(&|p| {
        let delivered = p.packets.saturating_sub(p.lost_packets);
        p.server_rx_packets.saturating_sub(delivered) as f64 / p.server_rx_packets.max(1) as f64
            * 100.0
    });
    let cpu = spread(&|p| p.softirq_cpu_pct);
    let ns = spread(&|p| p.softirq_ns_per_packet);
    let (above, capacity) = if mode == Mode::Floor {
        (None, None)
    } else {
        let above = r.above_floor_per_packet(mode, P, 0);
        let capacity = Spread::of(
            r.paired(mode, P, 0, |p| p.softirq_ns_per_packet)
                .into_iter()
                .map(|(_, m, f, _)| if m > f { 1e3 / (m - f) } else { f64::NAN })
                .collect(),
        );
        (above, capacity)
    };
    [
        cell(sent, false, 0),
        cell(received, false, 0),
        cell(path_loss, false, 1),
        cell(unread, false, 1),
        cell(cpu, false, 1),
        cell(ns, false, 0),
        cell(above, false, 0),
        cell(capacity, false, 2),
    ]
}
