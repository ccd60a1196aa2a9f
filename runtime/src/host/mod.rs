//! The host layer: what every pod feature (profile, volumes, hugepages,
//! hugetlbfs, devices, net, the journal's undo) needs from the host and
//! nothing of pods. Features import from here, never from each other's
//! helpers, and nothing here imports a feature.
//!
//! - [`mounts`]: lazy unmounts and namespace pins, in the host's mount
//!   namespace.
//! - [`ns`]: namespace files under `/proc` and whether two are the same.
//! - [`userns`]: the mappings of a user namespace given by path.
//! - [`nofollow`]: opening a directory with no symlink anywhere in its
//!   path, then reaching it by descriptor.
//! - [`owner`]: whether a directory root acts on is root's alone.
//! - [`cgroup2`]: a cgroup2 tree cnfbox writes itself (the hugetlb cgroup
//!   of a hybrid host; libcgroups manages the container's own cgroups).
//!
//! Process information comes from the `procfs` crate. What sysfs says
//! (NUMA topology, hugepage pools) is parsed by the feature that needs it,
//! each under an injectable root (`numa::Topology`, `hugepages::Roots`,
//! `commands::create::plan::HostRoots`), so tests run on fake trees.

pub mod cgroup2;
pub mod mounts;
pub mod nofollow;
pub mod ns;
pub mod owner;
pub mod userns;

pub use mounts::{create_pin_point, lazy_umount, unpin};
