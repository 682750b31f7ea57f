//! The route table file: which interfaces the dataplane attaches to, which prefixes are local
//! workloads and which are reached through another host. See docs/formats.md, "Route table".
//!
//! ```text
//! # interface NAME [attach xdp|xdp-generic|tc]
//! interface eth0
//! interface cali1 attach tc
//! # route PREFIX dev IFACE              a local workload behind IFACE
//! # route PREFIX via ADDRESS dev IFACE  another host's prefix, next hop on the underlay
//! route 198.18.1.2/32 dev cali1
//! route 198.18.2.0/24 via 198.19.0.2 dev eth0
//! ```
//!
//! Parsing is pure (no system lookups); every problem names its line, and all of them are
//! reported at once.
use std::{collections::HashMap, fmt, net::Ipv4Addr, path::Path, str::FromStr};

pub use super::prefix::Ipv4Prefix;
use super::{LineError, render_line_errors, statements};

/// How a program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attach {
    /// XDP in the driver (native mode).
    Xdp,
    /// XDP in generic (skb) mode, for drivers without native XDP.
    XdpGeneric,
    /// TC ingress (sched_cls through tcx).
    Tc,
}

impl Attach {
    /// The attach kind used when the file does not name one. TC on every kind of interface:
    /// it works with workload interfaces exactly as a container runtime leaves them and keeps
    /// GSO (see docs/design.md, "Attach kinds and workload wiring", for the measurement behind it).
    pub fn default_for(_role: Role) -> Self {
        Attach::Tc
    }
}

impl FromStr for Attach {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "xdp" => Ok(Attach::Xdp),
            "xdp-generic" => Ok(Attach::XdpGeneric),
            "tc" => Ok(Attach::Tc),
            other => Err(format!(
                "unknown attach kind `{other}` (expected xdp, xdp-generic or tc)"
            )),
        }
    }
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attach::Xdp => "xdp",
            Attach::XdpGeneric => "xdp-generic",
            Attach::Tc => "tc",
        })
    }
}

/// What an interface is for, as the routes that use it tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Faces local workloads (named by `route ... dev IFACE` with no `via`).
    Workload,
    /// Faces other hosts (named by a `via` route, or by no route at all).
    Underlay,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub attach: Attach,
    pub role: Role,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A workload on this host behind `dev`.
    Local { dev: String },
    /// Another host's prefix, reached through `via` on `dev`.
    Remote { via: Ipv4Addr, dev: String },
    /// Another host's prefix, reached through VXLAN to its tunnel endpoint `vtep` (underlay
    /// address) whose VTEP MAC is `mac`, with `vni` (default: this host's first VNI). `dev` is
    /// the `vxlan` statement's underlay interface.
    Vxlan {
        vtep: Ipv4Addr,
        mac: [u8; 6],
        vni: Option<u32>,
        dev: String,
    },
}

impl Target {
    pub fn dev(&self) -> &str {
        match self {
            Target::Local { dev } | Target::Remote { dev, .. } | Target::Vxlan { dev, .. } => dev,
        }
    }
}

/// This host's VXLAN tunnel endpoint: `vxlan dev IFACE vni N [vni N ...] [port P] [mac MAC]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanDecl {
    /// Underlay interface: its first IPv4 address is the tunnel's source.
    pub dev: String,
    /// VNIs this host decapsulates; the first is the default for routes.
    pub vnis: Vec<u32>,
    pub port: u16,
    /// This host's VTEP MAC (inner source MAC); default derived from the underlay address.
    pub mac: Option<[u8; 6]>,
    pub line: usize,
}

/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Prefix,
    pub target: Target,
    pub line: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    pub vxlan: Option<VxlanDecl>,
}

impl Config {
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// Everything wrong with a route table file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", render(path, errors))]
    Invalid {
        path: String,
        errors: Vec<LineError>,
    },
}

fn render(path: &str, errors: &[LineError]) -> String {
    format!(
        "invalid route table ({} problem(s)):\n{}",
        errors.len(),
        render_line_errors(path, errors)
    )
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|errors| ConfigError::Invalid {
        path: shown,
        errors,
    })
}

