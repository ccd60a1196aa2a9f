//! Task metrics from `cnfbox events --stats`: libcgroups' `stats()` in the
//! runtime, which reads cgroup v1, hybrid and v2 hosts alike, follows the
//! container's `cgroupsPath` and systemd driver, and adds the hugetlb
//! numbers cnfbox keeps on the cgroup2 tree of a hybrid host. The shim does
//! not link libcgroups (its RSS is held to half of containerd-shim-runc-v2's;
//! one `cnfbox` run per Stats call costs nothing while the shim idles).
//!
//! The runtime prints runc's stats JSON; this module turns it into
//! containerd's `io.containerd.cgroups.v1.Metrics`, or on a unified host
//! `io.containerd.cgroups.v2.Metrics` (what containerd's runc shim sends
//! there). libcgroups reports values in each version's own units: v1 CPU
//! user/system time in USER_HZ ticks, v2 CPU times in microseconds.

use std::collections::HashMap;
use std::path::Path;

use containerd_shim::protos::cgroups::metrics as v1m;
use containerd_shim::protos::cgroups_v2::metrics as v2m;
use serde::Deserialize;

/// Whether `cgroup_root` (`/sys/fs/cgroup`) is a cgroup2 mount.
pub fn is_unified(cgroup_root: &Path) -> bool {
    cgroup_root.join("cgroup.controllers").exists()
}

/// One `{"type":"stats","id":..,"data":{..}}` line of `cnfbox events`.
#[derive(Debug, Default, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub data: Stats,
}

