//! Task metrics from cgroup v1, in containerd's `io.containerd.cgroups.v1.Metrics`
//! (a unified host gets `io.containerd.cgroups.v2.Metrics` from `stats_v2`).
//!
//! The container's cgroups are read off `/proc/<init>/cgroup`, so the
//! metrics follow wherever the runtime put it (spec `cgroupsPath` or the
//! runtime's default). Both roots are injectable for tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, HugetlbStat, MemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat,
    Throttle,
};

/// Errors collecting metrics.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("reading the cgroups of pid {pid} from {path}")]
    ProcCgroup {
        pid: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pid {pid} is in no cgroup v1 hierarchy (hybrid or v1 cgroups expected)")]
    NoV1 { pid: i32 },
    #[error("pid {pid} has no cgroup v2 (0::) line in /proc/{pid}/cgroup")]
    NoV2 { pid: i32 },
}

/// Where `/proc` and the cgroup v1 hierarchies are.
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    pub cgroup: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            proc: "/proc".into(),
            cgroup: "/sys/fs/cgroup".into(),
        }
    }
}

/// controller -> cgroup path, from `/proc/<pid>/cgroup`'s v1 lines.
fn cgroup_paths(roots: &Roots, pid: i32) -> Result<HashMap<String, String>, StatsError> {
    let path = roots.proc.join(pid.to_string()).join("cgroup");
    let text = std::fs::read_to_string(&path).map_err(|source| StatsError::ProcCgroup {
        pid,
        path,
        source,
    })?;
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, cg) = (parts.next(), parts.next(), parts.next());
        let (Some(ctrls), Some(cg)) = (ctrls, cg) else {
            continue;
        };
        for c in ctrls.split(',').filter(|c| !c.is_empty()) {
            map.insert(c.to_owned(), cg.to_owned());
        }
    }
    if map.is_empty() {
        return Err(StatsError::NoV1 { pid });
    }
    Ok(map)
}

