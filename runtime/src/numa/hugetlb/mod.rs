//! Hugepage limits (`linux.resources.hugepageLimits`) on whichever cgroup
//! hierarchy holds the hugetlb controller.
//!
//! On a v1 host with a hugetlb hierarchy, and on a unified host,
//! libcontainer sets the limits itself. On a hybrid host where hugetlb is
//! bound only to the cgroup2 tree (`/sys/fs/cgroup/unified`), libcontainer's
//! v1 manager cannot: cnfbox then takes the limits out of the staged spec,
//! makes a cgroup2 cgroup at the container's cgroup path with `max` and,
//! where the kernel has it, `rsvd.max` set, and moves the init into it
//! between create and start. Processes forked later inherit it; `exec`
//! joins it before forking. `delete` removes it.
//!
//! - `limits`: page sizes, validating the spec's limits against the
//!   kernel's sizes and a pinned NUMA node's free pages, rewriting them;
//! - `cgroup2`: which hierarchy enforces the limits, and cnfbox's own
//!   hugetlb cgroup on the cgroup2 tree of a hybrid host.

use std::path::PathBuf;

mod cgroup2;
mod limits;

pub use cgroup2::{enforcer, Cgroup2, Enforcer};
pub use limits::{
    canonicalize, check_node, kernel_sizes, named, spec_limits, strip, validate, Limit, PageSize,
};

/// Errors of hugepage limits.
#[derive(Debug, thiserror::Error)]
pub enum HugetlbError {
    #[error("linux.resources.hugepageLimits[{index}].pageSize {value:?}: {reason}")]
    PageSize {
        index: usize,
        value: String,
        reason: &'static str,
    },
    #[error("linux.resources.hugepageLimits[{index}].pageSize {value:?}: this kernel has no such hugepage size (has {available})")]
    NoSuchPageSize {
        index: usize,
        value: String,
        available: String,
    },
    #[error("linux.resources.hugepageLimits[{index}].limit {limit}: not a multiple of the {page} page size")]
    NotMultiple {
        index: usize,
        limit: u64,
        page: String,
    },
    #[error("linux.resources.hugepageLimits[{index}].pageSize {value:?}: given twice")]
    Duplicate { index: usize, value: String },
    #[error("linux.resources.hugepageLimits[{index}] ({page} pages, limit {limit}): NUMA node {node} (from {from}) has {free} free {page} hugepages, not enough for the limit")]
    NodeShort {
        index: usize,
        node: u32,
        from: String,
        page: String,
        limit: u64,
        free: u64,
    },
    #[error("linux.resources.hugepageLimits: no cgroup hierarchy on this host has the hugetlb controller")]
    NoController,
    #[error("read hugepage sizes in {path}")]
    Sizes {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("create hugetlb cgroup {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("enable the hugetlb controller in {path}")]
    Enable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("set hugetlb limit {path}")]
    Limit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("move pid {pid} into hugetlb cgroup {path}")]
    Join {
        pid: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("remove hugetlb cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
