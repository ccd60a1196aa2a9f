//! cnfbox's own record of a container, beside libcontainer's `state.json`.
//!
//! libcontainer's state points at the staged bundle (it must, for `exec`);
//! what the user gave, and what `state`/`list` report, is kept here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const META_FILE: &str = "cnfbox.json";
/// Name of the staged bundle directory inside a container's state directory.
pub const STAGED_BUNDLE: &str = "bundle";
/// Directory under the state root where specs are staged during `create`
/// (`.staging/<id>.<pid>/`).
pub const STAGING: &str = ".staging";

/// Errors reading or writing the record.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What cnfbox remembers about a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerMeta {
    /// The bundle directory the user passed to `create`.
    pub bundle: PathBuf,
    /// The absolute rootfs path from the user's spec.
    pub rootfs: PathBuf,
    /// The cgroup path libcontainer was given.
    pub cgroup_path: PathBuf,
    /// Whether the systemd driver manages the cgroup.
    pub systemd: bool,
    /// The pod (sandbox) the container belongs to, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The host ID range of the pod's user namespace, when it has one:
    /// what `cnfbox ranges repair` rebuilds the ledger from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<idmap::PodMapping>,
    /// Whether this container is its pod's sandbox (owns range and namespaces).
    #[serde(default)]
    pub sandbox: bool,
    /// Where the id-mapped view of the rootfs is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_view: Option<PathBuf>,
    /// Id-mapped views of the container's volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_views: Vec<PathBuf>,
    /// NUMA placement: the node and where it came from (`numa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<crate::numa::Record>,
    /// Why no NUMA node was bound although inputs named nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_unbound: Option<String>,
    /// Hugepage limits, the cgroup2 cgroup and hugetlbfs cnfbox set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<crate::hugepages::Record>,
    /// The pod's secondary interfaces (sandbox only) and where they go back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::net::PodNetwork>,
    /// The device nodes cnfbox made for `linux.devices` and their tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<crate::devices::Record>,
    /// The numbers of libcgroups' default set that cnfbox withholds and
    /// `[devices] allow` gave this container at create
    /// (`devices::withheld`); an update denies the others again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_devices: Vec<crate::devices::Dev>,
    /// The init's start time (`host::init`), read at create: a pid that
    /// names a process started at another time is not this container's
    /// init but one that reused the pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_start: Option<u64>,
}

/// Whether the container whose state lives in `container_dir` has a record.
pub fn exists(container_dir: &Path) -> bool {
    container_dir.join(META_FILE).is_file()
}

impl ContainerMeta {
    /// Writes the record atomically (temp file + rename) into `container_dir`.
    pub fn save(&self, container_dir: &Path) -> Result<(), MetaError> {
        let path = container_dir.join(META_FILE);
        let tmp = container_dir.join(format!("{META_FILE}.tmp"));
        let wrap = |source| MetaError::Write {
            path: path.clone(),
            source,
        };
        let body = serde_json::to_vec(self).map_err(|e| wrap(std::io::Error::other(e)))?;
        let mut file = fs::File::create(&tmp).map_err(wrap)?;
        file.write_all(&body).map_err(wrap)?;
        fs::rename(&tmp, &path).map_err(wrap)?;
        Ok(())
    }

    /// Reads the record of the container whose state lives in `container_dir`.
    pub fn load(container_dir: &Path) -> Result<Self, MetaError> {
        let path = container_dir.join(META_FILE);
        let raw = fs::read(&path).map_err(|source| MetaError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&raw).map_err(|source| MetaError::Parse { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let meta = ContainerMeta {
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            cgroup_path: "/cnfbox/x".into(),
            systemd: false,
            pod: Some("p".into()),
            mapping: Some(idmap::PodMapping::symmetric(
                idmap::Mapping::new(0, 100_000, 65_536).unwrap(),
            )),
            sandbox: true,
            rootfs_view: Some("/run/cnfbox/.rootfs/x".into()),
            volume_views: vec!["/run/cnfbox-mnt/x/volumes/c/0".into()],
            numa: Some(crate::numa::Record {
                node: 0,
                cpus: "1".into(),
                mems: "0".into(),
                from: "annotation cnfbox.io/numa-node".into(),
            }),
            numa_unbound: None,
            hugepages: Some(crate::hugepages::Record {
                limits: vec![crate::hugetlb::Limit {
                    page: crate::hugetlb::PageSize(2 << 20),
                    bytes: 4 << 20,
                }],
                cgroup2: Some("/sys/fs/cgroup/unified/cnfbox/x".into()),
                unified: None,
                mounts: vec!["/run/cnfbox-mnt/x/hugepages/x/0".into()],
            }),
            network: None,
            devices: Some(crate::devices::Record {
                dir: "/run/cnfbox-mnt/x/devices/x".into(),
                nodes: vec![crate::devices::Node {
                    path: "/dev/kvm".into(),
                    host_path: "/run/cnfbox-mnt/x/devices/x/0".into(),
                    typ: 'c',
                    major: 10,
                    minor: 232,
                    mode: 0o600,
                    host_uid: 100_000,
                    host_gid: 100_000,
                }],
            }),
            granted_devices: vec![crate::devices::Dev {
                typ: 'c',
                major: 5,
                minor: 1,
            }],
            init_start: Some(123_456),
        };
        meta.save(dir.path()).unwrap();
        assert_eq!(ContainerMeta::load(dir.path()).unwrap(), meta);
        fs::write(dir.path().join(META_FILE), b"{").unwrap();
        assert!(matches!(
            ContainerMeta::load(dir.path()),
            Err(MetaError::Parse { .. })
        ));
    }
}
