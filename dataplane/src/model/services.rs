//! Services: the model and its file format (beside the route table and the policy).
//!
//! ```text
//! # service NAME VIP:PORT tcp|udp BACKEND:PORT [BACKEND:PORT ...]
//! service web 10.96.0.10:80 tcp 198.18.1.3:8080 198.18.2.2:8080
//! service dns 10.96.0.11:53 udp 198.18.2.3:5353
//! ```
//!
//! A workload's connection to `VIP:PORT` over the protocol goes to one of the backends, drawn
//! at random for each new connection. Names are unique; so is each (VIP, port, protocol); a
//! service has at least one backend and names each once; a backend address is no service's
//! virtual address (a connection is translated once).
//!
//! A service's virtual address lies in the host's service range ([`DEFAULT_SERVICE_RANGE`]
//! unless the operator gives another, as Kubernetes' `--service-cluster-ip-range`): the
//! service lookup runs before routing, so a service on any other address (a workload's, a
//! host's, 8.8.8.8) would take that destination over for every workload ([`in_range`]).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use super::{FileError, Ipv4Prefix, LineError, all_or_errors, load_file, statements};

/// The service range when the operator names none: Kubernetes' (kubeadm's) default.
pub const DEFAULT_SERVICE_RANGE: &str = "10.96.0.0/12";

/// A service's transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// One service: a virtual address and port, and its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub front: SocketAddrV4,
    pub transport: Transport,
    pub backends: Vec<SocketAddrV4>,
    pub line: usize,
}

impl Service {
    /// What identifies the service to a packet: address, port, protocol.
    pub fn key(&self) -> (SocketAddrV4, Transport) {
        (self.front, self.transport)
    }
}

/// A host's services, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Services {
    pub services: BTreeMap<String, Service>,
}

impl Services {
    /// The backends a connection to `front` over `transport` may reach (empty: no service).
    pub fn backends_of(&self, front: SocketAddrV4, transport: Transport) -> &[SocketAddrV4] {
        self.services
            .values()
            .find(|s| s.key() == (front, transport))
            .map_or(&[], |s| &s.backends)
    }

    pub fn backend_count(&self) -> usize {
        self.services.values().map(|s| s.backends.len()).sum()
    }
}

/// Cluster mode: the services every host takes from the store, one record each under
/// `<prefix>/services/<name>`, JSON: `{"front": "VIP:PORT", "protocol": "tcp"|"udp",
/// "backends": ["ADDR:PORT", ...]}`.
pub fn store_dir(store_prefix: &str) -> String {
    format!("{}/services/", store_prefix.trim_end_matches('/'))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceRecord {
    front: SocketAddrV4,
    protocol: String,
    backends: Vec<SocketAddrV4>,
}

/// Why a service record of the store was refused, as the log and the metric
/// (`dataplane_cluster_records_refused_total{reason}`) name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordRefusal {
    /// Not the JSON of a service, or a service the file format would refuse too.
    Malformed(String),
    /// A backend outside the cluster's workload range: a record that would send workloads'
    /// connections out of the cluster.
    BackendOutsideCluster(SocketAddrV4),
    /// Its name or its address, port and protocol are another service's already (the file's
    /// win, then the record with the first key).
    Conflict(String),
    /// Its virtual address is outside the service range: it would take over a destination
    /// that is not a service's.
    FrontOutsideRange(SocketAddrV4),
}

impl RecordRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            RecordRefusal::Malformed(_) => "service_malformed",
            RecordRefusal::BackendOutsideCluster(_) => "service_backend_outside_cluster",
            RecordRefusal::Conflict(_) => "service_conflict",
            RecordRefusal::FrontOutsideRange(_) => "service_front_outside_range",
        }
    }
}

impl std::fmt::Display for RecordRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordRefusal::Malformed(why) => write!(f, "not a service record: {why}"),
            RecordRefusal::BackendOutsideCluster(b) => {
                write!(f, "backend {b} is outside the cluster's workloads")
            }
            RecordRefusal::Conflict(why) => f.write_str(why),
            RecordRefusal::FrontOutsideRange(front) => {
                write!(f, "virtual address {front} is outside the service range")
            }
        }
    }
}

/// What the store's service records must keep to, besides the file format's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordBounds {
    /// The cluster's workload range: every backend lies in it.
    pub cluster: Ipv4Prefix,
    /// The service range: every virtual address lies in it.
    pub services: Ipv4Prefix,
}

