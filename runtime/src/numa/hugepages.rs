//! Hugepages for a container: its limits (see `hugetlb`) and its own
//! hugetlbfs (see `hugetlbfs`), set up around libcontainer's create and
//! removed at delete.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::numa::hugetlb::{self, Cgroup2, Enforcer, HugetlbError, Limit, PageSize};
use crate::numa::hugetlbfs::{self, HugetlbfsError};

/// Errors of hugepage setup.
#[derive(Debug, thiserror::Error)]
pub enum HugepagesError {
    #[error(transparent)]
    Hugetlb(#[from] HugetlbError),
    #[error(transparent)]
    Hugetlbfs(#[from] HugetlbfsError),
}

/// Host roots the setup reads (`/sys`, `/proc`), injectable for tests.
#[derive(Debug, Clone)]
pub struct Roots {
    pub sys: PathBuf,
    pub proc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            sys: "/sys".into(),
            proc: "/proc".into(),
        }
    }
}

/// What `check` decided, before anything exists.
#[derive(Debug)]
pub struct Plan {
    limits: Vec<Limit>,
    /// The cgroup2 tree cnfbox enforces the limits on (hybrid hosts).
    cgroup2: Option<PathBuf>,
    /// The unified tree libcontainer enforces them on (cgroup v2 hosts).
    unified: Option<PathBuf>,
    mounts: Vec<hugetlbfs::Planned>,
}

impl Plan {
    /// Whether the container needs anything from this module.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.mounts.is_empty()
    }

    /// The hugetlb cgroup `setup` makes for the container's `cgroup_path`
    /// (hybrid hosts), before it exists.
    pub fn cgroup2_dir(&self, cgroup_path: &Path) -> Option<PathBuf> {
        let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
        self.cgroup2.as_ref().map(|mount| mount.join(rel))
    }
}

/// Validates limits and hugetlbfs mounts (and, for a container pinned to
/// NUMA node `node` (named by `from`), that the node has the free pages
/// for them); on a
/// hybrid host takes the limits out of `spec` (libcontainer's v1 manager
/// would fail on them).
pub fn check(
    spec: &mut Spec,
    roots: &Roots,
    node: Option<(u32, &str)>,
) -> Result<Plan, HugepagesError> {
    let limits = hugetlb::spec_limits(spec, &roots.sys)?;
    if let Some((node, from)) = node {
        hugetlb::check_node(&limits, node, from, &roots.sys)?;
    }
    let mut cgroup2 = None;
    let mut unified = None;
    if !limits.is_empty() {
        match hugetlb::enforcer(&roots.sys.join("fs/cgroup")) {
            Enforcer::None => return Err(HugetlbError::NoController.into()),
            // libcontainer writes `hugetlb.<pageSize>.*` as given: use the
            // kernel's name (`2048KB` is `2MB`).
            Enforcer::Libcontainer => {
                hugetlb::canonicalize(spec, &limits);
                let root = roots.sys.join("fs/cgroup");
                if root.join("cgroup.controllers").exists() {
                    unified = Some(root);
                }
            }
            Enforcer::Cgroup2(mount) => {
                hugetlb::strip(spec);
                cgroup2 = Some(mount);
            }
        }
    }
    let mounts = hugetlbfs::plan(spec, &limits, || {
        hugetlbfs::default_page(&roots.proc).unwrap_or(PageSize(2 << 20))
    })?;
    Ok(Plan {
        limits,
        cgroup2,
        unified,
        mounts,
    })
}

/// What cnfbox set up, kept in the container's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub limits: Vec<Limit>,
    /// The cgroup2 cgroup enforcing the limits, when cnfbox does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup2: Option<PathBuf>,
    /// The container's own cgroup on a unified host, where libcontainer
    /// enforces the limits (and removes it): read for usage and stats only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unified: Option<PathBuf>,
    /// Host mount points of the container's hugetlbfs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<PathBuf>,
}

/// Creates the cgroup2 cgroup and mounts the hugetlbfs (under `mount_dir`,
/// owned by `owner`'s host uid/gid), pointing `spec` at them. Nothing is
/// left when it fails.
pub fn setup(
    plan: Plan,
    spec: &mut Spec,
    cgroup_path: &Path,
    mount_dir: &Path,
    owner: Option<&idmap::PodMapping>,
) -> Result<Record, HugepagesError> {
    let uid = hugetlbfs::host_root(owner.map(|m| &m.uid))?;
    let gid = hugetlbfs::host_root(owner.map(|m| &m.gid))?;
    let cgroup = match &plan.cgroup2 {
        Some(mount) => Some(Cgroup2::create(mount, cgroup_path, plan.limits.clone())?),
        None => None,
    };
    let mounts = match hugetlbfs::mount_all(spec, &plan.mounts, mount_dir, uid, gid) {
        Ok(m) => m,
        Err(err) => {
            if let Some(cg) = &cgroup {
                let _ = cg.remove();
            }
            return Err(err.into());
        }
    };
    let unified = plan.unified.as_ref().map(|root| {
        let fs_path = crate::cgroups::fs_path(cgroup_path);
        root.join(fs_path.strip_prefix("/").unwrap_or(&fs_path))
    });
    Ok(Record {
        limits: plan.limits,
        cgroup2: cgroup.map(|c| c.dir),
        unified,
        mounts,
    })
}

impl Record {
    fn cgroup(&self) -> Option<Cgroup2> {
        self.cgroup2.clone().map(|dir| Cgroup2 {
            dir,
            limits: self.limits.clone(),
        })
    }

    /// Moves `pid` into the cgroup2 cgroup (no-op without one).
    pub fn join(&self, pid: i32) -> Result<(), HugepagesError> {
        if let Some(cg) = self.cgroup() {
            cg.join(pid)?;
        }
        Ok(())
    }

    /// The cgroup holding the container's hugetlb charges: cnfbox's own,
    /// else libcontainer's on a unified host.
    fn charged(&self) -> Option<Cgroup2> {
        self.cgroup2
            .clone()
            .or_else(|| self.unified.clone())
            .map(|dir| Cgroup2 {
                dir,
                limits: self.limits.clone(),
            })
    }

    /// `(page size, limit, faulted bytes, reserved bytes)` per limit.
    pub fn usage(&self) -> Vec<(String, u64, Option<u64>, Option<u64>)> {
        let cg = self.charged();
        self.limits
            .iter()
            .map(|l| {
                let (cur, rsvd) = cg.as_ref().map(|c| c.usage(l.page)).unwrap_or_default();
                (l.page.cgroup_name(), l.bytes, cur, rsvd)
            })
            .collect()
    }

    /// `(page size, faulted bytes, times the limit was hit)` per limit, from
    /// the cgroup2 cgroup (cnfbox's own, or libcontainer's on a unified
    /// host; none on a v1 hugetlb hierarchy, where libcontainer reports).
    pub fn stats(&self) -> Vec<(String, u64, u64)> {
        let Some(cg) = self.charged() else {
            return Vec::new();
        };
        self.limits
            .iter()
            .map(|l| {
                let (cur, _) = cg.usage(l.page);
                (l.page.cgroup_name(), cur.unwrap_or(0), cg.failcnt(l.page))
            })
            .collect()
    }
}