/// Parses the text of a route table.
pub fn parse(text: &str) -> Result<Config, Vec<LineError>> {
    let mut errors = Vec::new();
    let mut declared: Vec<(String, Option<Attach>, usize)> = Vec::new();
    let mut routes: Vec<Route> = Vec::new();
    let mut seen_prefix: HashMap<Ipv4Prefix, usize> = HashMap::new();
    let mut vxlan: Option<VxlanDecl> = None;

    for (line, words) in statements(text) {
        let Some((&keyword, args)) = words.split_first() else {
            continue;
        };
        let result = match keyword {
            "interface" => parse_interface(args).and_then(|(name, attach)| {
                match declared.iter().find(|(n, _, _)| *n == name) {
                    Some((_, _, first)) => Err(format!(
                        "interface `{name}` is already declared on line {first}"
                    )),
                    None => {
                        declared.push((name, attach, line));
                        Ok(())
                    }
                }
            }),
            "route" => parse_route(args, line).and_then(|route| {
                match seen_prefix.insert(route.prefix, line) {
                    Some(first) => Err(format!(
                        "a route for {} is already given on line {first}",
                        route.prefix
                    )),
                    None => {
                        routes.push(route);
                        Ok(())
                    }
                }
            }),
            "vxlan" => parse_vxlan(args, line).and_then(|decl| match &vxlan {
                Some(first) => Err(format!("`vxlan` is already given on line {}", first.line)),
                None => {
                    vxlan = Some(decl);
                    Ok(())
                }
            }),
            other => Err(format!(
                "unknown statement `{other}` (expected `interface`, `route` or `vxlan`)"
            )),
        };
        if let Err(message) = result {
            errors.push(LineError { line, message });
        }
    }

    if let Some(decl) = &vxlan
        && !declared.iter().any(|(n, _, _)| *n == decl.dev)
    {
        errors.push(LineError {
            line: decl.line,
            message: format!(
                "interface `{0}` is not declared (add a line `interface {0}`)",
                decl.dev
            ),
        });
    }
    for route in &mut routes {
        if let Target::Vxlan { dev, .. } = &mut route.target {
            match &vxlan {
                Some(decl) => *dev = decl.dev.clone(),
                None => {
                    errors.push(LineError {
                        line: route.line,
                        message: "a vxlan route needs this host's tunnel endpoint: add \
                                  `vxlan dev IFACE vni N`"
                            .into(),
                    });
                    continue;
                }
            }
        }
        let dev = route.target.dev();
        if !declared.iter().any(|(n, _, _)| n == dev) {
            errors.push(LineError {
                line: route.line,
                message: format!(
                    "interface `{dev}` is not declared (add a line `interface {dev}`)"
                ),
            });
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }

    let interfaces = declared
        .into_iter()
        .map(|(name, attach, line)| {
            let faces_workloads = routes
                .iter()
                .any(|r| matches!(&r.target, Target::Local { dev } if *dev == name));
            let faces_hosts = routes
                .iter()
                .any(|r| matches!(&r.target, Target::Remote { dev, .. } | Target::Vxlan { dev, .. } if *dev == name));
            let role = if faces_workloads && !faces_hosts {
                Role::Workload
            } else {
                Role::Underlay
            };
            let attach = attach.unwrap_or_else(|| Attach::default_for(role));
            Interface {
                name,
                attach,
                role,
                line,
            }
        })
        .collect();
    Ok(Config {
        interfaces,
        routes,
        vxlan,
    })
}

fn parse_vni(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|v| *v <= MAX_VNI)
        .ok_or_else(|| format!("`{s}` is not a VNI (0-{MAX_VNI})"))
}

fn parse_mac_arg(s: &str) -> Result<[u8; 6], String> {
    let mac = super::mac::parse_mac(s).ok_or_else(|| format!("`{s}` is not a MAC address"))?;
    if mac[0] & 1 != 0 {
        return Err(format!(
            "{s} is a multicast MAC address; a VTEP needs a unicast one"
        ));
    }
    Ok(mac)
}