/// The file's services and the store's service `records` (key -> value) together: each
/// record checked as the file format checks a line, within `bounds`, and against every
/// service taken before it. Returns the services and each refused record's key with why.
pub fn with_records(
    file: &Services,
    records: &BTreeMap<String, Vec<u8>>,
    store_prefix: &str,
    bounds: RecordBounds,
) -> (Services, Vec<(String, RecordRefusal)>) {
    let dir = store_dir(store_prefix);
    let mut all = file.clone();
    let mut refused = Vec::new();
    for (key, value) in records {
        let name = key.strip_prefix(&dir).unwrap_or(key);
        match from_record(name, value, bounds).and_then(|s| all.admit(s)) {
            Ok(()) => {}
            Err(why) => refused.push((key.clone(), why)),
        }
    }
    (all, refused)
}

/// The service a store record describes.
fn from_record(name: &str, value: &[u8], bounds: RecordBounds) -> Result<Service, RecordRefusal> {
    let record: ServiceRecord =
        serde_json::from_slice(value).map_err(|e| RecordRefusal::Malformed(e.to_string()))?;
    // The file format's own checks, on the record written as a line of it.
    let backends: Vec<String> = record.backends.iter().map(ToString::to_string).collect();
    let line = format!(
        "service {name} {} {} {}",
        record.front,
        record.protocol,
        backends.join(" ")
    );
    let words: Vec<&str> = line.split_whitespace().collect();
    let service = parse_service(&words, 0).map_err(RecordRefusal::Malformed)?;
    if !bounds.services.contains(*service.front.ip()) {
        return Err(RecordRefusal::FrontOutsideRange(service.front));
    }
    if let Some(outside) = service
        .backends
        .iter()
        .find(|b| !bounds.cluster.contains(*b.ip()))
    {
        return Err(RecordRefusal::BackendOutsideCluster(*outside));
    }
    Ok(service)
}

/// Checks that every service's virtual address lies in the service range `range`; the
/// services that do not are reported on their lines.
pub fn in_range(services: &Services, range: Ipv4Prefix) -> Result<(), Vec<LineError>> {
    let errors: Vec<LineError> = services
        .services
        .values()
        .filter(|s| !range.contains(*s.front.ip()))
        .map(|s| LineError {
            line: s.line,
            message: format!(
                "virtual address {} is outside the service range {range} (--service-cidr): a service there would take over a destination that is not a service's",
                s.front.ip()
            ),
        })
        .collect();
    all_or_errors((), errors)
}

impl Services {
    /// Adds `service` if no service has its name or its address, port and protocol, and no
    /// connection would be translated twice (a backend that is a service's address, either
    /// way round).
    fn admit(&mut self, service: Service) -> Result<(), RecordRefusal> {
        if self.services.contains_key(&service.name) {
            return Err(RecordRefusal::Conflict(format!(
                "service `{}` exists already",
                service.name
            )));
        }
        if let Some(other) = self.services.values().find(|s| s.key() == service.key()) {
            return Err(RecordRefusal::Conflict(format!(
                "{} {} is service `{}` already",
                service.front,
                service.transport.name(),
                other.name
            )));
        }
        let vips: BTreeSet<Ipv4Addr> = self.services.values().map(|s| *s.front.ip()).collect();
        let loops = service.backends.iter().any(|b| vips.contains(b.ip()))
            || self
                .services
                .values()
                .flat_map(|s| &s.backends)
                .any(|b| b.ip() == service.front.ip());
        if loops {
            return Err(RecordRefusal::Conflict(
                "a backend would be a service's virtual address (a connection is translated once)"
                    .into(),
            ));
        }
        self.services.insert(service.name.clone(), service);
        Ok(())
    }
}

/// Reads and parses a services file.
pub fn load(path: &Path) -> Result<Services, FileError> {
    load_file(path, parse)
}