/// runc's stats (`types.Stats`), the parts cnfbox prints.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub hugetlb: HashMap<String, Hugetlb>,
    pub blkio: Blkio,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    pub total: u64,
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Memory {
    pub cache: u64,
    pub usage: MemoryData,
    pub swap: MemoryData,
    pub kernel: MemoryData,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryData,
    /// `memory.stat`, key by key.
    pub raw: HashMap<String, u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MemoryData {
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
    pub limit: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Pids {
    pub current: u64,
    pub limit: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Hugetlb {
    pub usage: u64,
    /// Peak usage (cgroup v1 only; absent on v2).
    pub max: u64,
    pub failcnt: u64,
    /// The page size's limit in bytes (cnfbox's addition to runc's entry).
    pub limit: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Blkio {
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

/// A `max` limit (u64::MAX) is "no limit": 0 in the metrics, as
/// containerd sends it.
fn limit(v: u64) -> u64 {
    if v == u64::MAX {
        0
    } else {
        v
    }
}

/// Hugepage sizes in order, so that metrics compare equal run to run.
fn sorted<T>(m: &HashMap<String, T>) -> Vec<(&String, &T)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// containerd's v1 metrics of runc stats read on cgroup v1.
pub fn v1(s: &Stats) -> v1m::Metrics {
    let mut m = v1m::Metrics::new();
    m.pids = Some(v1m::PidsStat {
        current: s.pids.current,
        limit: limit(s.pids.limit),
        ..Default::default()
    })
    .into();
    // cpuacct.stat is in USER_HZ ticks; containerd reports nanoseconds.
    let tick_ns = 1_000_000_000 / clock_ticks();
    m.cpu = Some(v1m::CPUStat {
        usage: Some(v1m::CPUUsage {
            total: s.cpu.usage.total,
            user: s.cpu.usage.user * tick_ns,
            kernel: s.cpu.usage.kernel * tick_ns,
            per_cpu: s.cpu.usage.percpu.clone(),
            ..Default::default()
        })
        .into(),
        throttling: Some(v1m::Throttle {
            periods: s.cpu.throttling.periods,
            throttled_periods: s.cpu.throttling.throttled_periods,
            throttled_time: s.cpu.throttling.throttled_time,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    m.memory = Some(memory_v1(&s.memory)).into();
    m.hugetlb = sorted(&s.hugetlb)
        .into_iter()
        .map(|(size, h)| v1m::HugetlbStat {
            usage: h.usage,
            max: h.max,
            failcnt: h.failcnt,
            pagesize: size.clone(),
            ..Default::default()
        })
        .collect();
    let blkio = |entries: &[BlkioEntry]| -> Vec<v1m::BlkIOEntry> {
        entries
            .iter()
            .map(|e| v1m::BlkIOEntry {
                op: e.op.clone(),
                major: e.major,
                minor: e.minor,
                value: e.value,
                ..Default::default()
            })
            .collect()
    };
    m.blkio = Some(v1m::BlkIOStat {
        io_service_bytes_recursive: blkio(&s.blkio.io_service_bytes_recursive),
        io_serviced_recursive: blkio(&s.blkio.io_serviced_recursive),
        ..Default::default()
    })
    .into();
    m
}

fn entry(d: &MemoryData) -> v1m::MemoryEntry {
    v1m::MemoryEntry {
        usage: d.usage,
        limit: d.limit,
        max: d.max,
        failcnt: d.failcnt,
        ..Default::default()
    }
}

fn memory_v1(mem: &Memory) -> v1m::MemoryStat {
    let g = |k: &str| mem.raw.get(k).copied().unwrap_or(0);
    v1m::MemoryStat {
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
        usage: Some(entry(&mem.usage)).into(),
        swap: Some(entry(&mem.swap)).into(),
        kernel: Some(entry(&mem.kernel)).into(),
        kernel_tcp: Some(entry(&mem.kernel_tcp)).into(),
        ..Default::default()
    }
}

/// containerd's `MemoryOomControl` of a v1 memory cgroup's
/// `memory.oom_control` (`oom_kill_disable`, `under_oom`, `oom_kill`:
/// cgroup-v1/memory.rst, "OOM Control"), which libcgroups' stats leave
/// out. containerd's CRI reports `container_oom_events_total` from its
/// `oom_kill` on v1 (ListPodSandboxMetrics), as runc's shim sends it.
pub fn oom_control_v1(text: &str) -> v1m::MemoryOomControl {
    let mut c = v1m::MemoryOomControl::new();
    for line in text.lines() {
        let mut kv = line.split_whitespace();
        let (Some(key), Some(value)) = (kv.next(), kv.next().and_then(|v| v.parse().ok())) else {
            continue;
        };
        match key {
            "oom_kill_disable" => c.oom_kill_disable = value,
            "under_oom" => c.under_oom = value,
            "oom_kill" => c.oom_kill = value,
            _ => {}
        }
    }
    c
}

/// containerd's v2 metrics of runc stats read on a unified host.
pub fn v2(s: &Stats) -> v2m::Metrics {
    let mut m = v2m::Metrics::new();
    m.pids = Some(v2m::PidsStat {
        current: s.pids.current,
        limit: limit(s.pids.limit),
        ..Default::default()
    })
    .into();
    m.cpu = Some(v2m::CPUStat {
        usage_usec: s.cpu.usage.total,
        user_usec: s.cpu.usage.user,
        system_usec: s.cpu.usage.kernel,
        nr_periods: s.cpu.throttling.periods,
        nr_throttled: s.cpu.throttling.throttled_periods,
        throttled_usec: s.cpu.throttling.throttled_time,
        ..Default::default()
    })
    .into();
    m.memory = Some(memory_v2(&s.memory)).into();
    // libcgroups counts memory.events' `oom` as the memory failcnt.
    m.memory_events = Some(v2m::MemoryEvents {
        oom: s.memory.usage.failcnt,
        ..Default::default()
    })
    .into();
    let io = io_v2(&s.blkio);
    if !io.is_empty() {
        m.io = Some(v2m::IOStat {
            usage: io,
            ..Default::default()
        })
        .into();
    }
    m.hugetlb = sorted(&s.hugetlb)
        .into_iter()
        .map(|(size, h)| v2m::HugeTlbStat {
            current: h.usage,
            // containerd's v2 `max` is `hugetlb.<size>.max`, the limit.
            max: limit(h.limit),
            failcnt: h.failcnt,
            pagesize: size.clone(),
            ..Default::default()
        })
        .collect();
    m
}

fn memory_v2(mem: &Memory) -> v2m::MemoryStat {
    let g = |k: &str| mem.raw.get(k).copied().unwrap_or(0);
    v2m::MemoryStat {
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
        usage: mem.usage.usage,
        usage_limit: limit(mem.usage.limit),
        swap_usage: mem.swap.usage,
        swap_limit: limit(mem.swap.limit),
        max_usage: mem.usage.max,
        swap_max_usage: mem.swap.max,
        ..Default::default()
    }
}

/// One entry per device of libcgroups' `io.stat` reading (bytes and ios,
/// read and write).
fn io_v2(b: &Blkio) -> Vec<v2m::IOEntry> {
    let mut devices: Vec<(u64, u64)> = b
        .io_service_bytes_recursive
        .iter()
        .chain(&b.io_serviced_recursive)
        .map(|e| (e.major, e.minor))
        .collect();
    devices.sort_unstable();
    devices.dedup();
    let value = |list: &[BlkioEntry], dev: (u64, u64), op: &str| {
        list.iter()
            .find(|e| (e.major, e.minor) == dev && e.op.eq_ignore_ascii_case(op))
            .map_or(0, |e| e.value)
    };
    devices
        .into_iter()
        .map(|dev| v2m::IOEntry {
            major: dev.0,
            minor: dev.1,
            rbytes: value(&b.io_service_bytes_recursive, dev, "read"),
            wbytes: value(&b.io_service_bytes_recursive, dev, "write"),
            rios: value(&b.io_serviced_recursive, dev, "read"),
            wios: value(&b.io_serviced_recursive, dev, "write"),
            ..Default::default()
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

    /// What `cnfbox events --stats` printed for a busybox container on a
    /// unified host (trimmed).
    const V2: &str = r#"{"type":"stats","id":"c1","data":{
        "cpu":{"usage":{"total":7730,"percpu":[],"kernel":3343,"user":4387},
               "throttling":{"periods":10,"throttledPeriods":2,"throttledTime":500}},
        "memory":{"cache":0,"usage":{"usage":4096000,"max":5000000,"failcnt":1,"limit":18446744073709551615},
                  "swap":{"usage":0,"max":0,"failcnt":0,"limit":1048576},
                  "kernel":{"usage":0,"max":0,"failcnt":0,"limit":0},
                  "kernelTCP":{"usage":0,"max":0,"failcnt":0,"limit":0},
                  "raw":{"anon":1000,"file":2000,"inactive_file":300,"workingset_refault_anon":1,"workingset_refault_file":2}},
        "pids":{"current":3,"limit":18446744073709551615},
        "hugetlb":{"2MB":{"usage":2097152,"failcnt":1,"limit":4194304},"1GB":{"usage":0,"failcnt":0}},
        "blkio":{"ioServiceBytesRecursive":[{"major":8,"minor":0,"op":"read","value":4096},{"major":8,"minor":0,"op":"write","value":512}],
                 "ioServicedRecursive":[{"major":8,"minor":0,"op":"read","value":2},{"major":8,"minor":0,"op":"write","value":1}]}}}"#;

    #[test]
    fn v2_metrics_from_the_runtimes_stats() {
        let e: Event = serde_json::from_str(V2).expect("json");
        let m = v2(&e.data);
        let pids = m.pids.as_ref().expect("pids");
        assert_eq!((pids.current, pids.limit), (3, 0), "max is no limit");
        let cpu = m.cpu.as_ref().expect("cpu");
        assert_eq!(
            (cpu.usage_usec, cpu.user_usec, cpu.system_usec),
            (7730, 4387, 3343)
        );
        assert_eq!((cpu.nr_throttled, cpu.throttled_usec), (2, 500));
        let mem = m.memory.as_ref().expect("memory");
        assert_eq!(
            (mem.usage, mem.usage_limit, mem.max_usage),
            (4_096_000, 0, 5_000_000)
        );
        assert_eq!((mem.anon, mem.file, mem.inactive_file), (1000, 2000, 300));
        assert_eq!(mem.workingset_refault, 3);
        assert_eq!(mem.swap_limit, 1_048_576);
        assert_eq!(m.memory_events.as_ref().expect("events").oom, 1);
        let io = &m.io.as_ref().expect("io").usage;
        assert_eq!(io.len(), 1);
        assert_eq!(
            (
                io[0].major,
                io[0].rbytes,
                io[0].wbytes,
                io[0].rios,
                io[0].wios
            ),
            (8, 4096, 512, 2, 1)
        );
        let sizes: Vec<_> = m.hugetlb.iter().map(|h| h.pagesize.as_str()).collect();
        assert_eq!(sizes, ["1GB", "2MB"]);
        assert_eq!(
            (m.hugetlb[1].current, m.hugetlb[1].max),
            (2_097_152, 4_194_304)
        );
    }

    #[test]
    fn v1_oom_control_from_memory_oom_control() {
        let c = oom_control_v1("oom_kill_disable 0\nunder_oom 1\noom_kill 3\n");
        assert_eq!((c.oom_kill_disable, c.under_oom, c.oom_kill), (0, 1, 3));
        // Kernels before 4.13 have no oom_kill line.
        let old = oom_control_v1("oom_kill_disable 1\nunder_oom 0\n");
        assert_eq!((old.oom_kill_disable, old.oom_kill), (1, 0));
    }

    #[test]
    fn v1_metrics_from_the_runtimes_stats() {
        let line = r#"{"type":"stats","id":"c1","data":{
            "cpu":{"usage":{"total":123456,"percpu":[100,200],"kernel":2,"user":3},
                   "throttling":{"periods":4,"throttledPeriods":1,"throttledTime":99}},
            "memory":{"cache":10,"usage":{"usage":8192,"max":9000,"failcnt":2,"limit":1048576},
                      "swap":{"usage":8192,"max":0,"failcnt":0,"limit":0},
                      "raw":{"cache":10,"rss":4096,"total_inactive_file":77,"pgfault":5}},
            "pids":{"current":2,"limit":100},
            "hugetlb":{"2MB":{"usage":2097152,"max":2097152,"failcnt":0}},
            "blkio":{"ioServiceBytesRecursive":[{"major":8,"minor":0,"op":"Read","value":10}]}}}"#;
        let e: Event = serde_json::from_str(line).expect("json");
        let m = v1(&e.data);
        let pids = m.pids.as_ref().expect("pids");
        assert_eq!((pids.current, pids.limit), (2, 100));
        let usage = m.cpu.usage.as_ref().expect("usage");
        let tick_ns = 1_000_000_000 / clock_ticks();
        assert_eq!(usage.total, 123_456);
        assert_eq!((usage.user, usage.kernel), (3 * tick_ns, 2 * tick_ns));
        assert_eq!(usage.per_cpu, [100, 200]);
        assert_eq!(m.cpu.throttling.as_ref().expect("t").throttled_time, 99);
        let mem = m.memory.as_ref().expect("memory");
        assert_eq!(
            (mem.cache, mem.rss, mem.total_inactive_file, mem.pg_fault),
            (10, 4096, 77, 5)
        );
        let u = mem.usage.as_ref().expect("usage");
        assert_eq!(
            (u.usage, u.limit, u.max, u.failcnt),
            (8192, 1_048_576, 9000, 2)
        );
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
        assert_eq!(m.hugetlb[0].usage, 2_097_152);
        let b = &m.blkio.io_service_bytes_recursive;
        assert_eq!((b[0].op.as_str(), b[0].value), ("Read", 10));
    }

    #[test]
    fn missing_parts_read_as_zero() {
        let e: Event =
            serde_json::from_str(r#"{"type":"stats","id":"x","data":{}}"#).expect("json");
        assert_eq!(v2(&e.data).pids.current, 0);
        assert!(v2(&e.data).io.is_none());
    }
}
