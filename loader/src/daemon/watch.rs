//! The daemon's loop body: every [`POLL`], each follower looks at its source (policy and
//! services first, then the routes); a CNI plugin's request is answered by the route follower.
use dataplane::{kernel::Dataplane, system::workloads::Reply};

use super::follow::{Follower, routes::RouteFollower};

/// How often the sources are looked at.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Watcher {
    routes: RouteFollower,
    /// The other sources, polled before the routes.
    others: Vec<Box<dyn Follower>>,
}

impl Watcher {
    pub fn new(routes: RouteFollower) -> Self {
        Self {
            routes,
            others: Vec::new(),
        }
    }

    /// Also follows `source`.
    pub fn follow(&mut self, source: impl Follower + 'static) {
        self.others.push(Box::new(source));
    }

    /// Looks at every source; applies what changed.
    pub fn poll(&mut self, dataplane: &mut Dataplane) {
        for source in &mut self.others {
            source.poll(dataplane);
        }
        self.routes.poll(dataplane);
    }

    /// The CNI plugin's request: the workloads as they are now, in the maps.
    pub fn sync(&mut self, dataplane: &mut Dataplane) -> Reply {
        self.routes.sync(dataplane)
    }

    /// Whether the workload behind `host_ifname` is attached and routed.
    pub fn check(&self, host_ifname: &str, addr: std::net::Ipv4Addr) -> Reply {
        self.routes.check(host_ifname, addr)
    }
}
