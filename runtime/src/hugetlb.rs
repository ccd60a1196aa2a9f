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

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxHugepageLimit, Spec};
use serde::{Deserialize, Serialize};

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
    #[error("linux.resources.hugepageLimits[{index}] ({page} pages, limit {limit}): NUMA node {node} (annotation cnfbox.io/numa-node) has {free} free {page} hugepages, not enough for the limit")]
    NodeShort {
        index: usize,
        node: u32,
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

/// A hugepage size, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PageSize(pub u64);

impl PageSize {
    /// Parses the OCI form `<n><KB|MB|GB>` (`2MB`, `1GB`, `64KB`).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let (num, unit) = s
            .find(|c: char| !c.is_ascii_digit())
            .map(|i| s.split_at(i))
            .ok_or("missing unit (KB, MB or GB)")?;
        let shift = match unit {
            "KB" => 10,
            "MB" => 20,
            "GB" => 30,
            _ => return Err("unit must be KB, MB or GB"),
        };
        let n: u64 = num.parse().map_err(|_| "not a number")?;
        let bytes = n
            .checked_mul(1 << shift)
            .filter(|b| *b > 0)
            .ok_or("out of range")?;
        if !bytes.is_power_of_two() {
            return Err("not a power of two");
        }
        Ok(Self(bytes))
    }

    /// The kernel's name in cgroup files (`hugetlb.2MB.max`).
    pub fn cgroup_name(self) -> String {
        let b = self.0;
        if b >= 1 << 30 {
            format!("{}GB", b >> 30)
        } else if b >= 1 << 20 {
            format!("{}MB", b >> 20)
        } else {
            format!("{}KB", b >> 10)
        }
    }

    /// The hugetlbfs `pagesize=` option value.
    pub fn mount_option(self) -> String {
        format!("{}K", self.0 >> 10)
    }
}

/// One validated limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub page: PageSize,
    pub bytes: u64,
}

/// The hugepage sizes this kernel has (`<sys>/kernel/mm/hugepages`).
pub fn kernel_sizes(sys: &Path) -> Result<BTreeSet<PageSize>, HugetlbError> {
    let dir = sys.join("kernel/mm/hugepages");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => return Err(HugetlbError::Sizes { path: dir, source }),
    };
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(PageSize(kb << 10))
        })
        .collect())
}

/// Validates the spec's limits against the kernel's page sizes.
pub fn validate(limits: &[LinuxHugepageLimit], sys: &Path) -> Result<Vec<Limit>, HugetlbError> {
    if limits.is_empty() {
        return Ok(Vec::new());
    }
    let sizes = kernel_sizes(sys)?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (index, l) in limits.iter().enumerate() {
        let value = l.page_size().clone();
        let page = PageSize::parse(&value).map_err(|reason| HugetlbError::PageSize {
            index,
            value: value.clone(),
            reason,
        })?;
        if !sizes.contains(&page) {
            let available = sizes
                .iter()
                .map(|p| p.cgroup_name())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(HugetlbError::NoSuchPageSize {
                index,
                value,
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available
                },
            });
        }
        if !seen.insert(page) {
            return Err(HugetlbError::Duplicate { index, value });
        }
        // A negative limit cannot be a multiple of a page: refuse it too.
        let bytes = u64::try_from(l.limit()).unwrap_or(u64::MAX);
        if bytes == u64::MAX || bytes % page.0 != 0 {
            return Err(HugetlbError::NotMultiple {
                index,
                limit: bytes,
                page: page.cgroup_name(),
            });
        }
        out.push(Limit { page, bytes });
    }
    Ok(out)
}

