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
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use super::{LineError, render_line_errors};

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

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", render_line_errors(.path, .errors))]
    Invalid {
        path: String,
        errors: Vec<LineError>,
    },
}

/// Reads and parses a services file.
pub fn load(path: &Path) -> Result<Services, ServicesError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ServicesError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|errors| ServicesError::Invalid {
        path: shown,
        errors,
    })
}

/// Parses a services file; reports every bad line.
pub fn parse(text: &str) -> Result<Services, Vec<LineError>> {
    let mut services = Services::default();
    let mut errors = Vec::new();
    let mut fronts: BTreeMap<(SocketAddrV4, Transport), usize> = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let words: Vec<&str> = raw
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if words.is_empty() {
            continue;
        }
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
    if errors.is_empty() {
        Ok(services)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
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
