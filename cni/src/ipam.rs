//! Addresses from an IPAM plugin, by delegation as the spec describes it: the IPAM plugin
//! named by `ipam.type` is looked for in CNI_PATH and run with the same environment (but the
//! command) and the network configuration on stdin. The range it allocates from is the
//! configuration's; when it names none, the prefix the cluster gave this host (the loader
//! publishes it), so nobody copies it by hand.
use std::{
    io::Write,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::spec::{CniError, Env, code};

/// The configuration to hand the IPAM plugin: `raw` with its `ipam` given `subnet` as its
/// range if it has neither `ranges` nor `subnet` of its own.
pub fn configuration(raw: &Value, subnet: Option<&str>) -> Result<Value, CniError> {
    let mut conf = raw.clone();
    let Some(ipam) = conf.get_mut("ipam").and_then(Value::as_object_mut) else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "the network configuration has no `ipam` section (e.g. {\"type\": \"host-local\"})",
        ));
    };
    if !ipam.get("type").is_some_and(Value::is_string) {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "`ipam.type` must name the IPAM plugin (e.g. \"host-local\")",
        ));
    }
    if !ipam.contains_key("ranges") && !ipam.contains_key("subnet") {
        match subnet {
            Some(subnet) => {
                ipam.insert("ranges".into(), json!([[{ "subnet": subnet }]]));
            }
            None => {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "`ipam` names no range and the loader has published no prefix for this host: give `ipam.ranges`, or run the loader in cluster mode (--etcd)",
                ));
            }
        }
    }
    Ok(conf)
}

/// Runs the IPAM plugin for `command` (ADD, DEL, CHECK); its result on success.
pub fn delegate(env: &Env, command: &str, conf: &Value) -> Result<Value, CniError> {
    let kind = conf["ipam"]["type"].as_str().unwrap_or_default();
    let binary = find(env, kind)?;
    let mut child = Command::new(&binary)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::new(code::IPAM, format!("cannot run {}", binary.display())).with_details(e)
        })?;
    let input = serde_json::to_vec(conf).expect("JSON serializes");
    // A plugin that exits without reading is reported by its status below.
    let _ = child.stdin.take().expect("piped stdin").write_all(&input);
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(code::IPAM, format!("running {}", binary.display())).with_details(e)
    })?;
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        let msg = doc["msg"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        return Err(CniError::new(
            code::IPAM,
            format!("IPAM plugin `{kind}` {command} failed: {msg}"),
        ));
    }
    Ok(doc)
}

/// The first IPv4 address of an IPAM result.
pub fn first_ipv4(result: &Value) -> Result<Ipv4Addr, CniError> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .find_map(|cidr| cidr.split('/').next()?.parse().ok())
        .ok_or_else(|| {
            CniError::new(code::IPAM, "the IPAM plugin gave no IPv4 address").with_details(result)
        })
}

fn find(env: &Env, kind: &str) -> Result<PathBuf, CniError> {
    if kind.is_empty() || kind.contains('/') {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("`ipam.type` `{kind}` is not a plugin name"),
        ));
    }
    env.path
        .iter()
        .map(|dir| dir.join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                code::IPAM,
                format!(
                    "IPAM plugin `{kind}` not found in CNI_PATH ({})",
                    env.path
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_prefix_fills_an_empty_range_and_never_overrides_one() {
        let raw = json!({"cniVersion": "1.0.0", "name": "n", "type": "ebpf-dataplane",
                         "ipam": {"type": "host-local"}});
        let filled = configuration(&raw, Some("198.18.3.0/24")).unwrap();
        assert_eq!(filled["ipam"]["ranges"][0][0]["subnet"], "198.18.3.0/24");
        let own = json!({"cniVersion": "1.0.0", "name": "n", "type": "ebpf-dataplane",
                         "ipam": {"type": "host-local", "subnet": "198.19.0.0/24"}});
        assert_eq!(configuration(&own, Some("198.18.3.0/24")).unwrap(), own);
        let none = configuration(&raw, None).unwrap_err();
        assert!(none.msg.contains("no range"), "{}", none.msg);
        let no_ipam = json!({"cniVersion": "1.0.0", "name": "n", "type": "ebpf-dataplane"});
        assert_eq!(
            configuration(&no_ipam, None).unwrap_err().code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn the_first_ipv4_address_of_a_result_is_taken() {
        let result = json!({"ips": [{"address": "fd00::5/64"}, {"address": "198.18.3.7/24"}]});
        assert_eq!(first_ipv4(&result).unwrap(), Ipv4Addr::new(198, 18, 3, 7));
        assert!(first_ipv4(&json!({"ips": []})).is_err());
    }
}
