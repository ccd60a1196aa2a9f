//! Which cgroup hierarchy enforces hugetlb limits, and cnfbox's own
//! hugetlb cgroup on the cgroup2 tree of a hybrid host.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HugetlbError, Limit, PageSize};
use crate::host::cgroup2;

/// Which hierarchy enforces hugetlb limits on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcer {
    /// libcontainer's own manager (v1 hugetlb hierarchy, or a unified host).
    Libcontainer,
    /// cnfbox, on the cgroup2 tree mounted at this path (hybrid host).
    Cgroup2(PathBuf),
    /// Nowhere.
    None,
}

/// Finds the hierarchy holding hugetlb under `cgroup_root` (`/sys/fs/cgroup`).
pub fn enforcer(cgroup_root: &Path) -> Enforcer {
    let has_hugetlb = |controllers: &Path| cgroup2::lists(controllers, "hugetlb");
    if cgroup_root.join("cgroup.controllers").exists() {
        return if has_hugetlb(&cgroup_root.join("cgroup.controllers")) {
            Enforcer::Libcontainer
        } else {
            Enforcer::None
        };
    }
    if cgroup_root.join("hugetlb").is_dir() {
        return Enforcer::Libcontainer;
    }
    let unified = cgroup_root.join("unified");
    if has_hugetlb(&unified.join("cgroup.controllers")) {
        return Enforcer::Cgroup2(unified);
    }
    Enforcer::None
}

/// A container's hugetlb cgroup on the cgroup2 tree of a hybrid host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup2 {
    /// The cgroup's directory.
    pub dir: PathBuf,
    /// Its limits.
    pub limits: Vec<Limit>,
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    fs::write(path, value)
}

impl Cgroup2 {
    /// Creates the cgroup at `cgroup_path` below `mount`, enabling hugetlb
    /// on the way down and setting each limit (and its `rsvd` twin).
    pub fn create(
        mount: &Path,
        cgroup_path: &Path,
        limits: Vec<Limit>,
    ) -> Result<Self, HugetlbError> {
        let dir = cgroup2::create_below(mount, cgroup_path, "hugetlb").map_err(|e| match e {
            cgroup2::Cgroup2Error::Enable { path, source, .. } => {
                HugetlbError::Enable { path, source }
            }
            cgroup2::Cgroup2Error::Mkdir { path, source } => HugetlbError::Mkdir { path, source },
        })?;
        let cg = Self { dir, limits };
        if let Err(err) = cg.set_limits() {
            let _ = fs::remove_dir(&cg.dir);
            return Err(err);
        }
        tracing::debug!(path = %cg.dir.display(), "hugetlb cgroup2 cgroup ready");
        Ok(cg)
    }

    /// Writes the limits (and their `rsvd` twins) into the cgroup.
    pub fn set_limits(&self) -> Result<(), HugetlbError> {
        for l in &self.limits {
            let name = l.page.cgroup_name();
            let max = self.dir.join(format!("hugetlb.{name}.max"));
            write(&max, &l.bytes.to_string())
                .map_err(|source| HugetlbError::Limit { path: max, source })?;
            // Reservation accounting (Linux 5.7+): mmap fails with ENOMEM
            // instead of a SIGBUS at fault time.
            let rsvd = self.dir.join(format!("hugetlb.{name}.rsvd.max"));
            if rsvd.exists() {
                write(&rsvd, &l.bytes.to_string())
                    .map_err(|source| HugetlbError::Limit { path: rsvd, source })?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` (0: the caller) into the cgroup.
    pub fn join(&self, pid: i32) -> Result<(), HugetlbError> {
        cgroup2::join(&self.dir, pid).map_err(|source| HugetlbError::Join {
            pid,
            path: self.dir.clone(),
            source,
        })
    }

    /// Bytes of hugepages of `page` charged to the cgroup (faulted; and
    /// reserved, where the kernel accounts reservations).
    pub fn usage(&self, page: PageSize) -> (Option<u64>, Option<u64>) {
        let read = |f: String| cgroup2::read_u64(&self.dir, &f);
        let name = page.cgroup_name();
        (
            read(format!("hugetlb.{name}.current")),
            read(format!("hugetlb.{name}.rsvd.current")),
        )
    }

    /// How often an allocation hit the limit (`max` in `hugetlb.<size>.events`).
    pub fn failcnt(&self, page: PageSize) -> u64 {
        fs::read_to_string(
            self.dir
                .join(format!("hugetlb.{}.events", page.cgroup_name())),
        )
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Removes the cgroup once its processes are gone; already gone is fine.
    pub fn remove(&self) -> Result<(), HugetlbError> {
        // The container's processes were killed through its v1 cgroups just
        // before; they may take a moment to leave this one.
        cgroup2::remove(&self.dir).map_err(|source| HugetlbError::Remove {
            path: self.dir.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_enforcing_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(enforcer(r), Enforcer::None);
        fs::create_dir_all(r.join("unified")).unwrap();
        fs::write(r.join("unified/cgroup.controllers"), "hugetlb\n").unwrap();
        assert_eq!(enforcer(r), Enforcer::Cgroup2(r.join("unified")));
        fs::create_dir_all(r.join("hugetlb")).unwrap();
        assert_eq!(enforcer(r), Enforcer::Libcontainer);
        fs::write(r.join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert_eq!(enforcer(r), Enforcer::None);
        fs::write(r.join("cgroup.controllers"), "cpu hugetlb memory\n").unwrap();
        assert_eq!(enforcer(r), Enforcer::Libcontainer);
    }

    #[test]
    fn cgroup_on_a_fake_tree() {
        // A plain directory tree stands in for cgroupfs: the files the
        // kernel would provide are made by hand.
        let root = tempfile::tempdir().unwrap();
        let m = root.path();
        fs::write(m.join("cgroup.subtree_control"), "").unwrap();
        fs::create_dir_all(m.join("cnfbox")).unwrap();
        fs::write(m.join("cnfbox/cgroup.subtree_control"), "hugetlb\n").unwrap();
        fs::create_dir_all(m.join("cnfbox/c1")).unwrap();
        fs::write(m.join("cnfbox/c1/hugetlb.2MB.rsvd.max"), "max").unwrap();
        let cg = Cgroup2::create(
            m,
            Path::new("/cnfbox/c1"),
            vec![Limit {
                page: PageSize(2 << 20),
                bytes: 4 << 20,
            }],
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(m.join("cgroup.subtree_control")).unwrap(),
            "+hugetlb"
        );
        assert_eq!(
            fs::read_to_string(m.join("cnfbox/cgroup.subtree_control")).unwrap(),
            "hugetlb\n",
            "an enabled controller is left alone"
        );
        assert_eq!(
            fs::read_to_string(cg.dir.join("hugetlb.2MB.max")).unwrap(),
            "4194304"
        );
        assert_eq!(
            fs::read_to_string(cg.dir.join("hugetlb.2MB.rsvd.max")).unwrap(),
            "4194304"
        );
        fs::write(cg.dir.join("hugetlb.2MB.current"), "2097152\n").unwrap();
        fs::write(cg.dir.join("hugetlb.2MB.events"), "max 3\n").unwrap();
        assert_eq!(cg.failcnt(PageSize(2 << 20)), 3);
        assert_eq!(cg.usage(PageSize(2 << 20)), (Some(2 << 20), None));
    }
}
