//! What the CNI plugin and the loader of a host tell each other, through a directory of the
//! host's under /run/ebpf-dataplane, named by the network namespace's cookie (unique for the
//! machine's life, where an inode number is reused by a later namespace, which must never
//! find an earlier one's workloads):
//!
//! - `workloads/CONTAINER-IFNAME.json`: one record per workload the plugin wired, written
//!   (atomically) before it asks the loader to take it and removed on DEL. The directory is
//!   the truth the loader converges to, so a loader that was down while containers came and
//!   went finds them all at start.
//! - `loader.sock`: the running loader's socket. The plugin sends one [`Request`] line and
//!   waits for the [`Reply`] line: ADD returns once the workload is attached, routed and
//!   policed.
//! - `host.json` ([`HostFacts`]): what the loader knows that the plugin needs (the prefix the
//!   cluster gave this host, for IPAM; the MTU the encapsulation leaves).
use std::{
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use super::{STATE_ROOT, netns};

/// One workload wired by the CNI plugin.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkloadRecord {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME: the interface's name inside the container.
    pub ifname: String,
    /// CNI_NETNS: the container's network namespace (a path).
    pub netns: String,
    /// The host end of the veth: the interface the loader attaches to.
    pub host_ifname: String,
    pub addr: Ipv4Addr,
    /// The prefix the loader published when ADD ran: the range an `ipam` section that names
    /// none was given, kept so that DEL releases the address whatever the loader's state by
    /// then. (A configuration that names its own range does not need it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_subnet: Option<String>,
}

impl WorkloadRecord {
    /// The record's file name: CNI names an attachment by container and interface, and the
    /// spec allows container ids of hundreds of characters, longer than a file name may be.
    /// A digest of the pair (FNV-1a, 64 bits) is short whatever the id, and never the same
    /// for ("a-b", "c") and ("a", "b-c"); the record inside names its pair, checked on every
    /// read ([`HostDir::read_record`]), so a digest collision is refused, never taken.
    pub fn file_name(container_id: &str, ifname: &str) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in container_id.bytes().chain([0]).chain(ifname.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}.json")
    }

    /// The file name records had before the digest (`{container}-{ifname}.json`): read and
    /// removed still, so that a DEL after an upgrade finds the record an older ADD wrote.
    fn legacy_file_name(container_id: &str, ifname: &str) -> String {
        format!("{container_id}-{ifname}.json")
    }

    /// Whether this is the record of `container_id`'s `ifname`.
    pub fn is_of(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}

/// What the loader publishes for the plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostFacts {
    /// The workload prefix the cluster gave this host (cluster mode only): the plugin's IPAM
    /// range when the network configuration names none (`A.B.C.D/N`).
    pub subnet: Option<String>,
    /// The MTU workload interfaces need (the underlay's less the VXLAN overhead, when the
    /// host encapsulates).
    pub mtu: Option<u32>,
}

/// A request to the loader, one JSON line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Take the records as they are now; reply once the dataplane holds them.
    Sync,
    /// Is this workload attached and routed?
    Check { host_ifname: String, addr: Ipv4Addr },
}

/// The loader's answer: `error` says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a host's plugin and loader meet.
#[derive(Clone, Debug)]
pub struct HostDir {
    root: PathBuf,
}

impl HostDir {
    /// The directory of the current network namespace's host.
    pub fn current() -> io::Result<Self> {
        Ok(Self {
            root: PathBuf::from(STATE_ROOT).join(format!("netns-{}", netns::netns_cookie()?)),
        })
    }

    /// The directory itself (removed with everything in it by [`Self::remove`]).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes what the loader published (its facts, its socket), and the directory too if no
    /// workload record is left in it.
    pub fn remove_loaders_files(&self) -> io::Result<()> {
        for path in [self.facts_path(), self.socket()] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // Fails, as it should, while records are there.
        let _ = std::fs::remove_dir(self.records());
        let _ = std::fs::remove_dir(&self.root);
        Ok(())
    }

    /// Removes the directory: the host is gone for good.
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn records(&self) -> PathBuf {
        self.root.join("workloads")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("loader.sock")
    }