fn parse_vxlan(args: &[&str], line: usize) -> Result<VxlanDecl, String> {
    let usage = "expected `vxlan dev IFACE vni N [vni N ...] [port P] [mac MAC]`";
    let mut decl = VxlanDecl {
        dev: String::new(),
        vnis: Vec::new(),
        port: dataplane_common::vxlan::VXLAN_DEFAULT_PORT,
        mac: None,
        line,
    };
    let mut rest = args;
    while let [key, value, tail @ ..] = rest {
        match *key {
            "dev" => decl.dev = check_ifname(value)?,
            "vni" => {
                let vni = parse_vni(value)?;
                if decl.vnis.contains(&vni) {
                    return Err(format!("VNI {vni} is given twice"));
                }
                decl.vnis.push(vni);
            }
            "port" => {
                decl.port = value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{value}` is not a UDP port (1-65535)"))?
            }
            "mac" => decl.mac = Some(parse_mac_arg(value)?),
            other => return Err(format!("unknown `vxlan` setting `{other}`: {usage}")),
        }
        rest = tail;
    }
    if let [dangling] = rest {
        return Err(format!("`{dangling}` needs a value: {usage}"));
    }
    if decl.dev.is_empty() {
        return Err(format!("`vxlan` needs `dev IFACE`: {usage}"));
    }
    if decl.vnis.is_empty() {
        return Err(format!("`vxlan` needs at least one `vni N`: {usage}"));
    }
    Ok(decl)
}

fn parse_interface(args: &[&str]) -> Result<(String, Option<Attach>), String> {
    match args {
        [] => Err("`interface` needs a name: `interface NAME [attach xdp|xdp-generic|tc]`".into()),
        [name] => Ok((check_ifname(name)?, None)),
        [name, "attach", kind] => Ok((check_ifname(name)?, Some(kind.parse()?))),
        [_, "attach"] => Err("`attach` needs a kind: xdp, xdp-generic or tc".into()),
        [_, rest @ ..] => Err(format!(
            "unexpected `{}` after the interface name (expected `attach KIND`)",
            rest.join(" ")
        )),
    }
}

fn check_ifname(name: &str) -> Result<String, String> {
    // Linux: at most 15 bytes (IFNAMSIZ - 1), no '/', no ':' in a device name, not "." or "..".
    if name.len() > 15 || name.contains(['/', ':']) || name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid interface name"));
    }
    Ok(name.to_string())
}

fn parse_route(args: &[&str], line: usize) -> Result<Route, String> {
    let usage = "expected `route PREFIX dev IFACE`, `route PREFIX via ADDRESS dev IFACE` or \
                 `route PREFIX vxlan VTEP mac MAC [vni N]`";
    let (prefix, target) = match args {
        [prefix, "dev", dev] => (
            prefix,
            Target::Local {
                dev: check_ifname(dev)?,
            },
        ),
        [prefix, "via", via, "dev", dev] => {
            let via = via
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("next hop `{via}` is not an IPv4 address"))?;
            (
                prefix,
                Target::Remote {
                    via,
                    dev: check_ifname(dev)?,
                },
            )
        }
        [prefix, "vxlan", vtep, "mac", mac, tail @ ..] => {
            let vtep = vtep
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("VTEP `{vtep}` is not an IPv4 address"))?;
            let vni = match tail {
                [] => None,
                ["vni", vni] => Some(parse_vni(vni)?),
                _ => {
                    return Err(format!(
                        "cannot read `{}` after the VTEP MAC: {usage}",
                        tail.join(" ")
                    ));
                }
            };
            // `dev` comes from the `vxlan` statement once the whole file is read.
            (
                prefix,
                Target::Vxlan {
                    vtep,
                    mac: parse_mac_arg(mac)?,
                    vni,
                    dev: String::new(),
                },
            )
        }
        [_, "vxlan", ..] => {
            return Err(format!("a vxlan route needs the VTEP and its MAC: {usage}"));
        }
        [_, "via", _] => return Err(format!("a `via` route needs `dev IFACE`: {usage}")),
        [] => return Err(format!("`route` needs a prefix: {usage}")),
        _ => return Err(format!("cannot read `route {}`: {usage}", args.join(" "))),
    };
    let prefix: Ipv4Prefix = prefix.parse()?;
    if let Target::Remote { via, .. } | Target::Vxlan { vtep: via, .. } = &target
        && prefix.contains(*via)
    {
        return Err(format!(
            "next hop {via} lies inside the prefix {prefix} it routes"
        ));
    }
    Ok(Route {
        prefix,
        target,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# host A
interface eth0 attach xdp
interface cali1          # workload veth
interface cali2 attach tc

route 198.18.1.2/32 dev cali1
route 198.18.1.3 dev cali2
route 198.18.2.0/24 via 198.19.0.2 dev eth0
";

    #[test]
    fn parses_a_complete_table() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.interfaces.len(), 3);
        let eth0 = config.interface("eth0").unwrap();
        assert_eq!(
            (eth0.attach, eth0.role, eth0.line),
            (Attach::Xdp, Role::Underlay, 2)
        );
        let cali1 = config.interface("cali1").unwrap();
        assert_eq!(
            (cali1.attach, cali1.role),
            (Attach::default_for(Role::Workload), Role::Workload)
        );
        assert_eq!(config.routes.len(), 3);
        assert_eq!(config.routes[1].prefix.to_string(), "198.18.1.3/32");
        assert_eq!(
            config.routes[2].target,
            Target::Remote {
                via: "198.19.0.2".parse().unwrap(),
                dev: "eth0".into()
            }
        );
        assert_eq!(config.routes[2].line, 8);
    }

    const VXLAN: &str = "\
interface eth0
interface cali1
vxlan dev eth0 vni 1 vni 7 port 8472 mac 02:76:c6:13:00:01
route 198.18.1.2/32 dev cali1
route 198.18.2.0/24 vxlan 198.19.0.2 mac 02:76:c6:13:00:02
route 198.18.3.0/24 vxlan 198.19.0.3 mac 02:76:c6:13:00:03 vni 7
";

    #[test]
    fn parses_vxlan_endpoint_and_routes() {
        let config = parse(VXLAN).unwrap();
        let decl = config.vxlan.as_ref().unwrap();
        assert_eq!(
            (decl.dev.as_str(), decl.vnis.clone(), decl.port),
            ("eth0", vec![1, 7], 8472)
        );
        assert_eq!(decl.mac, Some([2, 0x76, 0xc6, 0x13, 0, 1]));
        assert_eq!(
            config.routes[1].target,
            Target::Vxlan {
                vtep: "198.19.0.2".parse().unwrap(),
                mac: [2, 0x76, 0xc6, 0x13, 0, 2],
                vni: None,
                dev: "eth0".into()
            }
        );
        assert!(matches!(
            config.routes[2].target,
            Target::Vxlan { vni: Some(7), .. }
        ));
        assert_eq!(config.interface("eth0").unwrap().role, Role::Underlay);
    }

    #[test]
    fn vxlan_defaults_to_the_iana_port() {
        let config = parse("interface eth0\nvxlan dev eth0 vni 1\n").unwrap();
        assert_eq!(config.vxlan.unwrap().port, 4789);
    }

    #[test]
    fn rejects_bad_vxlan_statements_and_routes() {
        assert_error(
            "interface eth0\nvxlan dev eth0\n",
            2,
            "at least one `vni N`",
        );
        assert_error("interface eth0\nvxlan vni 1\n", 2, "needs `dev IFACE`");
        assert_error(
            "interface eth0\nvxlan dev eth0 vni 16777216\n",
            2,
            "not a VNI",
        );
        assert_error(
            "interface eth0\nvxlan dev eth0 vni 1 port 0\n",
            2,
            "not a UDP port",
        );
        assert_error(
            "interface eth0\nvxlan dev eth0 vni 1 vni 1\n",
            2,
            "given twice",
        );
        assert_error(
            "interface eth0\nvxlan dev eth0 vni 1 mac 01:00:5e:00:00:01\n",
            2,
            "multicast",
        );
        assert_error(
            "interface eth0\nvxlan dev eth0 vni 1 ttl 4\n",
            2,
            "unknown `vxlan` setting `ttl`",
        );
        assert_error(
            "interface eth0\nvxlan dev eth0 vni\n",
            2,
            "`vni` needs a value",
        );
        assert_error("vxlan dev eth0 vni 1\n", 1, "`eth0` is not declared");
        assert_error(
            "interface eth0\nvxlan dev eth0 vni 1\nvxlan dev eth0 vni 2\n",
            3,
            "already given on line 2",
        );
        assert_error(
            "interface eth0\nroute 198.18.2.0/24 vxlan 198.19.0.2 mac 02:00:00:00:00:02\n",
            2,
            "needs this host's tunnel endpoint",
        );
        let base = "interface eth0\nvxlan dev eth0 vni 1\n";
        assert_error(
            &format!("{base}route 198.18.2.0/24 vxlan 198.19.0.2\n"),
            3,
            "needs the VTEP and its MAC",
        );
        assert_error(
            &format!("{base}route 198.18.2.0/24 vxlan host-b mac 02:00:00:00:00:02\n"),
            3,
            "VTEP `host-b`",
        );
        assert_error(
            &format!("{base}route 198.18.2.0/24 vxlan 198.19.0.2 mac 02:00:00:00:02\n"),
            3,
            "not a MAC address",
        );
        assert_error(
            &format!("{base}route 198.18.2.0/24 vxlan 198.19.0.2 mac 02:00:00:00:00:02 vni x\n"),
            3,
            "not a VNI",
        );
        assert_error(
            &format!("{base}route 198.18.2.0/24 vxlan 198.19.0.2 mac 02:00:00:00:00:02 ttl 3\n"),
            3,
            "after the VTEP MAC",
        );
        assert_error(
            &format!("{base}route 198.18.2.0/24 vxlan 198.18.2.1 mac 02:00:00:00:00:02\n"),
            3,
            "inside the prefix",
        );
    }

    #[test]
    fn empty_and_comment_only_tables_are_valid() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("  # nothing\n\n").unwrap(), Config::default());
    }

    #[test]
    fn an_unused_interface_counts_as_underlay() {
        let config = parse("interface eth0\n").unwrap();
        assert_eq!(config.interfaces[0].role, Role::Underlay);
    }

    fn errors_of(text: &str) -> Vec<(usize, String)> {
        parse(text)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.line, e.message))
            .collect()
    }

    fn assert_error(text: &str, line: usize, needle: &str) {
        let errors = errors_of(text);
        assert!(
            errors.iter().any(|(l, m)| *l == line && m.contains(needle)),
            "expected an error on line {line} containing {needle:?}, got {errors:?}"
        );
    }

    #[test]
    fn rejects_bad_prefixes_with_the_line() {
        let base = "interface cali1\n";
        assert_error(
            &format!("{base}route 198.18.1.5/24 dev cali1\n"),
            2,
            "host bits set (the prefix is 198.18.1.0/24)",
        );
        assert_error(
            &format!("{base}route 198.18.1.0/33 dev cali1\n"),
            2,
            "over 32",
        );
        assert_error(
            &format!("{base}route 198.18.1/24 dev cali1\n"),
            2,
            "not an IPv4 address",
        );
        assert_error(
            &format!("{base}route 198.18.1.0/x dev cali1\n"),
            2,
            "not a prefix length",
        );
        assert_error(
            &format!("{base}route fd00::/64 dev cali1\n"),
            2,
            "not an IPv4 address",
        );
    }

    #[test]
    fn rejects_malformed_statements() {
        assert_error("interfaces eth0\n", 1, "unknown statement `interfaces`");
        assert_error("interface\n", 1, "needs a name");
        assert_error("interface eth0 attach\n", 1, "needs a kind");
        assert_error(
            "interface eth0 attach ebpf\n",
            1,
            "unknown attach kind `ebpf`",
        );
        assert_error("interface eth0 xdp\n", 1, "unexpected `xdp`");
        assert_error(
            "interface averyveryverylongname\n",
            1,
            "not a valid interface name",
        );
        assert_error("interface eth0\nroute\n", 2, "needs a prefix");
        assert_error(
            "interface eth0\nroute 198.18.2.0/24 via 198.19.0.2\n",
            2,
            "needs `dev IFACE`",
        );
        assert_error(
            "interface eth0\nroute 198.18.2.0/24 via host-b dev eth0\n",
            2,
            "next hop `host-b`",
        );
        assert_error(
            "interface eth0\nroute 198.18.2.0/24 eth0\n",
            2,
            "cannot read",
        );
        assert_error(
            "interface eth0\nroute 198.18.2.0/24 dev eth0 extra\n",
            2,
            "cannot read",
        );
        assert_error(
            "interface eth0\nroute 198.18.2.0/24 via 198.18.2.1 dev eth0\n",
            2,
            "inside the prefix",
        );
    }

    #[test]
    fn rejects_duplicates_naming_the_first_line() {
        assert_error(
            "interface eth0\ninterface eth0\n",
            2,
            "already declared on line 1",
        );
        assert_error(
            "interface c1\nroute 198.18.1.2/32 dev c1\nroute 198.18.1.2 dev c1\n",
            3,
            "already given on line 2",
        );
    }

    #[test]
    fn rejects_routes_through_undeclared_interfaces() {
        assert_error(
            "route 198.18.1.2/32 dev cali9\n",
            1,
            "`cali9` is not declared",
        );
    }

    #[test]
    fn reports_every_problem_in_line_order() {
        let errors =
            errors_of("bogus\ninterface eth0\nroute 1.2.3.4/40 dev eth0\nroute 5.6.7.8 dev nope\n");
        let lines: Vec<usize> = errors.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 3, 4]);
    }

    #[test]
    fn the_error_message_names_file_and_line() {
        let dir = std::env::temp_dir().join(format!("dp-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.conf");
        std::fs::write(&path, "interface eth0\nroute 10.0.0.1/8 dev eth0\n").unwrap();
        let message = load(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            message.contains("routes.conf:2: 10.0.0.1/8 has host bits set"),
            "{message}"
        );
    }

    #[test]
    fn prefix_contains_and_default_route() {
        let p: Ipv4Prefix = "198.18.0.0/15".parse().unwrap();
        assert!(p.contains("198.19.255.255".parse().unwrap()));
        assert!(!p.contains("198.20.0.0".parse().unwrap()));
        let all: Ipv4Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert_eq!("1.2.3.4".parse::<Ipv4Prefix>().unwrap().prefix_len(), 32);
    }
}
