//! What cnfbox records of a container, beside libcontainer's `state.json`
//! (kept in the container's journal: `journal::record`).
//!
//! libcontainer's state points at the staged bundle (it must, for `exec`);
//! what the user gave, and what `state`/`list` report, is kept here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Name of the staged bundle directory inside a container's state directory.
pub const STAGED_BUNDLE: &str = "bundle";
/// Directory under the state root where specs are staged during `create`
/// (`.staging/<id>.<pid>/`).
pub const STAGING: &str = ".staging";

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
    pub hugepages: Option<crate::numa::hugepages::Record>,
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

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A record with every field set (`journal`'s tests save and load it).
    pub fn full() -> ContainerMeta {
        ContainerMeta {
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
            hugepages: Some(crate::numa::hugepages::Record {
                limits: vec![crate::numa::hugetlb::Limit {
                    page: crate::numa::hugetlb::PageSize(2 << 20),
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
        }
    }

    #[test]
    fn round_trip() {
        let meta = full();
        let json = serde_json::to_string(&meta).unwrap();
        assert_eq!(serde_json::from_str::<ContainerMeta>(&json).unwrap(), meta);
    }
}
