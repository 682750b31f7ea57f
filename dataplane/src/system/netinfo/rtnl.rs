//! Reading the kernel's links, IPv4 addresses and neighbours over rtnetlink: one dump request
//! on a netlink socket of our own, answered in the calling thread's network namespace (or, for
//! [`in_namespace`], in the one a file names: the socket is made there, and a socket answers
//! for the namespace it was made in).
use std::{net::Ipv4Addr, path::Path};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{Link, NetInfoError};

fn failed(what: &str, e: impl std::fmt::Display) -> NetInfoError {
    NetInfoError::Netlink {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// Sends one dump request and collects every answer until the kernel says done.
fn dump(
    what: &str,
    request: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, NetInfoError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| failed(what, e))?;
    socket.bind_auto().map_err(|e| failed(what, e))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| failed(what, e))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(request));
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|e| failed(what, e))?;
    let mut answers = Vec::new();
    loop {
        let (bytes, _) = socket.recv_from_full().map_err(|e| failed(what, e))?;
        let mut offset = 0;
        while offset < bytes.len() {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[offset..])
                .map_err(|e| failed(what, e))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(answers),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(failed(what, e.to_io()));
                }
                NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

/// Every link.
pub fn links() -> Result<Vec<Link>, NetInfoError> {
    let answers = dump(
        "links",
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
    )?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => Some(to_link(link)),
            _ => None,
        })
        .collect())
}

fn to_link(message: LinkMessage) -> Link {
    let mut link = Link {
        name: String::new(),
        ifindex: message.header.index,
        mac: None,
        kind: None,
        mtu: 0,
        up: message.header.flags.contains(LinkFlags::Up),
        peer_elsewhere: false,
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::LinkNetNsId(_) => link.peer_elsewhere = true,
            LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.into_iter().find_map(|info| match info {
                    LinkInfo::Kind(InfoKind::Veth) => Some("veth".to_string()),
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    link
}

/// Every IPv4 address with the name of the interface that carries it and its network's prefix
/// length, in the kernel's order (primary addresses first).
pub fn ipv4_addrs() -> Result<Vec<(String, Ipv4Addr, u8)>, NetInfoError> {
    let names: std::collections::HashMap<u32, String> =
        links()?.into_iter().map(|l| (l.ifindex, l.name)).collect();
    let mut request = AddressMessage::default();
    request.header.family = AddressFamily::Inet;
    let answers = dump("addresses", RouteNetlinkMessage::GetAddress(request))?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.family == AddressFamily::Inet => {
                let name = names.get(&a.header.index)?.clone();
                // IFA_LOCAL is the interface's own address (IFA_ADDRESS the peer's on a
                // point-to-point link); a plain interface has only IFA_ADDRESS.
                let local = a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Local(std::net::IpAddr::V4(v4)) => Some(*v4),
                    _ => None,
                });
                let address = a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(std::net::IpAddr::V4(v4)) => Some(*v4),
                    _ => None,
                });
                Some((name, local.or(address)?, a.header.prefix_len))
            }
            _ => None,
        })
        .collect())
}

/// The index of interface `name`, if there is one.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Every usable IPv4 neighbour (interface index, address, MAC): one dump of the table,
/// without the entries still being resolved or that failed to.
pub fn neighbours() -> Result<Vec<(u32, Ipv4Addr, [u8; 6])>, NetInfoError> {
    let mut request = NeighbourMessage::default();
    request.header.family = AddressFamily::Inet;
    let answers = dump("neighbours", RouteNetlinkMessage::GetNeighbour(request))?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) => {
                if matches!(
                    n.header.state,
                    NeighbourState::Failed | NeighbourState::Incomplete
                ) {
                    return None;
                }
                let mut dst = None;
                let mut mac = None;
                for attribute in &n.attributes {
                    match attribute {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                            dst = Some(*a)
                        }
                        NeighbourAttribute::LinkLayerAddress(bytes) => {
                            mac = <[u8; 6]>::try_from(bytes.as_slice()).ok()
                        }
                        _ => {}
                    }
                }
                Some((n.header.ifindex, dst?, mac?))
            }
            _ => None,
        })
        .collect())
}

/// The usable MAC the neighbour table holds for `addr` on interface `ifindex`.
pub fn neighbour(addr: Ipv4Addr, ifindex: u32) -> Result<Option<[u8; 6]>, NetInfoError> {
    Ok(neighbours()?
        .into_iter()
        .find(|(i, a, _)| *i == ifindex && *a == addr)
        .map(|(_, _, mac)| mac))
}

/// Runs `read` in the network namespace whose file is `netns` (on a thread of its own, which
/// enters it; the caller's thread stays where it is).
pub fn in_namespace<T: Send>(
    netns: &Path,
    read: impl FnOnce() -> Result<T, NetInfoError> + Send,
) -> Result<T, NetInfoError> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(netns).map_err(|e| failed(&netns.display().to_string(), e))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a descriptor we own, for this thread only (CLONE_NEWNET).
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(failed(
                    &format!("entering {}", netns.display()),
                    std::io::Error::last_os_error(),
                ));
            }
            read()
        })
        .join()
        .expect("netlink reader thread panicked")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_reads_as_ip_shows_it() {
        let links = links().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("lo");
        assert_eq!(lo.ifindex, 1);
        assert_eq!(lo.mtu, 65536);
        // Every interface `ip` lists, netlink lists, with the same index.
        let shown = super::super::ip(&["-o", "link", "show"]).unwrap();
        assert_eq!(shown.lines().count(), links.len(), "{shown}");
    }
}
