//! The CNI specification's side of the plugin: the runtime's environment variables, the
//! network configuration on stdin, the result and error documents on stdout
//! (https://www.cni.dev/docs/spec/, version 1.0.0, read back to 0.3.0).
use std::{net::Ipv4Addr, path::PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The versions whose configurations and results this plugin reads and writes.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The spec's well-known error codes (section "Error"), and ours from 100.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Wiring the container failed.
    pub const WIRING: u32 = 100;
    /// The loader refused the workload.
    pub const DATAPLANE: u32 = 101;
    /// CHECK found the container's network not as ADD left it.
    pub const CHECK_FAILED: u32 = 102;
    /// The IPAM plugin failed.
    pub const IPAM: u32 = 103;
}

/// An error as the spec's error document carries it.
#[derive(Debug, thiserror::Error)]
#[error("{msg}{}", details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl std::fmt::Display) -> Self {
        self.details = Some(details.to_string());
        self
    }

    /// The error document (printed on stdout, exit status 1).
    pub fn document(&self, cni_version: &str) -> Value {
        let mut doc = json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if let Some(details) = &self.details {
            doc["details"] = json!(details);
        }
        doc
    }
}

/// The runtime's parameters (the CNI_* environment variables).
#[derive(Clone, Debug)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// CNI_PATH: where the IPAM plugin is looked for.
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads and checks the variables the command needs.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let missing = |name: &str| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("{name} is not set (the runtime sets it)"),
            )
        };
        let command = get("CNI_COMMAND").ok_or_else(|| missing("CNI_COMMAND"))?;
        let needs_container = !matches!(command.as_str(), "VERSION");
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if needs_container {
            check_container_id(&container_id)?;
            check_ifname(&ifname)?;
        }
        let netns = get("CNI_NETNS")
            .filter(|n| !n.is_empty())
            .map(PathBuf::from);
        if command == "ADD" && netns.is_none() {
            return Err(missing("CNI_NETNS"));
        }
        let path = get("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(Self {
            command,
            container_id,
            netns,
            ifname,
            path,
        })
    }
}

/// Container IDs are letters, digits, `_`, `.` and `-`, starting with a letter or digit
/// (they name files here).
fn check_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_CONTAINERID `{id}` is not a container ID (letters, digits, _ . -)"),
        ))
    }
}

/// Interface names as the kernel takes them: 1-15 bytes, no `/`, `:` or whitespace, not `.`
/// or `..`.
fn check_ifname(name: &str) -> Result<(), CniError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_IFNAME `{name}` is not an interface name"),
        ))
    }
}

/// The network configuration (one plugin's entry of a configuration list, as the runtime
/// hands it over).
#[derive(Clone, Debug, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Required by the spec; parsing checks that it is there (the IPAM plugin uses it).
    #[expect(
        dead_code,
        reason = "read by the IPAM plugin, from the raw configuration"
    )]
    pub name: String,
    /// MTU of the container's interface; default: what the loader says the host's
    /// encapsulation leaves, else the kernel's default.
    pub mtu: Option<u32>,
    /// Make the container end fit the XDP attach kind (`loader run --workload-attach xdp`).
    #[serde(default)]
    pub xdp: bool,
    #[serde(rename = "prevResult")]
    pub prev_result: Option<Value>,
}

impl NetConf {
    pub fn parse(bytes: &[u8]) -> Result<(Self, Value), CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                "the network configuration is not JSON",
            )
            .with_details(e)
        })?;
        let conf: NetConf = serde_json::from_value(raw.clone()).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                "the network configuration is not valid",
            )
            .with_details(e)
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {} is not supported (supported: {})",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        Ok((conf, raw))
    }
}

/// What ADD reports: the two ends of the veth, the address, the default route.
#[derive(Clone, Debug, Serialize)]
pub struct AddResult {
    pub cni_version: String,
    pub host_ifname: String,
    pub host_mac: String,
    pub ifname: String,
    pub mac: String,
    pub sandbox: String,
    pub addr: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The IPAM plugin's DNS settings, passed on.
    pub dns: Option<Value>,
}

impl AddResult {
    /// The result document in the configuration's version (0.3.x and 0.4.0 mark each
    /// address with its IP version; 1.0.0 does not).
    pub fn document(&self) -> Value {
        let mut ip = json!({
            "address": format!("{}/32", self.addr),
            "gateway": self.gateway.to_string(),
            "interface": 1,
        });
        if self.cni_version != "1.0.0" {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": self.cni_version,
            "interfaces": [
                { "name": self.host_ifname, "mac": self.host_mac },
                { "name": self.ifname, "mac": self.mac, "sandbox": self.sandbox },
            ],
            "ips": [ip],
            "routes": [{ "dst": "0.0.0.0/0", "gw": self.gateway.to_string() }],
            "dns": self.dns.clone().unwrap_or_else(|| json!({})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::read(|k| vars.get(k).cloned())
    }

    #[test]
    fn the_environment_is_checked_before_anything_is_done() {
        let ok = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ])
        .unwrap();
        assert_eq!(ok.path.len(), 2);
        let no_netns = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert_eq!(no_netns.code, code::INVALID_ENVIRONMENT);
        assert!(no_netns.msg.contains("CNI_NETNS"), "{}", no_netns.msg);
        // DEL needs no namespace (it may be gone), but a container ID that names no file.
        let traversal = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "../../etc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(
            traversal.msg.contains("CNI_CONTAINERID"),
            "{}",
            traversal.msg
        );
        let long_if = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_IFNAME", "a-very-long-ifname"),
        ])
        .unwrap_err();
        assert!(long_if.msg.contains("CNI_IFNAME"), "{}", long_if.msg);
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }

    #[test]
    fn configurations_name_their_problem() {
        let bad_json = NetConf::parse(b"{").unwrap_err();
        assert_eq!(bad_json.code, code::DECODE_FAILURE);
        let old = NetConf::parse(br#"{"cniVersion":"0.2.0","name":"n","type":"ebpf-dataplane"}"#)
            .unwrap_err();
        assert_eq!(old.code, code::INCOMPATIBLE_VERSION);
        let no_name =
            NetConf::parse(br#"{"cniVersion":"1.0.0","type":"ebpf-dataplane"}"#).unwrap_err();
        assert_eq!(no_name.code, code::INVALID_CONFIG);
        assert!(no_name.to_string().contains("name"), "{no_name}");
    }

    #[test]
    fn results_follow_the_configured_version() {
        let result = AddResult {
            cni_version: "1.0.0".into(),
            host_ifname: "dp0123456789ab".into(),
            host_mac: "02:00:00:00:00:01".into(),
            ifname: "eth0".into(),
            mac: "02:00:00:00:00:02".into(),
            sandbox: "/run/netns/x".into(),
            addr: Ipv4Addr::new(198, 18, 1, 5),
            gateway: Ipv4Addr::new(169, 254, 1, 1),
            dns: None,
        };
        let doc = result.document();
        assert_eq!(doc["ips"][0]["address"], "198.18.1.5/32");
        assert_eq!(doc["ips"][0]["interface"], 1);
        assert_eq!(doc["interfaces"][1]["sandbox"], "/run/netns/x");
        assert!(doc["ips"][0].get("version").is_none());
        let old = AddResult {
            cni_version: "0.4.0".into(),
            ..result
        };
        assert_eq!(old.document()["ips"][0]["version"], "4");
    }
}