    pub fn facts_path(&self) -> PathBuf {
        self.root.join("host.json")
    }

    /// Writes `record` atomically (the loader never reads half of one). Another pair's
    /// record under the same name (a digest collision) is an error, never overwritten.
    pub fn write_record(&self, record: &WorkloadRecord) -> io::Result<()> {
        let dir = self.records();
        std::fs::create_dir_all(&dir)?;
        let name = WorkloadRecord::file_name(&record.container_id, &record.ifname);
        if let Some(other) = read_record_file(&dir.join(&name))?
            && !other.is_of(&record.container_id, &record.ifname)
        {
            return Err(collision(&name, &other));
        }
        write_atomically(&dir.join(name), &serde_json::to_vec_pretty(record)?)
    }

    /// The record of a container's interface, if there is one (under its name, or under the
    /// name older releases gave it).
    pub fn read_record(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> io::Result<Option<WorkloadRecord>> {
        for path in self.record_paths(container_id, ifname) {
            match read_record_file(&path)? {
                Some(record) if record.is_of(container_id, ifname) => return Ok(Some(record)),
                Some(other) => {
                    return Err(collision(&path.display().to_string(), &other));
                }
                None => {}
            }
        }
        Ok(None)
    }

    /// Where the record of a container's interface may be: its name, then the legacy one
    /// (only when that is a name a file may have).
    fn record_paths(&self, container_id: &str, ifname: &str) -> Vec<PathBuf> {
        let mut paths = vec![
            self.records()
                .join(WorkloadRecord::file_name(container_id, ifname)),
        ];
        let legacy = WorkloadRecord::legacy_file_name(container_id, ifname);
        if legacy.len() <= 255 && !legacy.contains('/') {
            paths.push(self.records().join(legacy));
        }
        paths
    }

    /// When the records directory last changed (a record written, replaced or removed);
    /// None if it does not exist.
    pub fn records_changed_at(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.records())
            .and_then(|m| m.modified())
            .ok()
    }

