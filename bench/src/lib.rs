//! Test networks made of network namespaces, and traffic through them. Used by the bench and
//! by the end-to-end tests.
//!
//! Every namespace is named `dpt-<pid>-<n>-<role>`: unique to the run, removed when its guard
//! drops (also on panic), and swept by later runs if the process that made it is gone.
//! Namespaces are joined only to each other: nothing here touches the root namespace's
//! interfaces, addresses or routes.
pub mod charts;
pub mod measure;
pub mod modes;
pub mod netns;
pub mod policy_scaling;
pub mod probe;
pub mod report;
pub mod results;
pub mod topology;
pub mod traffic;
