//! `ebpf-dataplane`: the CNI plugin of the eBPF dataplane. A container runtime (podman,
//! containerd, CRI-O, kubelet) runs it for every container it starts and stops, with the
//! CNI_* environment variables and the network configuration on stdin (CNI 1.0.0: ADD, DEL,
//! CHECK, VERSION). It wires the container as Calico does (veth, /32, default route via
//! 169.254.1.1), gets the address from an IPAM plugin, and has the host's loader attach, route
//! and police it before ADD returns. See docs/operating.md, "With podman" and "With Kubernetes".
mod commands;
mod ipam;
mod loader_link;
mod spec;

use std::io::Read;

use serde_json::json;
use spec::{CniError, Env, NetConf, SUPPORTED_VERSIONS, code};

fn main() {
    let env = Env::read(|name| std::env::var(name).ok());
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    // Errors are reported in the configuration's version when it can be read.
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .unwrap_or_else(|| "1.0.0".into());
    let outcome = read
        .map_err(|e| CniError::new(code::IO_FAILURE, "reading stdin").with_details(e))
        .and(env)
        .and_then(|env| run(&env, &stdin));
    match outcome {
        Ok(Some(doc)) => println!("{doc}"),
        Ok(None) => {}
        Err(e) => {
            println!("{}", e.document(&version));
            eprintln!("ebpf-dataplane: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the command; the document to print, if it has one.
fn run(env: &Env, stdin: &[u8]) -> Result<Option<serde_json::Value>, CniError> {
    if env.command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": "1.0.0",
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let (conf, raw) = NetConf::parse(stdin)?;
    match env.command.as_str() {
        "ADD" => commands::add(env, &conf, &raw).map(Some),
        "DEL" => commands::del(env, &raw).map(|()| None),
        "CHECK" => commands::check(env, &conf, &raw).map(|()| None),
        other => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_COMMAND `{other}` is not ADD, DEL, CHECK or VERSION"),
        )),
    }
}
