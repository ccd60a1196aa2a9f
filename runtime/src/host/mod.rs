//! The host layer: what every pod feature (profile, volumes, hugepages,
//! hugetlbfs, devices, net, the journal's undo) needs from the host and
//! nothing of pods. Features import from here, never from each other's
//! helpers, and nothing here imports a feature.
//!
//! - [`mounts`]: lazy unmounts and namespace pins, in the host's mount
//!   namespace.
//! - [`ns`]: namespace files under `/proc` and whether two are the same.
//! - [`userns`]: the mappings of a user namespace given by path.
//!
//! Cgroup v2 trees cnfbox writes itself (the hugetlb cgroup of a hybrid
//! host) stay with `hugetlb`, their only user; sysfs and procfs are read
//! through injectable roots by the features (`numa::Topology`,
//! `hugepages::Roots`, `commands::create::plan::HostRoots`).

pub mod mounts;
pub mod ns;
pub mod userns;

pub use mounts::{create_pin_point, lazy_umount, unpin};