/// Free hugepages of size `page` on NUMA node `node`
/// (`<sys>/devices/system/node/node<N>/hugepages/hugepages-<kB>kB/free_hugepages`);
/// 0 when the node has no pool of that size.
pub fn node_free(sys: &Path, node: u32, page: PageSize) -> u64 {
    let path = sys.join(format!(
        "devices/system/node/node{node}/hugepages/hugepages-{}kB/free_hugepages",
        page.0 >> 10
    ));
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A container pinned to `node` gets its hugepages from that node only
/// (its memory is bound there): each non-zero limit must fit in the
/// node's free pages now, or the container would fault (SIGBUS) or fail
/// its mmaps later.
pub fn check_node(limits: &[Limit], node: u32, sys: &Path) -> Result<(), HugetlbError> {
    for (index, l) in limits.iter().enumerate() {
        if l.bytes == 0 {
            continue;
        }
        let free = node_free(sys, node, l.page);
        if free.saturating_mul(l.page.0) < l.bytes {
            return Err(HugetlbError::NodeShort {
                index,
                node,
                page: l.page.cgroup_name(),
                limit: l.bytes,
                free,
            });
        }
    }
    Ok(())
}

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
    let has_hugetlb = |controllers: &Path| {
        fs::read_to_string(controllers)
            .map(|s| s.split_whitespace().any(|c| c == "hugetlb"))
            .unwrap_or(false)
    };
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
        let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
        let mut dir = mount.to_path_buf();
        for part in rel.components() {
            let control = dir.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&control)
                .map(|s| s.split_whitespace().any(|c| c == "hugetlb"))
                .unwrap_or(false);
            if !enabled {
                write(&control, "+hugetlb").map_err(|source| HugetlbError::Enable {
                    path: control.clone(),
                    source,
                })?;
            }
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(source) => return Err(HugetlbError::Mkdir { path: dir, source }),
            }
        }
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
        let procs = self.dir.join("cgroup.procs");
        write(&procs, &pid.to_string()).map_err(|source| HugetlbError::Join {
            pid,
            path: self.dir.clone(),
            source,
        })
    }

    /// Bytes of hugepages of `page` charged to the cgroup (faulted; and
    /// reserved, where the kernel accounts reservations).
    pub fn usage(&self, page: PageSize) -> (Option<u64>, Option<u64>) {
        let read = |f: String| {
            fs::read_to_string(self.dir.join(f))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
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
        let mut tries = 0;
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 500 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(source) => {
                    return Err(HugetlbError::Remove {
                        path: self.dir.clone(),
                        source,
                    })
                }
            }
        }
    }
}

/// The spec's hugepage limits, validated.
pub fn spec_limits(spec: &Spec, sys: &Path) -> Result<Vec<Limit>, HugetlbError> {
    let limits = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.hugepage_limits().clone())
        .unwrap_or_default();
    validate(&limits, sys)
}

/// The limits in OCI form, with the kernel's page size names.
pub fn named(limits: &[Limit]) -> Vec<LinuxHugepageLimit> {
    limits
        .iter()
        .map(|l| {
            let mut out = LinuxHugepageLimit::default();
            out.set_page_size(l.page.cgroup_name());
            out.set_limit(l.bytes as i64);
            out
        })
        .collect()
}

/// Rewrites the spec's limits with the kernel's page size names.
pub fn canonicalize(spec: &mut Spec, limits: &[Limit]) {
    if let Some(res) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.resources_mut().as_mut())
    {
        res.set_hugepage_limits(Some(named(limits)));
    }
}

