//! What a hostile workload or underlay host sends: frames built byte by byte and written to a
//! raw packet socket (as root in the namespace, CAP_NET_RAW), or datagrams from an ordinary
//! UDP socket; and sinks that record what arrives, so a test can tell an attack that got
//! through from one that did not.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use dataplane::{common::checksum::checksum, system::netns};

use crate::netns::{Netns, in_netns};

/// An Ethernet + IPv4 + UDP frame (UDP checksum 0: none, as IPv4 allows).
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + payload.len()) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c);
    let mut f = Vec::with_capacity(14 + 28 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A VXLAN datagram's payload: the header (I flag, `vni`) and the inner frame.
pub fn vxlan_payload(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut p = vec![0x08, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(inner);
    p
}

/// The Ethernet address of interface `ifname` in `ns`.
pub fn mac_of(ns: &Netns, ifname: &str) -> Result<[u8; 6]> {
    let ifname = ifname.to_string();
    in_netns(ns.name(), move || {
        dataplane::system::netinfo::links()?
            .into_iter()
            .find(|l| l.name == ifname)
            .and_then(|l| l.mac)
            .with_context(|| format!("no Ethernet address for {ifname}"))
    })
}

/// Writes `frames` as they are out of `ifname` in `ns`, through a raw packet socket.
pub fn send_raw(ns: &Netns, ifname: &str, frames: &[Vec<u8>]) -> Result<()> {
    let ifname = ifname.to_string();
    in_netns(ns.name(), move || {
        let index = dataplane::system::netinfo::links()?
            .into_iter()
            .find(|l| l.name == ifname)
            .with_context(|| format!("no interface {ifname}"))?
            .ifindex;
        // SAFETY: a socket this function owns and closes; sendto reads `frame` and `addr`
        // within their lengths.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                bail!("raw socket: {}", std::io::Error::last_os_error());
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            for frame in frames {
                addr.sll_addr[..6].copy_from_slice(&frame[..6]);
                let sent = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if sent < 0 {
                    let e = std::io::Error::last_os_error();
                    libc::close(fd);
                    bail!("sending a raw frame on {ifname}: {e}");
                }
            }
            libc::close(fd);
        }
        Ok(())
    })
}

/// Sends `payload` from an ordinary UDP socket in `ns` bound to `from` (port 0: any) to `to`.
pub fn send_udp(ns: &Netns, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Result<()> {
    let payload = payload.to_vec();
    in_netns(ns.name(), move || {
        let socket = UdpSocket::bind(from).with_context(|| format!("binding {from}"))?;
        socket
            .send_to(&payload, to)
            .with_context(|| format!("sending to {to}"))?;
        Ok(())
    })
}

/// A UDP socket listening in a namespace, collecting what arrives until it is read.
pub struct UdpSink {
    stop: mpsc::Sender<()>,
    received: mpsc::Receiver<Vec<(SocketAddrV4, Vec<u8>)>>,
}

impl UdpSink {
    /// Listens on `addr` in the namespace named `ns` (returns once bound).
    pub fn start(ns: &Netns, addr: SocketAddrV4) -> Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let (done, received) = mpsc::channel();
        let (bound, ready) = mpsc::channel();
        let name = ns.name().to_string();
        thread::spawn(move || {
            let socket = netns::enter(&name)
                .map_err(anyhow::Error::from)
                .and_then(|()| Ok(UdpSocket::bind(addr)?));
            let socket = match socket {
                Ok(s) => {
                    let _ = bound.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = bound.send(Err(e));
                    return;
                }
            };
            let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            while stopped.try_recv().is_err() {
                if let Ok((n, std::net::SocketAddr::V4(from))) = socket.recv_from(&mut buf) {
                    got.push((from, buf[..n].to_vec()));
                }
            }
            let _ = done.send(got);
        });
        ready
            .recv()
            .context("the sink's thread ended")?
            .with_context(|| format!("listening on {addr}"))?;
        Ok(Self { stop, received })
    }

    /// Waits `settle` for stragglers, stops, and returns every datagram that arrived.
    pub fn finish(self, settle: Duration) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let deadline = Instant::now() + settle;
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.stop.send(());
        self.received.recv().unwrap_or_default()
    }
}

/// The workload-side addresses a test needs to craft a workload's frames.
pub struct Wire {
    /// The workload's own MAC (its `eth0`).
    pub workload_mac: [u8; 6],
    /// The host-side veth's MAC: the gateway every workload frame is addressed to.
    pub gateway_mac: [u8; 6],
}

impl Wire {
    /// Reads them for workload `w` of `host`.
    pub fn of(host: &crate::topology::Host, w: &crate::topology::Workload) -> Result<Self> {
        Ok(Self {
            workload_mac: mac_of(&w.ns, "eth0")?,
            gateway_mac: mac_of(&host.ns, &w.host_if)?,
        })
    }

    /// A UDP frame as workload `w` would put it on its wire, from `src` (which a hostile
    /// workload may forge) to `dst`.
    pub fn udp(&self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        udp_frame(self.gateway_mac, self.workload_mac, src, dst, payload)
    }
}

/// `addr:port` as a socket address.
pub fn at(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}