fn read_u64(p: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

fn read_kv(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// The container's metrics, from the cgroups of its init `pid`.
pub fn collect(roots: &Roots, pid: i32) -> Result<Metrics, StatsError> {
    let paths = cgroup_paths(roots, pid)?;
    let dir = |ctrl: &str| -> Option<PathBuf> {
        let cg = paths.get(ctrl)?;
        let d = roots.cgroup.join(ctrl).join(cg.trim_start_matches('/'));
        d.is_dir().then_some(d)
    };
    let mut m = Metrics::new();
    if let Some(d) = dir("pids") {
        m.pids = Some(PidsStat {
            current: read_u64(&d.join("pids.current")).unwrap_or(0),
            limit: read_u64(&d.join("pids.max"))
                .filter(|l| *l != u64::MAX)
                .unwrap_or(0),
            ..Default::default()
        })
        .into();
    }
    if let Some(d) = dir("cpuacct") {
        let per_cpu = std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // cpuacct.stat is in USER_HZ ticks; containerd reports nanoseconds.
        let stat = read_kv(&d.join("cpuacct.stat"));
        let tick_ns = 1_000_000_000 / clock_ticks();
        let usage = CPUUsage {
            total: read_u64(&d.join("cpuacct.usage")).unwrap_or(0),
            user: stat.get("user").copied().unwrap_or(0) * tick_ns,
            kernel: stat.get("system").copied().unwrap_or(0) * tick_ns,
            per_cpu,
            ..Default::default()
        };
        let throttling = dir("cpu").map(|c| {
            let s = read_kv(&c.join("cpu.stat"));
            Throttle {
                periods: s.get("nr_periods").copied().unwrap_or(0),
                throttled_periods: s.get("nr_throttled").copied().unwrap_or(0),
                throttled_time: s.get("throttled_time").copied().unwrap_or(0),
                ..Default::default()
            }
        });
        m.cpu = Some(CPUStat {
            usage: Some(usage).into(),
            throttling: throttling.into(),
            ..Default::default()
        })
        .into();
    }
    if let Some(d) = dir("memory") {
        m.memory = Some(memory(&d)).into();
        let oom = read_kv(&d.join("memory.oom_control"));
        m.memory_oom_control = Some(MemoryOomControl {
            oom_kill_disable: oom.get("oom_kill_disable").copied().unwrap_or(0),
            under_oom: oom.get("under_oom").copied().unwrap_or(0),
            oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
            ..Default::default()
        })
        .into();
    }
    if let Some(d) = dir("hugetlb") {
        m.hugetlb = hugetlb(&d);
    }
    Ok(m)
}

fn entry(d: &Path, prefix: &str) -> Option<MemoryEntry> {
    let f = |name: &str| read_u64(&d.join(format!("{prefix}.{name}")));
    Some(MemoryEntry {
        usage: f("usage_in_bytes")?,
        limit: f("limit_in_bytes").unwrap_or(0),
        max: f("max_usage_in_bytes").unwrap_or(0),
        failcnt: f("failcnt").unwrap_or(0),
        ..Default::default()
    })
}

fn memory(d: &Path) -> MemoryStat {
    let s = read_kv(&d.join("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    MemoryStat {
        cache: g("cache"),
        rss: g("rss"),
        rss_huge: g("rss_huge"),
        mapped_file: g("mapped_file"),
        dirty: g("dirty"),
        writeback: g("writeback"),
        pg_pg_in: g("pgpgin"),
        pg_pg_out: g("pgpgout"),
        pg_fault: g("pgfault"),
        pg_maj_fault: g("pgmajfault"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        hierarchical_memory_limit: g("hierarchical_memory_limit"),
        hierarchical_swap_limit: g("hierarchical_memsw_limit"),
        total_cache: g("total_cache"),
        total_rss: g("total_rss"),
        total_rss_huge: g("total_rss_huge"),
        total_mapped_file: g("total_mapped_file"),
        total_dirty: g("total_dirty"),
        total_writeback: g("total_writeback"),
        total_pg_pg_in: g("total_pgpgin"),
        total_pg_pg_out: g("total_pgpgout"),
        total_pg_fault: g("total_pgfault"),
        total_pg_maj_fault: g("total_pgmajfault"),
        total_inactive_anon: g("total_inactive_anon"),
        total_active_anon: g("total_active_anon"),
        total_inactive_file: g("total_inactive_file"),
        total_active_file: g("total_active_file"),
        total_unevictable: g("total_unevictable"),
        usage: entry(d, "memory").into(),
        swap: entry(d, "memory.memsw").into(),
        kernel: entry(d, "memory.kmem").into(),
        kernel_tcp: entry(d, "memory.kmem.tcp").into(),
        ..Default::default()
    }
}

fn hugetlb(d: &Path) -> Vec<HugetlbStat> {
    let mut sizes: Vec<String> = std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("hugetlb.")
                .and_then(|r| r.strip_suffix(".usage_in_bytes"))
                .map(str::to_owned)
        })
        .collect();
    sizes.sort();
    sizes
        .into_iter()
        .map(|size| {
            let f = |n: &str| read_u64(&d.join(format!("hugetlb.{size}.{n}"))).unwrap_or(0);
            HugetlbStat {
                usage: f("usage_in_bytes"),
                max: f("max_usage_in_bytes"),
                failcnt: f("failcnt"),
                pagesize: size.clone(),
                ..Default::default()
            }
        })
        .collect()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a configuration value; no memory is touched.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, s).expect("write");
    }

    #[test]
    fn reads_a_fake_v1_tree() {
        let t = tempfile::tempdir().expect("tempdir");
        let roots = Roots {
            proc: t.path().join("proc"),
            cgroup: t.path().join("cg"),
        };
        w(
            &roots.proc.join("42/cgroup"),
            "12:pids:/k8s/c1\n4:cpu,cpuacct:/k8s/c1\n3:memory:/k8s/c1\n2:hugetlb:/k8s/c1\n0::/k8s/c1\n",
        );
        let cg = &roots.cgroup;
        w(&cg.join("pids/k8s/c1/pids.current"), "3\n");
        w(&cg.join("pids/k8s/c1/pids.max"), "max\n");
        w(&cg.join("cpuacct/k8s/c1/cpuacct.usage"), "5000\n");
        w(
            &cg.join("cpuacct/k8s/c1/cpuacct.usage_percpu"),
            "2000 3000 \n",
        );
        w(
            &cg.join("cpuacct/k8s/c1/cpuacct.stat"),
            "user 2\nsystem 1\n",
        );
        w(
            &cg.join("cpu/k8s/c1/cpu.stat"),
            "nr_periods 10\nnr_throttled 4\nthrottled_time 99\n",
        );
        w(&cg.join("memory/k8s/c1/memory.usage_in_bytes"), "4096\n");
        w(&cg.join("memory/k8s/c1/memory.limit_in_bytes"), "8192\n");
        w(
            &cg.join("memory/k8s/c1/memory.stat"),
            "cache 7\nrss 9\ntotal_rss 11\n",
        );
        w(
            &cg.join("memory/k8s/c1/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        w(
            &cg.join("hugetlb/k8s/c1/hugetlb.2MB.usage_in_bytes"),
            "2097152\n",
        );

        let m = collect(&roots, 42).expect("metrics");
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.pids.limit, 0, "max means no limit");
        assert_eq!(m.cpu.usage.total, 5000);
        assert_eq!(m.cpu.usage.per_cpu, vec![2000, 3000]);
        assert_eq!(m.cpu.usage.user, 2 * (1_000_000_000 / clock_ticks()));
        assert_eq!(m.cpu.throttling.throttled_periods, 4);
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, 8192);
        assert_eq!(
            (m.memory.cache, m.memory.rss, m.memory.total_rss),
            (7, 9, 11)
        );
        assert!(m.memory.swap.is_none(), "no memsw files: no swap entry");
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
        assert_eq!(m.hugetlb[0].usage, 2097152);
    }

    #[test]
    fn pure_v2_pid_is_an_error() {
        let t = tempfile::tempdir().expect("tempdir");
        let roots = Roots {
            proc: t.path().join("proc"),
            cgroup: t.path().join("cg"),
        };
        w(&roots.proc.join("7/cgroup"), "0::/x\n");
        assert!(matches!(
            collect(&roots, 7),
            Err(StatsError::NoV1 { pid: 7 })
        ));
        assert!(matches!(
            collect(&roots, 8),
            Err(StatsError::ProcCgroup { pid: 8, .. })
        ));
    }
}
