//! The host layer: what every pod feature (profile, volumes, hugepages,
//! hugetlbfs, devices, net, the journal's undo) needs from the host and
//! nothing of pods. Features import from here, never from each other's
//! helpers, and nothing here imports a feature.
//!
//! - [`mounts`]: lazy unmounts and namespace pins, in the host's mount
//!   namespace.
//! - [`ns`]: namespace files under `/proc` and whether two are the same.
//! - [`userns`]: the mappings of a user namespace given by path.
//! - [`init`]: whether a pid is still the process recorded (its start
//!   time), not one that reused it.
//! - [`rlimit`]: another process's resource limits, also where root
//!   lacks `CAP_SYS_RESOURCE`.
//! - [`nofollow`]: opening a directory with no symlink anywhere in its
//!   path, then reaching it by descriptor.
//! - [`owner`]: whether a directory root acts on is root's alone.
//! - [`cwd`]: forking the container's processes from `/`, which their
//!   unprivileged uid may read.
//! - [`cgroup2`]: a cgroup2 tree cnfbox writes itself (the hugetlb cgroup
//!   of a hybrid host; libcgroups manages the container's own cgroups).
//!
//! Process information comes from the `procfs` crate. What sysfs says
//! (NUMA topology, hugepage pools) is parsed by the feature that needs it,
//! each under an injectable root (`numa::Topology`, `hugepages::Roots`,
//! `commands::create::plan::HostRoots`), so tests run on fake trees.

pub mod cgroup2;
pub mod cwd;
pub mod init;
pub mod mounts;
pub mod nofollow;
pub mod ns;
pub mod owner;
pub mod rlimit;
pub mod userns;

pub use mounts::{lazy_umount, pin, unpin, PinError};

/// The cgroup path (without its leading `/`) of the hierarchy with
/// `controller` in a `/proc/PID/cgroup` text, or of the v2 hierarchy
/// (`0::PATH`) for `None`.
pub fn cgroup_of<'a>(text: &'a str, controller: Option<&str>) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = match controller {
            None => id == "0" && controllers.is_empty(),
            Some(c) => controllers.split(',').any(|have| have == c),
        };
        wanted.then(|| path.trim_start_matches('/'))
    })
}
