//! The daemon's loop body: every [`POLL`], each follower looks at its source (policy and
//! services first, then the routes); a CNI plugin's request is answered by the route follower.
use dataplane::{kernel::Dataplane, model::Ipv4Prefix, plan::Plan, system::workloads::Reply};

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
        check(self.routes.applied(), host_ifname, addr)
    }
}

/// Whether `applied` attaches `host_ifname` and routes `addr` to it (the plugin's question
/// after its sync), and if not, why.
fn check(applied: &Plan, host_ifname: &str, addr: std::net::Ipv4Addr) -> Reply {
    let fail = |error: String| Reply {
        ok: false,
        error: Some(error),
    };
    let Some(attachment) = applied.attachments.iter().find(|a| a.ifname == host_ifname) else {
        return fail(format!(
            "the dataplane is not attached to `{host_ifname}` (see the loader's log)"
        ));
    };
    let prefix = Ipv4Prefix::new(addr, 32).expect("a /32 has no host bits");
    match applied.routes.get(&prefix) {
        Some(nh) if nh.ifindex == attachment.ifindex => Reply {
            ok: true,
            error: None,
        },
        Some(nh) => fail(format!(
            "the dataplane routes {addr} to interface {} instead of `{host_ifname}` ({})",
            nh.ifindex, attachment.ifindex
        )),
        None => fail(format!("the dataplane has no route to {addr}")),
    }
}
