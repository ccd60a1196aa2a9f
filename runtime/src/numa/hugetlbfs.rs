//! A container's own hugetlbfs.
//!
//! hugetlbfs cannot be mounted from inside a user namespace, so a pod's
//! container could never mount the one its spec asks for. cnfbox mounts it
//! on the host instead, owned by the host uid and gid the pod's root maps
//! to, with the page size and a `size=` equal to the container's hugepage
//! limit, and hands it to the container as a bind mount: at each
//! `hugetlbfs` mount destination in the spec, or at `/dev/hugepages` when
//! the spec sets hugepage limits but mounts none. The pages come from the
//! memory policy of the faulting process, i.e. the NUMA hint's node.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::{Mount, Spec};

use crate::numa::hugetlb::{Limit, PageSize};

/// Where a spec with hugepage limits but no hugetlbfs mount gets one.
pub const DEFAULT_DESTINATION: &str = "/dev/hugepages";

/// Errors of the per-container hugetlbfs.
#[derive(Debug, thiserror::Error)]
pub enum HugetlbfsError {
    #[error("mounts[{index}] (hugetlbfs at {destination}): option {option:?}: {reason}")]
    Option {
        index: usize,
        destination: String,
        option: String,
        reason: String,
    },
    #[error(
        "the pod's root (uid/gid 0) is not mapped by its user namespace: cannot own its hugetlbfs"
    )]
    RootUnmapped,
    #[error("create hugetlbfs mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount hugetlbfs ({options}) on {path}")]
    Mount {
        path: PathBuf,
        options: String,
        #[source]
        source: nix::Error,
    },
}

/// A hugetlbfs the container gets: where it is mounted on the host, and
/// where the container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub page: PageSize,
    /// `size=` in bytes: a page size without a limit is refused.
    pub size: u64,
    pub destination: PathBuf,
    /// Index of the spec mount it replaces, if any.
    pub replaces: Option<usize>,
}

/// Decides which hugetlbfs mounts the container gets.
/// `default_page` is asked only for a spec hugetlbfs mount without a
/// `pagesize=` option (it reads `/proc/meminfo`).
pub fn plan(
    spec: &Spec,
    limits: &[Limit],
    default_page: impl Fn() -> PageSize,
) -> Result<Vec<Planned>, HugetlbfsError> {
    let size_of = |page: PageSize| limits.iter().find(|l| l.page == page).map(|l| l.bytes);
    let mut out = Vec::new();
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    for (index, m) in mounts.iter().enumerate() {
        if m.typ().as_deref() != Some("hugetlbfs") {
            continue;
        }
        let destination = m.destination().display().to_string();
        let mut page = None;
        for option in m.options().as_deref().unwrap_or_default() {
            let Some(v) = option.strip_prefix("pagesize=") else {
                continue;
            };
            page = parse_mount_size(v)
                .map(PageSize)
                .map(Some)
                .filter(|p| p.is_some_and(|p| p.0.is_power_of_two()))
                .ok_or_else(|| HugetlbfsError::Option {
                    index,
                    destination: destination.clone(),
                    option: option.clone(),
                    reason: "not a page size".into(),
                })?;
        }
        let page = page.unwrap_or_else(&default_page);
        // A page size without a limit would be unlimited (no `size=`, no
        // cgroup cap): pod root could map every free hugepage of the host.
        let Some(size) = size_of(page) else {
            return Err(HugetlbfsError::Option {
                index,
                destination,
                option: format!("pagesize={}", page.mount_option()),
                reason: "linux.resources.hugepageLimits sets no limit for this page size".into(),
            });
        };
        out.push(Planned {
            page,
            size,
            destination: m.destination().clone(),
            replaces: Some(index),
        });
    }
    if out.is_empty() {
        for (i, l) in limits.iter().filter(|l| l.bytes > 0).enumerate() {
            let destination = if i == 0 {
                PathBuf::from(DEFAULT_DESTINATION)
            } else {
                PathBuf::from(format!("{DEFAULT_DESTINATION}-{}", l.page.cgroup_name()))
            };
            out.push(Planned {
                page: l.page,
                size: l.bytes,
                destination,
                replaces: None,
            });
        }
    }
    Ok(out)
}