/// Takes the hugepage limits out of `spec` (cnfbox enforces them instead).
pub fn strip(spec: &mut Spec) {
    if let Some(res) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.resources_mut().as_mut())
    {
        res.set_hugepage_limits(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(page: &str, bytes: i64) -> LinuxHugepageLimit {
        let mut l = LinuxHugepageLimit::default();
        l.set_page_size(page.to_string());
        l.set_limit(bytes);
        l
    }

    fn sysfs(sizes_kb: &[u64]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for kb in sizes_kb {
            fs::create_dir_all(
                dir.path()
                    .join(format!("kernel/mm/hugepages/hugepages-{kb}kB")),
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn page_sizes_parse_and_name() {
        assert_eq!(PageSize::parse("2MB"), Ok(PageSize(2 << 20)));
        assert_eq!(PageSize::parse("1GB").unwrap().cgroup_name(), "1GB");
        assert_eq!(PageSize::parse("2048KB").unwrap().cgroup_name(), "2MB");
        assert_eq!(PageSize::parse("64KB").unwrap().cgroup_name(), "64KB");
        assert_eq!(PageSize::parse("2MB").unwrap().mount_option(), "2048K");
        for bad in [
            "",
            "2",
            "MB",
            "3MB",
            "2mb",
            "2 MB",
            "0MB",
            "99999999999999GB",
        ] {
            assert!(PageSize::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let sys = sysfs(&[2048, 1048576]);
        let ok = validate(&[limit("2MB", 8 << 20), limit("1GB", 0)], sys.path()).unwrap();
        assert_eq!(ok[0].bytes, 8 << 20);
        assert_eq!(ok[1].page, PageSize(1 << 30));
        let e = validate(&[limit("2MB", 3 << 20)], sys.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.resources.hugepageLimits[0].limit 3145728: not a multiple of the 2MB page size"
        );
        let e = validate(&[limit("2MB", 0), limit("64KB", 0)], sys.path()).unwrap_err();
        assert!(
            e.to_string().contains(
                "[1].pageSize \"64KB\": this kernel has no such hugepage size (has 2MB, 1GB)"
            ),
            "{e}"
        );
        let e = validate(&[limit("2MB", 0), limit("2048KB", 0)], sys.path()).unwrap_err();
        assert!(matches!(e, HugetlbError::Duplicate { index: 1, .. }), "{e}");
        let e = validate(&[limit("2MB", -2)], sys.path()).unwrap_err();
        assert!(matches!(e, HugetlbError::NotMultiple { .. }), "{e}");
        let e = validate(&[limit("3MB", 0)], sys.path()).unwrap_err();
        assert!(e.to_string().contains("not a power of two"), "{e}");
        let none = sysfs(&[]);
        let e = validate(&[limit("2MB", 0)], none.path()).unwrap_err();
        assert!(e.to_string().ends_with("(has none)"), "{e}");
    }

    #[test]
    fn limits_are_renamed_for_libcontainer() {
        let sys = sysfs(&[2048]);
        let mut spec = Spec::default();
        let mut linux = oci_spec::runtime::Linux::default();
        let mut res = oci_spec::runtime::LinuxResources::default();
        res.set_hugepage_limits(Some(vec![limit("2048KB", 2 << 20)]));
        linux.set_resources(Some(res));
        spec.set_linux(Some(linux));
        let limits = spec_limits(&spec, sys.path()).unwrap();
        canonicalize(&mut spec, &limits);
        let out = spec_limits(&spec, sys.path()).unwrap();
        assert_eq!(out, limits);
        let raw = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(
            raw.hugepage_limits().as_ref().unwrap()[0].page_size(),
            "2MB"
        );
        strip(&mut spec);
        assert!(spec_limits(&spec, sys.path()).unwrap().is_empty());
    }

    #[test]
    fn a_pinned_limit_must_fit_in_the_node() {
        let sys = tempfile::tempdir().unwrap();
        let pool = sys
            .path()
            .join("devices/system/node/node1/hugepages/hugepages-2048kB");
        fs::create_dir_all(&pool).unwrap();
        fs::write(pool.join("free_hugepages"), "2\n").unwrap();
        let limit = |bytes| Limit {
            page: PageSize(2 << 20),
            bytes,
        };
        check_node(&[limit(4 << 20)], 1, sys.path()).unwrap();
        check_node(&[limit(0)], 0, sys.path()).unwrap();
        let e = check_node(&[limit(0), limit(6 << 20)], 1, sys.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.resources.hugepageLimits[1] (2MB pages, limit 6291456): NUMA node 1 \
             (annotation cnfbox.io/numa-node) has 2 free 2MB hugepages, not enough for the limit"
        );
        let e = check_node(&[limit(2 << 20)], 0, sys.path()).unwrap_err();
        assert!(e.to_string().contains("has 0 free 2MB hugepages"), "{e}");
    }

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