/// Parses a services file; reports every bad line.
pub fn parse(text: &str) -> Result<Services, Vec<LineError>> {
    let mut services = Services::default();
    let mut errors = Vec::new();
    let mut fronts: BTreeMap<(SocketAddrV4, Transport), usize> = BTreeMap::new();
    for (line, words) in statements(text) {
        let result = parse_service(&words, line).and_then(|service| {
            if let Some(earlier) = services.services.get(&service.name) {
                return Err(format!(
                    "service `{}` is already declared on line {}",
                    service.name, earlier.line
                ));
            }
            if let Some(earlier) = fronts.insert(service.key(), line) {
                return Err(format!(
                    "{} {} is already a service, on line {earlier}",
                    service.front,
                    service.transport.name()
                ));
            }
            services.services.insert(service.name.clone(), service);
            Ok(())
        });
        if let Err(message) = result {
            errors.push(LineError { line, message });
        }
    }
    let vips: BTreeSet<Ipv4Addr> = fronts.keys().map(|(front, _)| *front.ip()).collect();
    for service in services.services.values() {
        if let Some(backend) = service.backends.iter().find(|b| vips.contains(b.ip())) {
            errors.push(LineError {
                line: service.line,
                message: format!(
                    "backend {backend} is a service's virtual address (a connection is translated once)"
                ),
            });
        }
    }
    all_or_errors(services, errors)
}

/// `service NAME VIP:PORT tcp|udp BACKEND:PORT...`
fn parse_service(words: &[&str], line: usize) -> Result<Service, String> {
    let usage = "expected `service NAME VIP:PORT tcp|udp BACKEND:PORT [BACKEND:PORT ...]`";
    if words[0] != "service" {
        return Err(format!("unknown statement `{}` ({usage})", words[0]));
    }
    if words.len() < 5 {
        return Err(format!("{usage}: a service needs at least one backend"));
    }
    let name = words[1];
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/'))
    {
        return Err(format!(
            "`{name}` is not a service name (letters, digits, `-`, `.`, `_`, `/`)"
        ));
    }
    let front = parse_endpoint(words[2], "virtual address")?;
    let transport = match words[3] {
        "tcp" => Transport::Tcp,
        "udp" => Transport::Udp,
        other => return Err(format!("`{other}` is not a protocol (tcp or udp)")),
    };
    let mut backends = Vec::new();
    for word in &words[4..] {
        let backend = parse_endpoint(word, "backend")?;
        if backends.contains(&backend) {
            return Err(format!("backend {backend} is named twice"));
        }
        backends.push(backend);
    }
    Ok(Service {
        name: name.to_string(),
        front,
        transport,
        backends,
        line,
    })
}

