//! What the maps should hold: the route table file resolved against the system, plus, with
//! `--routes-from-kernel`, the kernel routes the filter takes.
//!
//! The file is all or nothing (a table with a bad line is not applied). Kernel routes are a
//! live feed: one that cannot be realised (its next hop does not answer ARP, say) is left out
//! with a warning and the others are taken; its packets go on to the kernel. Where the file
//! and the kernel both route a prefix, the file wins.
use std::collections::{BTreeMap, BTreeSet};

use dataplane::{
    config::{Config, LineError},
    kernel_routes::{self, KernelRouteFilter, Skipped},
    resolve::{self, LiveSystem, Plan},
};

/// The plan, and what was left out of the kernel's routes that an operator should hear of.
pub struct Desired {
    pub plan: Plan,
    /// Kernel routes in the plan.
    pub from_kernel: usize,
    pub warnings: Vec<String>,
}

pub fn desired(
    config: &Config,
    kernel: Option<&KernelRouteFilter>,
) -> Result<Desired, Vec<LineError>> {
    let mut plan = resolve::resolve(config, &LiveSystem)?;
    let Some(filter) = kernel else {
        return Ok(Desired {
            plan,
            from_kernel: 0,
            warnings: Vec::new(),
        });
    };
    let table = kernel_routes::read(filter).map_err(|e| {
        vec![LineError {
            line: 0,
            message: format!("reading the kernel's routes: {e}"),
        }]
    })?;
    let (mut routes, skipped) = kernel_routes::select(&table, filter, config);
    let mut warnings: Vec<String> = skipped
        .iter()
        .map(|s| match s {
            Skipped::Multipath(dst) => {
                format!("kernel route {dst} has several next hops: not taken (one per prefix)")
            }
            Skipped::UndeclaredDevice { dst, dev } => format!(
                "kernel route {dst} goes through `{dev}`, which the route table does not declare: not taken"
            ),
        })
        .collect();
    routes.retain(|r| {
        let file_has_it = plan.routes.contains_key(&r.prefix);
        if file_has_it {
            warnings.push(format!(
                "kernel route {} is also in the route table: the table's is used",
                r.prefix
            ));
        }
        !file_has_it
    });
    let described: BTreeMap<usize, String> = routes
        .iter()
        .map(|r| (r.line, format!("{} {:?}", r.prefix, r.target)))
        .collect();
    let mut kernel_config = Config {
        interfaces: config.interfaces.clone(),
        routes,
        vxlan: config.vxlan.clone(),
    };
    let kernel_plan = match resolve::resolve(&kernel_config, &LiveSystem) {
        Ok(p) => p,
        Err(errors) => {
            // Problems of the system as a whole are not any route's: nothing is applied.
            if errors.iter().any(|e| e.line == 0) {
                return Err(errors);
            }
            let bad: BTreeSet<usize> = errors.iter().map(|e| e.line).collect();
            for e in &errors {
                warnings.push(format!(
                    "kernel route {}: {}: not taken",
                    described.get(&e.line).map_or("?", String::as_str),
                    e.message
                ));
            }
            kernel_config.routes.retain(|r| !bad.contains(&r.line));
            resolve::resolve(&kernel_config, &LiveSystem)?
        }
    };
    let from_kernel = kernel_plan.routes.len();
    plan.tx_ports.extend(kernel_plan.tx_ports);
    plan.routes.extend(kernel_plan.routes);
    Ok(Desired {
        plan,
        from_kernel,
        warnings,
    })
}
