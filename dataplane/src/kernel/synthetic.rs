//! A synthetic host for running the programs on crafted frames (BPF_PROG_TEST_RUN): its
//! plan (a local workload behind `lo`, a routed remote prefix, two VXLAN prefixes, VXLAN
//! decapsulated on `lo`) and frame builders for each path. Shared by the program tests and
//! the per-path cost measurement ([`super::path_costs`]), so that both run the same frames
//! through the same maps.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use dataplane_common::{
    NH_FLAG_VETH_PEER, NextHop, NextHopKind,
    checksum::{checksum, ipv4_fixed_sum},
};

use crate::plan::{Plan, VxlanPlan};

/// MACs of the synthetic host: its workload, its veth end facing the workload, the next host,
/// its own underlay interface, and whoever sent a crafted frame.
pub const WORKLOAD_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x02];
pub const HOST_VETH_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0xee, 0x01];
pub const PEER_HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub const UNDERLAY_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const SENDER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x09, 0x09];

/// VXLAN: this host's VTEP MAC, the remote VTEP (its MAC and underlay address), the port and
/// VNI this host serves.
pub const LOCAL_VTEP_MAC: [u8; 6] = [0x02, 0x76, 198, 19, 0, 1];
pub const REMOTE_VTEP_MAC: [u8; 6] = [0x0e, 0x00, 0x00, 0x00, 0x00, 0x03];
pub const REMOTE_VTEP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 3);
pub const VXLAN_PORT: u16 = 4789;
pub const VNI: u32 = 42;

/// The workload behind `lo` (198.18.1.2/32 dev lo) and the host's own underlay address.
pub const LOCAL_WORKLOAD: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

/// The next hop to the local workload (a veth peer).
pub fn local_nh() -> NextHop {
    NextHop {
        ifindex: 1,
        kind: NextHopKind::Local as u32,
        flags: NH_FLAG_VETH_PEER,
        dst_mac: WORKLOAD_MAC,
        src_mac: HOST_VETH_MAC,
        ..Default::default()
    }
}

/// The next hop to the routed remote prefix, out of the underlay.
pub fn remote_nh() -> NextHop {
    NextHop {
        ifindex: 1,
        kind: NextHopKind::Remote as u32,
        flags: 0,
        dst_mac: PEER_HOST_MAC,
        src_mac: UNDERLAY_MAC,
        ..Default::default()
    }
}

/// The next hop to a VXLAN prefix through the remote VTEP, with tunnel MTU `mtu`.
pub fn vxlan_nh(mtu: u16) -> NextHop {
    NextHop {
        ifindex: 1,
        kind: NextHopKind::Vxlan as u32,
        flags: 0,
        dst_mac: REMOTE_VTEP_MAC,
        src_mac: LOCAL_VTEP_MAC,
        outer_dst_mac: PEER_HOST_MAC,
        outer_src_mac: UNDERLAY_MAC,
        outer_src_ip: HOST_ADDR.octets(),
        outer_dst_ip: REMOTE_VTEP.octets(),
        vni_word: (VNI << 8).to_be_bytes(),
        udp_dport: VXLAN_PORT.to_be_bytes(),
        mtu,
        outer_csum_base: ipv4_fixed_sum(64, 17, HOST_ADDR.octets(), REMOTE_VTEP.octets()),
        egress_slot: 0,
    }
}

/// The synthetic host's plan: a local workload 198.18.1.2/32, a remote prefix 198.18.2.0/24, two
/// VXLAN prefixes (tunnel MTU 1500 and 120) through 198.19.0.3, VXLAN decapsulated on `lo`.
pub fn plan(with_tx_port: bool) -> Plan {
    Plan {
        attachments: vec![],
        routes: BTreeMap::from([
            ("198.18.1.2/32".parse().unwrap(), local_nh()),
            ("198.18.2.0/24".parse().unwrap(), remote_nh()),
            ("198.18.3.0/24".parse().unwrap(), vxlan_nh(1500)),
            ("198.18.4.0/24".parse().unwrap(), vxlan_nh(120)),
        ]),
        tx_ports: if with_tx_port {
            BTreeSet::from([1])
        } else {
            BTreeSet::new()
        },
        host_addrs: BTreeSet::from([HOST_ADDR]),
        vxlan: Some(VxlanPlan {
            port: VXLAN_PORT,
            ifindex: 1,
            vnis: BTreeSet::from([VNI]),
            default_vni: VNI,
            local_ip: HOST_ADDR,
            mac: LOCAL_VTEP_MAC,
        }),
        peers: BTreeSet::from([REMOTE_VTEP]),
        unresolved_workloads: BTreeMap::new(),
    }
}