/// `ADDR:PORT`, port 1-65535.
fn parse_endpoint(word: &str, what: &str) -> Result<SocketAddrV4, String> {
    let endpoint: SocketAddrV4 = word
        .parse()
        .map_err(|_| format!("`{word}` is not a {what} (IPv4 ADDR:PORT)"))?;
    if endpoint.port() == 0 {
        return Err(format!("{what} `{word}`: port 0 is no port"));
    }
    if endpoint.ip().is_unspecified()
        || endpoint.ip().is_broadcast()
        || endpoint.ip().is_multicast()
    {
        return Err(format!("{what} `{word}`: not a unicast address"));
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# two services
service web 10.96.0.10:80 tcp 198.18.1.3:8080 198.18.2.2:8080
service dns 10.96.0.11:53 udp 198.18.2.3:5353   # one backend
";

    #[test]
    fn parses_services_and_their_backends() {
        let s = parse(FILE).unwrap();
        assert_eq!(s.services.len(), 2);
        let web = &s.services["web"];
        assert_eq!(web.front, "10.96.0.10:80".parse().unwrap());
        assert_eq!(web.transport, Transport::Tcp);
        assert_eq!(web.line, 2);
        assert_eq!(
            s.backends_of("10.96.0.11:53".parse().unwrap(), Transport::Udp),
            &["198.18.2.3:5353".parse::<SocketAddrV4>().unwrap()]
        );
        assert!(
            s.backends_of("10.96.0.11:53".parse().unwrap(), Transport::Tcp)
                .is_empty()
        );
        assert_eq!(s.backend_count(), 3);
    }

    #[test]
    fn the_same_address_and_port_may_serve_tcp_and_udp() {
        let s = parse(
            "service a 10.96.0.10:53 tcp 198.18.1.3:53\nservice b 10.96.0.10:53 udp 198.18.1.3:53\n",
        )
        .unwrap();
        assert_eq!(s.services.len(), 2);
    }

    #[test]
    fn store_records_join_the_file_unless_malformed_out_of_bounds_or_in_conflict() {
        let file = parse(FILE).unwrap();
        let bounds = RecordBounds {
            cluster: "198.18.0.0/16".parse().unwrap(),
            services: DEFAULT_SERVICE_RANGE.parse().unwrap(),
        };
        let key = |name: &str| format!("/ebpf-dataplane/services/{name}");
        let records: BTreeMap<String, Vec<u8>> = [
            (
                "echo",
                r#"{"front":"10.96.0.20:80","protocol":"tcp","backends":["198.18.2.2:8080"]}"#,
            ),
            (
                "exfil",
                r#"{"front":"10.96.0.21:80","protocol":"tcp","backends":["10.9.9.9:80"]}"#,
            ),
            ("broken", "{nope"),
            (
                "hijack",
                r#"{"front":"198.18.1.3:8080","protocol":"tcp","backends":["198.18.2.2:8080"]}"#,
            ),
            (
                "extra-field",
                r#"{"front":"10.96.0.22:80","protocol":"tcp","backends":["198.18.2.2:1"],"x":1}"#,
            ),
            (
                "no-backend",
                r#"{"front":"10.96.0.23:80","protocol":"tcp","backends":[]}"#,
            ),
            (
                "same-front",
                r#"{"front":"10.96.0.10:80","protocol":"tcp","backends":["198.18.2.2:1"]}"#,
            ),
            (
                "web",
                r#"{"front":"10.96.0.30:80","protocol":"tcp","backends":["198.18.2.2:1"]}"#,
            ),
        ]
        .into_iter()
        .map(|(name, value)| (key(name), value.as_bytes().to_vec()))
        .collect();
        let (all, refused) = with_records(&file, &records, "/ebpf-dataplane", bounds);
        assert_eq!(all.services.len(), 3, "the file's two and `echo`");
        assert_eq!(
            all.backends_of("10.96.0.20:80".parse().unwrap(), Transport::Tcp),
            &["198.18.2.2:8080".parse::<SocketAddrV4>().unwrap()]
        );
        let reasons: BTreeMap<String, &str> = refused
            .iter()
            .map(|(k, why)| (k.clone(), why.reason()))
            .collect();
        assert_eq!(
            reasons,
            BTreeMap::from([
                (key("broken"), "service_malformed"),
                (key("exfil"), "service_backend_outside_cluster"),
                (key("extra-field"), "service_malformed"),
                (key("hijack"), "service_front_outside_range"),
                (key("no-backend"), "service_malformed"),
                (key("same-front"), "service_conflict"),
                (key("web"), "service_conflict"),
            ])
        );
    }

    #[test]
    fn a_service_outside_the_service_range_is_refused_on_its_line() {
        let range: Ipv4Prefix = DEFAULT_SERVICE_RANGE.parse().unwrap();
        assert_eq!(in_range(&parse(FILE).unwrap(), range), Ok(()));
        // A workload's own address and port, and a public resolver: both would be taken over.
        let text = "\
service web 10.96.0.10:80 tcp 198.18.1.5:8080
service hijack 198.18.1.3:8080 tcp 198.18.1.4:8080
service dns 8.8.8.8:53 udp 198.18.1.4:53
";
        let errors = in_range(&parse(text).unwrap(), range).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3]);
        assert!(
            errors[0]
                .message
                .contains("outside the service range 10.96.0.0/12")
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = "\
service web 10.96.0.10:80 tcp 198.18.1.3:8080
service web 10.96.0.12:80 tcp 198.18.1.3:8080
service other 10.96.0.10:80 tcp 198.18.1.4:8080
service none 10.96.0.13:80 tcp
service proto 10.96.0.14:80 sctp 198.18.1.3:1
service port 10.96.0.15:0 tcp 198.18.1.3:1
service twice 10.96.0.16:80 tcp 198.18.1.3:1 198.18.1.3:1
service loop 10.96.0.17:80 tcp 10.96.0.10:80
backend 198.18.1.3:1
service bad! 10.96.0.18:80 tcp 198.18.1.3:1
service addr 10.96.0:80 tcp 198.18.1.3:1
";
        let errors = parse(text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "{errors:?}");
        assert!(errors[0].message.contains("already declared on line 1"));
        assert!(errors[1].message.contains("already a service, on line 1"));
        assert!(errors[2].message.contains("at least one backend"));
        assert!(errors[3].message.contains("`sctp` is not a protocol"));
        assert!(errors[4].message.contains("port 0"));
        assert!(errors[5].message.contains("named twice"));
        assert!(errors[6].message.contains("translated once"));
        assert!(errors[7].message.contains("unknown statement `backend`"));
        assert!(errors[8].message.contains("not a service name"));
        assert!(errors[9].message.contains("not a virtual address"));
    }
}
