//! Following the kernel through netlink notifications (rtnetlink's multicast groups, read in
//! this process): a route change marks the kernel's routing table changed (for
//! `--routes-from-kernel`); a link or address change, or a neighbour change where the plan
//! uses or waits for that neighbour, marks the system changed, and the watcher resolves the
//! plan afresh (an interface gone, a workload's MAC changed under its address, a next hop that
//! answered ARP). Other neighbours (a workload can make new ones at will, with forged ARP
//! senders) wake nothing. A full re-read every 30 s catches anything a notification could miss
//! (a full socket buffer drops messages).
use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use rtnetlink::{
    MulticastGroup, new_multicast_connection,
    packet_core::NetlinkPayload,
    packet_route::{
        RouteNetlinkMessage,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    },
};
use tracing::{debug, warn};

const RESYNC: Duration = Duration::from_secs(30);

/// What the notifications mark changed.
#[derive(Clone, Default)]
pub struct KernelEvents {
    /// The kernel's IPv4 routes may have changed.
    pub routes: Arc<AtomicBool>,
    /// Links, addresses or watched neighbours changed: the plan's interfaces and MACs may be
    /// stale.
    pub system: Arc<AtomicBool>,
    /// The neighbours whose changes matter: those the plan uses (next hops, tunnel endpoints,
    /// workloads) and those it waits for (next hops that did not answer). Kept by the route
    /// follower after each plan.
    pub watched_neighbours: Arc<Mutex<HashSet<Ipv4Addr>>>,
}

impl KernelEvents {
    fn watches(&self, addr: Ipv4Addr) -> bool {
        self.watched_neighbours
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&addr)
    }

    fn mark_all(&self) {
        self.routes.store(true, Ordering::Relaxed);
        self.system.store(true, Ordering::Relaxed);
    }
}

/// Starts following on the current runtime, in this process's network namespace. Fails only
/// if the netlink socket cannot be opened.
pub fn spawn(events: KernelEvents) -> std::io::Result<()> {
    let (connection, _handle, mut messages) = new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Neigh,
    ])?;
    tokio::spawn(connection);
    let resync = events.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            tick.tick().await;
            resync.mark_all();
        }
    });
    tokio::spawn(async move {
        let mut neighbours = NeighbourMacs::default();
        while let Some((message, _)) = messages.next().await {
            let NetlinkPayload::InnerMessage(message) = message.payload else {
                // An overrun (ENOBUFS) arrives as an error: anything may have been missed.
                events.mark_all();
                continue;
            };
            match &message {
                RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_) => {
                    events.routes.store(true, Ordering::Relaxed)
                }
                RouteNetlinkMessage::NewLink(_)
                | RouteNetlinkMessage::DelLink(_)
                | RouteNetlinkMessage::NewAddress(_)
                | RouteNetlinkMessage::DelAddress(_) => {
                    events.system.store(true, Ordering::Relaxed)
                }
                RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
                    let deleted = matches!(message, RouteNetlinkMessage::DelNeighbour(_));
                    match neighbours.update(n, deleted) {
                        Some(addr) if events.watches(addr) => {
                            events.system.store(true, Ordering::Relaxed)
                        }
                        _ => continue,
                    }
                }
                _ => continue,
            }
            debug!(?message, "kernel notification");
        }
        warn!("the kernel's notifications stopped; only the 30 s re-reads remain");
    });
    Ok(())
}

/// The MAC each IPv4 neighbour was last announced with: a neighbour's state moves (REACHABLE,
/// STALE, DELAY...) on every host all the time; only a MAC that appears, changes or goes
/// matters to the plan.
#[derive(Default)]
struct NeighbourMacs(HashMap<(u32, Ipv4Addr), Option<Vec<u8>>>);

impl NeighbourMacs {
    /// Records `message`; the neighbour's address if its MAC is new, changed or gone.
    fn update(&mut self, message: &NeighbourMessage, deleted: bool) -> Option<Ipv4Addr> {
        let mut addr = None;
        let mut mac = None;
        for attribute in &message.attributes {
            match attribute {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => addr = Some(*a),
                NeighbourAttribute::LinkLayerAddress(m) => mac = Some(m.clone()),
                _ => {}
            }
        }
        let addr = addr?;
        let key = (message.header.ifindex, addr);
        let changed = if deleted {
            self.0.remove(&key).is_some_and(|mac| mac.is_some())
        } else {
            self.0.insert(key, mac.clone()) != Some(mac)
        };
        changed.then_some(addr)
    }
}