/// memparse(3)-like: `2M`, `2048K`, `1G`, or bytes.
fn parse_mount_size(v: &str) -> Option<u64> {
    let (num, shift) = match v.chars().last()? {
        'K' | 'k' => (&v[..v.len() - 1], 10),
        'M' | 'm' => (&v[..v.len() - 1], 20),
        'G' | 'g' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The host id that id 0 maps to (`None` without a mapping: host root).
pub fn host_root(mapping: Option<&idmap::Mapping>) -> Result<u32, HugetlbfsError> {
    let Some(m) = mapping else {
        return Ok(0);
    };
    if m.container_id() == 0 {
        Ok(m.host_id())
    } else {
        Err(HugetlbfsError::RootUnmapped)
    }
}

/// Mounts each planned hugetlbfs under `dir` (one subdirectory per mount)
/// and points the spec at it. Returns the host mount points; on error,
/// whatever was mounted is detached again.
pub fn mount_all(
    spec: &mut Spec,
    planned: &[Planned],
    dir: &Path,
    uid: u32,
    gid: u32,
) -> Result<Vec<PathBuf>, HugetlbfsError> {
    let mut done: Vec<PathBuf> = Vec::new();
    // The container's directory, private to the pod's root (see `views`).
    if !planned.is_empty() {
        crate::views::guard(dir, crate::views::Owner { uid, gid }).map_err(|source| {
            let _ = fs::remove_dir(dir);
            HugetlbfsError::MountPoint {
                path: dir.to_path_buf(),
                source,
            }
        })?;
    }
    for (i, p) in planned.iter().enumerate() {
        let target = dir.join(i.to_string());
        if let Err(err) = mount_one(p, &target, uid, gid) {
            detach_all(&done);
            let _ = fs::remove_dir(dir);
            return Err(err);
        }
        done.push(target);
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (p, host) in planned.iter().zip(&done) {
        let mut bind = Mount::default();
        bind.set_destination(p.destination.clone());
        bind.set_typ(Some("bind".into()));
        bind.set_source(Some(host.clone()));
        bind.set_options(Some(
            ["rbind", "nosuid", "nodev", "noexec"]
                .map(String::from)
                .to_vec(),
        ));
        match p.replaces {
            Some(index) => mounts[index] = bind,
            None => mounts.push(bind),
        }
    }
    spec.set_mounts(Some(mounts));
    Ok(done)
}

fn mount_one(p: &Planned, target: &Path, uid: u32, gid: u32) -> Result<(), HugetlbfsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .create(target)
        .map_err(|source| HugetlbfsError::MountPoint {
            path: target.to_path_buf(),
            source,
        })?;
    let options = format!(
        "uid={uid},gid={gid},mode=0770,pagesize={},size={}",
        p.page.mount_option(),
        p.size
    );
    mount(
        Some("hugetlbfs"),
        target,
        Some("hugetlbfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|source| {
        let _ = fs::remove_dir(target);
        HugetlbfsError::Mount {
            path: target.to_path_buf(),
            options,
            source,
        }
    })?;
    tracing::debug!(path = %target.display(), page = %p.page.cgroup_name(), size = p.size, uid, gid, "hugetlbfs mounted");
    Ok(())
}

/// Detaches the container's hugetlbfs mounts (its pages are freed once no
/// process maps them) and removes their directories.
pub fn detach_all(paths: &[PathBuf]) {
    for p in paths {
        if let Err(err) = crate::host::lazy_umount(p) {
            tracing::warn!(path = %p.display(), %err, "unmount hugetlbfs");
        }
        let _ = fs::remove_dir(p);
    }
    if let Some(parent) = paths.first().and_then(|p| p.parent()) {
        let _ = fs::remove_dir(parent);
    }
}

/// The default hugepage size (`Hugepagesize:` in `<proc>/meminfo`).
pub fn default_page(proc_root: &Path) -> Option<PageSize> {
    use procfs::FromRead as _;
    let info = procfs::Meminfo::from_file(proc_root.join("meminfo")).ok()?;
    // procfs gives bytes.
    info.hugepagesize.map(PageSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(mounts: Vec<Mount>) -> Spec {
        let mut s = Spec::default();
        s.set_mounts(Some(mounts));
        s
    }

    fn hugetlbfs(dest: &str, options: &[&str]) -> Mount {
        let mut m = Mount::default();
        m.set_destination(dest.into());
        m.set_typ(Some("hugetlbfs".into()));
        m.set_source(Some("none".into()));
        m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
        m
    }

    const MB2: PageSize = PageSize(2 << 20);
    const GB1: PageSize = PageSize(1 << 30);

    #[test]
    fn limits_without_a_mount_get_dev_hugepages() {
        let spec = spec_with(vec![]);
        let limits = [
            Limit {
                page: MB2,
                bytes: 4 << 20,
            },
            Limit {
                page: GB1,
                bytes: 1 << 30,
            },
        ];
        let p = plan(&spec, &limits, || MB2).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].destination, Path::new("/dev/hugepages"));
        assert_eq!(p[0].size, 4 << 20);
        assert_eq!(p[1].destination, Path::new("/dev/hugepages-1GB"));
        assert!(plan(
            &spec,
            &[Limit {
                page: MB2,
                bytes: 0
            }],
            || MB2
        )
        .unwrap()
        .is_empty());
        assert!(plan(&spec, &[], || MB2).unwrap().is_empty());
    }

    #[test]
    fn spec_mounts_are_replaced_and_checked() {
        let spec = spec_with(vec![
            hugetlbfs("/mnt/huge", &["pagesize=2M"]),
            hugetlbfs("/mnt/huge1g", &["pagesize=1G"]),
        ]);
        let limits = [Limit {
            page: MB2,
            bytes: 4 << 20,
        }];
        let e = plan(&spec, &limits, || MB2).unwrap_err().to_string();
        assert!(
            e.starts_with("mounts[1] (hugetlbfs at /mnt/huge1g): option \"pagesize=1048576K\""),
            "{e}"
        );
        let spec = spec_with(vec![hugetlbfs("/mnt/huge", &["pagesize=2048K"])]);
        let p = plan(&spec, &limits, || GB1).unwrap();
        assert_eq!(
            p,
            vec![Planned {
                page: MB2,
                size: 4 << 20,
                destination: "/mnt/huge".into(),
                replaces: Some(0)
            }]
        );
        // No limits at all: refused, not mounted unlimited.
        let e = plan(&spec, &[], || MB2).unwrap_err().to_string();
        assert!(e.contains("sets no limit for this page size"), "{e}");
        let spec = spec_with(vec![hugetlbfs("/h", &["pagesize=3x"])]);
        assert!(matches!(
            plan(&spec, &[], || MB2),
            Err(HugetlbfsError::Option { index: 0, .. })
        ));
    }

    #[test]
    fn pod_root_owner() {
        assert_eq!(host_root(None).unwrap(), 0);
        let m = idmap::Mapping::new(0, 100_000, 65_536).unwrap();
        assert_eq!(host_root(Some(&m)).unwrap(), 100_000);
        let m = idmap::Mapping::new(1, 100_000, 65_536).unwrap();
        assert!(host_root(Some(&m)).is_err());
    }

    #[test]
    fn reads_the_default_page_size() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("meminfo"),
            concat!(
                "MemTotal: 1 kB\nMemFree: 1 kB\nBuffers: 0 kB\nCached: 0 kB\n",
                "SwapCached: 0 kB\nActive: 0 kB\nInactive: 0 kB\nSwapTotal: 0 kB\n",
                "SwapFree: 0 kB\nDirty: 0 kB\nWriteback: 0 kB\nMapped: 0 kB\nSlab: 0 kB\n",
                "Committed_AS: 0 kB\nVmallocTotal: 0 kB\nVmallocUsed: 0 kB\n",
                "VmallocChunk: 0 kB\nHugepagesize:    2048 kB\n",
            ),
        )
        .unwrap();
        assert_eq!(default_page(dir.path()), Some(MB2));
    }
}