    /// Removes a record; one that is not there is fine (DEL is idempotent). Another pair's
    /// record is left alone.
    pub fn remove_record(&self, container_id: &str, ifname: &str) -> io::Result<()> {
        for path in self.record_paths(container_id, ifname) {
            match read_record_file(&path) {
                Ok(Some(record)) if !record.is_of(container_id, ifname) => continue,
                // Gone, or not a record at all: removed (DEL must not stick on junk).
                Ok(_) | Err(_) => {}
            }
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Every record, sorted by file name, and a message for each file that is not one (left
    /// in place for an operator to look at).
    pub fn read_records(&self) -> (Vec<WorkloadRecord>, Vec<String>) {
        let mut records = Vec::new();
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.records()) else {
            return (records, problems);
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            match read_record_file(&path) {
                Ok(Some(record)) => records.push(record),
                // Gone between listing and reading: DEL ran.
                Ok(None) => {}
                Err(e) => problems.push(format!("{}: not a workload record: {e}", path.display())),
            }
        }
        (records, problems)
    }

    pub fn write_facts(&self, facts: &HostFacts) -> io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        write_atomically(&self.facts_path(), &serde_json::to_vec_pretty(facts)?)
    }

    /// The loader's facts; None if no loader has published any.
    pub fn read_facts(&self) -> io::Result<Option<HostFacts>> {
        match std::fs::read(self.facts_path()) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The largest record read: a record is a few hundred bytes.
const MAX_RECORD: u64 = 64 * 1024;

/// The record in the file at `path`; None if there is no such file.
fn read_record_file(path: &Path) -> io::Result<Option<WorkloadRecord>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RECORD + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RECORD {
        return Err(io::Error::other(format!(
            "{}: longer than a record may be ({MAX_RECORD} bytes)",
            path.display()
        )));
    }
    Ok(Some(serde_json::from_slice(&bytes)?))
}

fn collision(name: &str, other: &WorkloadRecord) -> io::Error {
    io::Error::other(format!(
        "record {name} is container {}'s {} (the names' digests collide): not taken",
        other.container_id, other.ifname
    ))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_single_json_lines() {
        let check = Request::Check {
            host_ifname: "dp1".into(),
            addr: Ipv4Addr::new(198, 18, 1, 2),
        };
        let line = serde_json::to_string(&check).unwrap();
        assert_eq!(
            line,
            r#"{"op":"check","host_ifname":"dp1","addr":"198.18.1.2"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), check);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"sync"}"#).unwrap(),
            Request::Sync
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"launch"}"#).is_err());
    }

    #[test]
    fn records_round_trip_and_bad_files_are_reported_not_taken() {
        let root = std::env::temp_dir().join(format!("workloads-test-{}", std::process::id()));
        let dir = HostDir { root: root.clone() };
        let record = WorkloadRecord {
            container_id: "abc".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            host_ifname: "dpabc".into(),
            addr: Ipv4Addr::new(198, 18, 1, 5),
            ipam_subnet: None,
        };
        dir.write_record(&record).unwrap();
        std::fs::write(dir.records().join("junk.json"), "{").unwrap();
        let (records, problems) = dir.read_records();
        assert_eq!(records, vec![record.clone()]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("junk.json"), "{problems:?}");
        assert_eq!(dir.read_record("abc", "eth0").unwrap(), Some(record));
        dir.remove_record("abc", "eth0").unwrap();
        dir.remove_record("abc", "eth0").unwrap();
        assert_eq!(dir.read_record("abc", "eth0").unwrap(), None);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn record_names_are_unambiguous_bounded_and_checked() {
        let root = std::env::temp_dir().join(format!("workloads-names-{}", std::process::id()));
        let dir = HostDir { root: root.clone() };
        let record = |id: &str, ifname: &str, host_ifname: &str| WorkloadRecord {
            container_id: id.into(),
            ifname: ifname.into(),
            netns: "/run/netns/x".into(),
            host_ifname: host_ifname.into(),
            addr: Ipv4Addr::new(198, 18, 1, 5),
            ipam_subnet: Some("198.18.1.0/24".into()),
        };
        // ("a-b", "c") and ("a", "b-c") shared a file name once.
        let (ab_c, a_bc) = (record("a-b", "c", "dp1"), record("a", "b-c", "dp2"));
        dir.write_record(&ab_c).unwrap();
        dir.write_record(&a_bc).unwrap();
        assert_eq!(dir.read_record("a-b", "c").unwrap(), Some(ab_c));
        assert_eq!(dir.read_record("a", "b-c").unwrap(), Some(a_bc.clone()));
        // A container id as long as the spec allows still makes a short name.
        let long = "f".repeat(1000);
        assert_eq!(WorkloadRecord::file_name(&long, "eth0").len(), 21);
        let long_record = record(&long, "eth0", "dp3");
        dir.write_record(&long_record).unwrap();
        assert_eq!(dir.read_record(&long, "eth0").unwrap(), Some(long_record));
        dir.remove_record(&long, "eth0").unwrap();
        assert_eq!(dir.read_record(&long, "eth0").unwrap(), None);
        // A file under a pair's name holding another pair's record (a collision) is refused
        // on read and write, and left alone by the pair's DEL.
        let name = dir.records().join(WorkloadRecord::file_name("x", "eth0"));
        std::fs::write(&name, serde_json::to_vec(&a_bc).unwrap()).unwrap();
        assert!(dir.read_record("x", "eth0").is_err());
        assert!(dir.write_record(&record("x", "eth0", "dp4")).is_err());
        dir.remove_record("x", "eth0").unwrap();
        assert!(name.exists());
        // A record an older release wrote under `{id}-{ifname}.json` is found and removed.
        let old = record("old", "eth0", "dp5");
        std::fs::write(
            dir.records().join("old-eth0.json"),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        assert_eq!(dir.read_record("old", "eth0").unwrap(), Some(old));
        dir.remove_record("old", "eth0").unwrap();
        assert!(!dir.records().join("old-eth0.json").exists());
        std::fs::remove_dir_all(root).unwrap();
    }
}
