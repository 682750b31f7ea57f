//! The bench: the forwarding modes it compares (on beds from `netlab`), one measured point,
//! the policy rule-scaling and service-scaling sweeps, the softirq probe that accounts CPU in the kernel, and the
//! results, report and charts.
pub mod campaign;
pub mod charts;
pub mod measure;
pub mod modes;
pub mod policy_scaling;
pub mod report;
pub mod results;
pub mod route_scale;
pub mod service_scaling;
pub mod softirq;
