//! What `loader run` does while it runs: following its sources (the route table, the kernel's
//! routes, the cluster's records, the policy, the services) into the maps.
//!
//! - [`start`]: every input read and checked before anything is loaded, then the followers;
//! - [`follow`]: one follower per source, each applying what the core in `dataplane::plan`
//!   decides; [`watch`]: the loop body that polls them and answers the CNI plugin;
//! - [`kernel_watch`]: the kernel's link, address, neighbour and route notifications;
//! - [`plugin_socket`]: the CNI plugin's requests;
//! - [`cluster`], [`join`], [`store`]: this host's record in etcd and the other hosts'
//!   records, and the store they are read from; [`cluster_services`]: the store's services.
pub mod cluster;
pub mod cluster_services;
pub mod follow;
pub mod join;
pub mod kernel_watch;
pub mod plugin_socket;
pub mod start;
pub mod store;
pub mod watch;
