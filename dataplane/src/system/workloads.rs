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
}

impl WorkloadRecord {
    /// The record's file name: CNI names an attachment by container and interface.
    pub fn file_name(container_id: &str, ifname: &str) -> String {
        format!("{container_id}-{ifname}.json")
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

    /// Writes `record` atomically (the loader never reads half of one).
    pub fn write_record(&self, record: &WorkloadRecord) -> io::Result<()> {
        let dir = self.records();
        std::fs::create_dir_all(&dir)?;
        let name = WorkloadRecord::file_name(&record.container_id, &record.ifname);
        write_atomically(&dir.join(name), &serde_json::to_vec_pretty(record)?)
    }

    /// The record of a container's interface, if there is one.
    pub fn read_record(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> io::Result<Option<WorkloadRecord>> {
        let path = self
            .records()
            .join(WorkloadRecord::file_name(container_id, ifname));
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// When the records directory last changed (a record written, replaced or removed);
    /// None if it does not exist.
    pub fn records_changed_at(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.records())
            .and_then(|m| m.modified())
            .ok()
    }

    /// Removes a record; one that is not there is fine (DEL is idempotent).
    pub fn remove_record(&self, container_id: &str, ifname: &str) -> io::Result<()> {
        let path = self
            .records()
            .join(WorkloadRecord::file_name(container_id, ifname));
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
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
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<WorkloadRecord>(&b).map_err(|e| e.to_string())
                }) {
                Ok(record) => records.push(record),
                // Gone between listing and reading: DEL ran.
                Err(_) if !path.exists() => {}
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
}
