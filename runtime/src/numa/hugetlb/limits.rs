//! Hugepage sizes and limits: parsed, validated against the kernel's
//! sizes (and a pinned NUMA node's free pages), and rewritten in the spec.

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use oci_spec::runtime::{LinuxHugepageLimit, Spec};
use serde::{Deserialize, Serialize};

use super::HugetlbError;

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
pub fn check_node(limits: &[Limit], node: u32, from: &str, sys: &Path) -> Result<(), HugetlbError> {
    for (index, l) in limits.iter().enumerate() {
        if l.bytes == 0 {
            continue;
        }
        let free = node_free(sys, node, l.page);
        if free.saturating_mul(l.page.0) < l.bytes {
            return Err(HugetlbError::NodeShort {
                index,
                node,
                from: from.to_string(),
                page: l.page.cgroup_name(),
                limit: l.bytes,
                free,
            });
        }
    }
    Ok(())
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
        const A: &str = "annotation cnfbox.io/numa-node";
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
        check_node(&[limit(4 << 20)], 1, A, sys.path()).unwrap();
        check_node(&[limit(0)], 0, A, sys.path()).unwrap();
        let e = check_node(&[limit(0), limit(6 << 20)], 1, A, sys.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.resources.hugepageLimits[1] (2MB pages, limit 6291456): NUMA node 1 \
             (from annotation cnfbox.io/numa-node) has 2 free 2MB hugepages, not enough for the limit"
        );
        let e = check_node(&[limit(2 << 20)], 0, A, sys.path()).unwrap_err();
        assert!(e.to_string().contains("has 0 free 2MB hugepages"), "{e}");
    }
}