/// An Ethernet broadcast ARP request (IPv4 over Ethernet): who has `target`, tell `sender`
/// at `mac` (the frame's source MAC too).
pub fn arp_request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0x08, 0x06]);
    // Ethernet, IPv4, 6- and 4-byte addresses, request.
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&sender.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// Ethernet + IPv4 (with `options` 4-byte words of options) + UDP with a 32-byte payload.
pub fn frame(dst_mac: [u8; 6], ether_type: u16, dst: Ipv4Addr, ttl: u8, options: usize) -> Vec<u8> {
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

/// A UDP frame to `dst` with TTL `ttl`, addressed to the host's veth end.
pub fn ipv4_frame(dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    frame(HOST_VETH_MAC, 0x0800, dst, ttl, 0)
}

/// A VXLAN frame as the Linux driver sends it to this host: outer IPv4 with an ID and no DF,
/// a flow-hash source port, UDP checksum 0, the I flag, and the inner frame addressed from the
/// remote VTEP's MAC to ours. `outer_options` adds that many 4-byte words of IPv4 options.
pub fn kernel_vxlan_frame(
    vni: u32,
    dport: u16,
    inner_dst: Ipv4Addr,
    outer_options: usize,
) -> Vec<u8> {
    let mut inner = ipv4_frame(inner_dst, 63);
    inner[0..6].copy_from_slice(&LOCAL_VTEP_MAC);
    inner[6..12].copy_from_slice(&REMOTE_VTEP_MAC);
    let ihl = 5 + outer_options;
    let mut f = Vec::new();
    f.extend_from_slice(&UNDERLAY_MAC);
    f.extend_from_slice(&PEER_HOST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0u8; ihl * 4];
    ip[0] = 0x40 | ihl as u8;
    ip[2..4].copy_from_slice(&((ihl * 4 + 16 + inner.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x6e2au16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&REMOTE_VTEP.octets());
    ip[16..20].copy_from_slice(&HOST_ADDR.octets());
    for word in 0..outer_options {
        ip[20 + word * 4..24 + word * 4].copy_from_slice(&[1, 1, 1, 1]);
    }
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&51234u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((16 + inner.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&[0x08, 0, 0, 0]);
    f.extend_from_slice(&(vni << 8).to_be_bytes());
    f.extend_from_slice(&inner);
    f
}

/// IP protocol numbers of [`l4_frame`].
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

/// Ethernet + IPv4 + an L4 header of `proto` (TCP 20 bytes, UDP 8, ICMP echo request 8 with
/// `sport` as its identifier) + 16 bytes of payload. `frag` is the IPv4 flags/offset word.
pub fn l4_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    frag: u16,
) -> Vec<u8> {
    let l4 = match proto {
        TCP => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = 0x02; // SYN
            h
        }
        UDP => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[4..6].copy_from_slice(&(8u16 + 16).to_be_bytes());
            h
        }
        _ => {
            let mut h = vec![0u8; 8];
            h[0] = 8; // echo request
            h[4..6].copy_from_slice(&sport.to_be_bytes());
            h
        }
    };
    let ip_len = 20 + l4.len() + 16;
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    seal_ipv4(&mut ip);
    to_host_veth(&[&ip, &l4, &[0x33; 16]])
}

/// Writes the checksum of the IPv4 header `ip` (its checksum field zero).
pub fn seal_ipv4(ip: &mut [u8]) {
    let c = checksum(ip);
    ip[10..12].copy_from_slice(&c);
}

/// An Ethernet frame from the sender to the host's veth end, carrying the IPv4 packet made of
/// `parts`.
pub fn to_host_veth(parts: &[&[u8]]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&HOST_VETH_MAC);
    f.extend_from_slice(&SENDER_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    for part in parts {
        f.extend_from_slice(part);
    }
    f
}

/// `frame` with IPv4 source `src` (checksum fixed).
pub fn from_source(frame: &[u8], src: Ipv4Addr) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[26..30].copy_from_slice(&src.octets());
    f[24..26].copy_from_slice(&[0, 0]);
    let ihl = (f[14] & 0x0f) as usize * 4;
    let c = checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c);
    f
}
