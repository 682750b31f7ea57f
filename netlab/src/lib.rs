//! Test beds made of network namespaces, and traffic through them: what the end-to-end tests
//! and the bench stand on.
//!
//! Every namespace is named `dpt-<pid>-<n>-<role>`: unique to the run, removed when its guard
//! drops (also on panic), and swept by later runs if the process that made it is gone.
//! Namespaces are joined only to each other: nothing here touches the root namespace's
//! interfaces, addresses or routes.
pub mod craft;
pub mod kube_proxy;
pub mod netfilter;
pub mod netns;
pub mod podman;
pub mod probe;
pub mod root;
pub mod topology;
pub mod traffic;
