//! Task metrics on a unified (cgroup v2 only) host, in containerd's
//! `io.containerd.cgroups.v2.Metrics` (what containerd's own runc shim
//! sends there; cgroup-v2.rst names the files).
//!
//! The container's cgroup is read off the `0::` line of
//! `/proc/<init>/cgroup`, like the v1 metrics in `stats`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, HugeTlbStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};

use crate::stats::{Roots, StatsError};

/// Whether `cgroup_root` (`/sys/fs/cgroup`) is a cgroup2 mount.
pub fn is_unified(cgroup_root: &Path) -> bool {
    cgroup_root.join("cgroup.controllers").exists()
}

/// The cgroup2 directory of `pid` (its `0::` line).
pub fn cgroup_dir(roots: &Roots, pid: i32) -> Result<PathBuf, StatsError> {
    let path = roots.proc.join(pid.to_string()).join("cgroup");
    let text = std::fs::read_to_string(&path).map_err(|source| StatsError::ProcCgroup {
        pid,
        path,
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|cg| roots.cgroup.join(cg.trim_start_matches('/')))
        .ok_or(StatsError::NoV2 { pid })
}

fn read_u64(p: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// A `max` limit is "no limit": 0 in the metrics, as containerd sends it.
fn limit(p: &Path) -> u64 {
    read_u64(p).filter(|l| *l != u64::MAX).unwrap_or(0)
}

/// `key value` lines (`cpu.stat`, `memory.stat`, `memory.events`).
pub fn read_kv(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// The container's metrics, from the cgroup2 cgroup of its init `pid`.
pub fn collect(roots: &Roots, pid: i32) -> Result<Metrics, StatsError> {
    let d = cgroup_dir(roots, pid)?;
    let mut m = Metrics::new();
    if d.join("pids.current").exists() {
        m.pids = Some(PidsStat {
            current: read_u64(&d.join("pids.current")).unwrap_or(0),
            limit: limit(&d.join("pids.max")),
            ..Default::default()
        })
        .into();
    }
    let cpu = read_kv(&d.join("cpu.stat"));
    if !cpu.is_empty() {
        let g = |k: &str| cpu.get(k).copied().unwrap_or(0);
        m.cpu = Some(CPUStat {
            usage_usec: g("usage_usec"),
            user_usec: g("user_usec"),
            system_usec: g("system_usec"),
            nr_periods: g("nr_periods"),
            nr_throttled: g("nr_throttled"),
            throttled_usec: g("throttled_usec"),
            nr_bursts: g("nr_bursts"),
            burst_usec: g("burst_usec"),
            ..Default::default()
        })
        .into();
    }
    if d.join("memory.current").exists() {
        m.memory = Some(memory(&d)).into();
        let ev = read_kv(&d.join("memory.events"));
        let g = |k: &str| ev.get(k).copied().unwrap_or(0);
        m.memory_events = Some(MemoryEvents {
            low: g("low"),
            high: g("high"),
            max: g("max"),
            oom: g("oom"),
            oom_kill: g("oom_kill"),
            oom_group_kill: g("oom_group_kill"),
            ..Default::default()
        })
        .into();
    }
    let io = io(&d);
    if !io.is_empty() {
        m.io = Some(IOStat {
            usage: io,
            ..Default::default()
        })
        .into();
    }
    m.hugetlb = hugetlb(&d);
    Ok(m)
}

fn memory(d: &Path) -> MemoryStat {
    let s = read_kv(&d.join("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    MemoryStat {
        anon: g("anon"),
        file: g("file"),
        kernel_stack: g("kernel_stack"),
        slab: g("slab"),
        sock: g("sock"),
        shmem: g("shmem"),
        file_mapped: g("file_mapped"),
        file_dirty: g("file_dirty"),
        file_writeback: g("file_writeback"),
        anon_thp: g("anon_thp"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        slab_reclaimable: g("slab_reclaimable"),
        slab_unreclaimable: g("slab_unreclaimable"),
        pgfault: g("pgfault"),
        pgmajfault: g("pgmajfault"),
        workingset_refault: g("workingset_refault_anon") + g("workingset_refault_file"),
        workingset_activate: g("workingset_activate_anon") + g("workingset_activate_file"),
        workingset_nodereclaim: g("workingset_nodereclaim"),
        pgrefill: g("pgrefill"),
        pgscan: g("pgscan"),
        pgsteal: g("pgsteal"),
        pgactivate: g("pgactivate"),
        pgdeactivate: g("pgdeactivate"),
        pglazyfree: g("pglazyfree"),
        pglazyfreed: g("pglazyfreed"),
        thp_fault_alloc: g("thp_fault_alloc"),
        thp_collapse_alloc: g("thp_collapse_alloc"),
        usage: read_u64(&d.join("memory.current")).unwrap_or(0),
        usage_limit: limit(&d.join("memory.max")),
        swap_usage: read_u64(&d.join("memory.swap.current")).unwrap_or(0),
        swap_limit: limit(&d.join("memory.swap.max")),
        max_usage: read_u64(&d.join("memory.peak")).unwrap_or(0),
        swap_max_usage: read_u64(&d.join("memory.swap.peak")).unwrap_or(0),
        ..Default::default()
    }
}

/// `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. ...` per device.
fn io(d: &Path) -> Vec<IOEntry> {
    std::fs::read_to_string(d.join("io.stat"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (major, minor) = it.next()?.split_once(':')?;
            let mut e = IOEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for kv in it {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

/// `hugetlb.<size>.current`, its limit and how often the limit was hit.
fn hugetlb(d: &Path) -> Vec<HugeTlbStat> {
    let mut sizes: Vec<String> = std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("hugetlb.")
                .and_then(|r| r.strip_suffix(".current"))
                .filter(|s| !s.contains('.'))
                .map(str::to_owned)
        })
        .collect();
    sizes.sort();
    sizes
        .into_iter()
        .map(|size| {
            let f = |n: &str| d.join(format!("hugetlb.{size}.{n}"));
            HugeTlbStat {
                current: read_u64(&f("current")).unwrap_or(0),
                max: limit(&f("max")),
                failcnt: read_kv(&f("events")).get("max").copied().unwrap_or(0),
                pagesize: size.clone(),
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, s).expect("write");
    }

    #[test]
    fn reads_a_fake_v2_tree() {
        let t = tempfile::tempdir().expect("tempdir");
        let roots = Roots {
            proc: t.path().join("proc"),
            cgroup: t.path().join("cg"),
        };
        w(&roots.proc.join("42/cgroup"), "0::/cnfbox/c1\n");
        let d = roots.cgroup.join("cnfbox/c1");
        w(&d.join("pids.current"), "3\n");
        w(&d.join("pids.max"), "max\n");
        w(
            &d.join("cpu.stat"),
            "usage_usec 500\nuser_usec 300\nsystem_usec 200\nnr_periods 10\nnr_throttled 4\nthrottled_usec 99\n",
        );
        w(&d.join("memory.current"), "4096\n");
        w(&d.join("memory.max"), "8192\n");
        w(&d.join("memory.peak"), "6000\n");
        w(&d.join("memory.swap.max"), "max\n");
        w(
            &d.join("memory.stat"),
            "anon 7\nfile 9\nworkingset_refault_anon 1\nworkingset_refault_file 2\n",
        );
        w(
            &d.join("memory.events"),
            "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n",
        );
        w(
            &d.join("io.stat"),
            "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        w(&d.join("hugetlb.2MB.current"), "4194304\n");
        w(&d.join("hugetlb.2MB.max"), "8388608\n");
        w(&d.join("hugetlb.2MB.events"), "max 3\n");
        w(&d.join("hugetlb.2MB.rsvd.current"), "4194304\n");

        assert!(!is_unified(&roots.cgroup));
        w(&roots.cgroup.join("cgroup.controllers"), "cpu memory\n");
        assert!(is_unified(&roots.cgroup));
        let m = collect(&roots, 42).expect("metrics");
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (500, 300, 200)
        );
        assert_eq!((m.cpu.nr_throttled, m.cpu.throttled_usec), (4, 99));
        assert_eq!(
            (m.memory.usage, m.memory.usage_limit, m.memory.max_usage),
            (4096, 8192, 6000)
        );
        assert_eq!(m.memory.swap_limit, 0, "max means no limit");
        assert_eq!((m.memory.anon, m.memory.file), (7, 9));
        assert_eq!(m.memory.workingset_refault, 3);
        assert_eq!((m.memory_events.oom, m.memory_events.oom_kill), (2, 1));
        assert_eq!(m.memory_events.max, 5);
        assert_eq!(m.io.usage.len(), 1);
        assert_eq!(
            (
                m.io.usage[0].major,
                m.io.usage[0].wbytes,
                m.io.usage[0].wios
            ),
            (254, 8192, 2)
        );
        assert_eq!(m.hugetlb.len(), 1, "rsvd files are not a page size");
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
        assert_eq!(
            (m.hugetlb[0].current, m.hugetlb[0].max, m.hugetlb[0].failcnt),
            (4194304, 8388608, 3)
        );
    }

    #[test]
    fn a_pid_without_a_v2_line_is_an_error() {
        let t = tempfile::tempdir().expect("tempdir");
        let roots = Roots {
            proc: t.path().join("proc"),
            cgroup: t.path().join("cg"),
        };
        w(&roots.proc.join("7/cgroup"), "3:memory:/x\n");
        assert!(matches!(
            collect(&roots, 7),
            Err(StatsError::NoV2 { pid: 7 })
        ));
    }
}
