//! The route table file: which interfaces the dataplane attaches to, which prefixes are local
//! workloads and which are reached through another host. See README.md, "Route table".
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

/// An IPv4 prefix with no bits set past its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Prefix {
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, String> {
        if len > 32 {
            return Err(format!("prefix length {len} is over 32"));
        }
        let masked = Ipv4Addr::from(u32::from(addr) & Self::mask(len));
        if masked != addr {
            return Err(format!(
                "{addr}/{len} has host bits set (the prefix is {masked}/{len})"
            ));
        }
        Ok(Self { addr, len })
    }

    fn mask(len: u8) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - len) }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == u32::from(self.addr)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = String;

    /// `A.B.C.D/LEN`, or a bare address meaning `/32`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => {
                let len = len
                    .parse::<u8>()
                    .map_err(|_| format!("`{len}` in `{s}` is not a prefix length (0-32)"))?;
                (addr, len)
            }
            None => (s, 32),
        };
        let addr = addr
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("`{addr}` in `{s}` is not an IPv4 address"))?;
        Self::new(addr, len)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

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
    /// GSO (see README, "Attach kinds", for the measurement behind it).
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
}

impl Target {
    pub fn dev(&self) -> &str {
        match self {
            Target::Local { dev } | Target::Remote { dev, .. } => dev,
        }
    }
}

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
}

impl Config {
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// One problem in the file, at a 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
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
    let lines: Vec<String> = errors
        .iter()
        .map(|e| format!("{path}:{}: {}", e.line, e.message))
        .collect();
    format!(
        "invalid route table ({} problem(s)):\n{}",
        errors.len(),
        lines.join("\n")
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

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("");
        let words: Vec<&str> = content.split_whitespace().collect();
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
            other => Err(format!(
                "unknown statement `{other}` (expected `interface` or `route`)"
            )),
        };
        if let Err(message) = result {
            errors.push(LineError { line, message });
        }
    }

    for route in &routes {
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
                .any(|r| matches!(&r.target, Target::Remote { dev, .. } if *dev == name));
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
    Ok(Config { interfaces, routes })
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
    let usage = "expected `route PREFIX dev IFACE` or `route PREFIX via ADDRESS dev IFACE`";
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
        [_, "via", _] => return Err(format!("a `via` route needs `dev IFACE`: {usage}")),
        [] => return Err(format!("`route` needs a prefix: {usage}")),
        _ => return Err(format!("cannot read `route {}`: {usage}", args.join(" "))),
    };
    let prefix: Ipv4Prefix = prefix.parse()?;
    if let Target::Remote { via, .. } = &target
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
