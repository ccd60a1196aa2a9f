//! `events` and `update`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use libcgroups::common::{AnyCgroupManager, CgroupManager, ControllerOpt, FreezerState};
use libcgroups::stats::Stats;
use libcontainer::container::ContainerStatus;
use liboci_cli::{Events, Update};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use serde_json::json;

use super::{cgroup_manager, load, read_json_arg, Ctx};
use crate::meta::ContainerMeta;

/// runc's stats event data (runc `types.Stats`) from libcgroups' numbers.
/// A hugetlb entry's `max` is the peak usage, as in runc, and omitted when
/// the kernel keeps none (cgroup v2: runc's `omitempty`); cnfbox adds the
/// page size's `limit` in bytes, which `max` is easily taken for.
fn runc_stats(s: &Stats, hugetlb_limits: &HashMap<String, u64>) -> serde_json::Value {
    let mem = |d: &libcgroups::stats::MemoryData| json!({"usage": d.usage, "max": d.max_usage, "failcnt": d.fail_count, "limit": d.limit});
    let hugetlb: serde_json::Map<String, serde_json::Value> = s
        .hugetlb
        .iter()
        .map(|(k, v)| {
            let mut entry = json!({"usage": v.usage, "failcnt": v.fail_count});
            if v.max_usage != 0 {
                entry["max"] = json!(v.max_usage);
            }
            if let Some(limit) = hugetlb_limits.get(k) {
                entry["limit"] = json!(limit);
            }
            (k.clone(), entry)
        })
        .collect();
    let blkio = |entries: &[libcgroups::stats::BlkioDeviceStat]| -> Vec<serde_json::Value> {
        entries
            .iter()
            .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op_type.as_deref().unwrap_or(""), "value": e.value}))
            .collect()
    };
    json!({
        "cpu": {
            "usage": {
                "total": s.cpu.usage.usage_total,
                "percpu": s.cpu.usage.per_core_usage_total,
                "kernel": s.cpu.usage.usage_kernel,
                "user": s.cpu.usage.usage_user,
            },
            "throttling": {
                "periods": s.cpu.throttling.periods,
                "throttledPeriods": s.cpu.throttling.throttled_periods,
                "throttledTime": s.cpu.throttling.throttled_time,
            }
        },
        "memory": {
            "cache": s.memory.cache,
            "usage": mem(&s.memory.memory),
            "swap": mem(&s.memory.memswap),
            "kernel": mem(&s.memory.kernel),
            "kernelTCP": mem(&s.memory.kernel_tcp),
            "raw": s.memory.stats,
        },
        "pids": {"current": s.pids.current, "limit": s.pids.limit},
        "hugetlb": hugetlb,
        "blkio": {
            "ioServiceBytesRecursive": blkio(&s.blkio.service_bytes),
            "ioServicedRecursive": blkio(&s.blkio.serviced),
        },
    })
}

/// The container's hugepage limits by page size (`2MB`): cnfbox's record
/// where it set them up, else the kept spec's.
fn hugetlb_limits(
    c: &libcontainer::container::Container,
    meta: &ContainerMeta,
) -> HashMap<String, u64> {
    if let Some(h) = &meta.hugepages {
        return h
            .limits
            .iter()
            .map(|l| (l.page.cgroup_name(), l.bytes))
            .collect();
    }
    let Ok(spec) = oci_spec::runtime::Spec::load(c.bundle().join("config.json")) else {
        return HashMap::new();
    };
    let sys = std::path::Path::new("/sys");
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.hugepage_limits().clone())
        .and_then(|l| crate::numa::hugetlb::validate(&l, sys).ok())
        .map(|l| l.iter().map(|l| (l.page.cgroup_name(), l.bytes)).collect())
        .unwrap_or_default()
}

pub fn events(ctx: &Ctx, a: &Events) -> anyhow::Result<()> {
    let (c, meta) = load(ctx, &a.container_id)?;
    let manager = cgroup_manager(&c, &meta)?;
    loop {
        let (c, _) = load(ctx, &a.container_id)?;
        if !matches!(
            c.status(),
            ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Created
        ) {
            anyhow::bail!("container {} is not running", a.container_id);
        }
        let mut stats = manager
            .stats()
            .with_context(|| format!("read cgroup stats of {}", a.container_id))?;
        if let Some(h) = &meta.hugepages {
            // Where cnfbox enforces hugetlb, its numbers live on cgroup2.
            for (size, usage, failcnt) in h.stats() {
                let entry = stats.hugetlb.entry(size).or_default();
                entry.usage = usage;
                entry.fail_count = failcnt;
            }
        }
        let limits = hugetlb_limits(&c, &meta);
        let event =
            json!({"type": "stats", "id": a.container_id, "data": runc_stats(&stats, &limits)});
        println!("{event}");
        if a.stats {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(u64::from(a.interval.max(1))));
    }
}

/// The resources `update` applies: from `--resources` or from the flags.
fn requested(a: &Update) -> anyhow::Result<LinuxResources> {
    if let Some(path) = &a.resources {
        return read_json_arg(path);
    }
    let mut r = LinuxResourcesBuilder::default();
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    macro_rules! set {
        ($b:ident, $any:ident, $field:ident, $val:expr) => {
            if let Some(v) = $val {
                $b = $b.$field(v);
                $any = true;
            }
        };
    }
    set!(cpu, any_cpu, shares, a.cpu_share);
    set!(cpu, any_cpu, quota, a.cpu_quota.map(|q| q as i64));
    set!(cpu, any_cpu, period, a.cpu_period);
    set!(
        cpu,
        any_cpu,
        realtime_runtime,
        a.cpu_rt_runtime.map(|q| q as i64)
    );
    set!(cpu, any_cpu, realtime_period, a.cpu_rt_period);
    set!(cpu, any_cpu, cpus, a.cpuset_cpus.clone());
    set!(cpu, any_cpu, mems, a.cpuset_mems.clone());
    if any_cpu {
        r = r.cpu(cpu.build()?);
    }
    let mut mem = LinuxMemoryBuilder::default();
    let mut any_mem = false;
    set!(mem, any_mem, limit, a.memory.map(|m| m as i64));
    set!(
        mem,
        any_mem,
        reservation,
        a.memory_reservation.map(|m| m as i64)
    );
    set!(mem, any_mem, swap, a.memory_swap);
    if any_mem {
        r = r.memory(mem.build()?);
    }
    if let Some(limit) = a.pids_limit {
        r = r.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    Ok(r.build()?)
}

pub fn update(ctx: &Ctx, a: &Update) -> anyhow::Result<()> {
    let mut resources = requested(a)?;
    let (c, meta) = load(ctx, &a.container_id)?;
    let context = || format!("update resources of container {}", a.container_id);
    if let Some(record) = &meta.numa {
        check_pin(record, &resources).with_context(context)?;
    }
    hugepage_update(&meta, &mut resources).with_context(context)?;
    let manager = cgroup_manager(&c, &meta)?;
    crate::devices::rules::for_update(&manager, &c.bundle().join("config.json"), &mut resources)
        .with_context(context)?;
    // libcgroups' apply allows the withheld devices again (v1) or detaches
    // cnfbox's program (v2): the pod is frozen until they are denied again
    // (`devices::withheld`), so nothing of its opens one in between.
    let init = match c.status() {
        ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused => c.pid(),
        _ => None,
    };
    let apply = || -> anyhow::Result<()> {
        manager.apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })?;
        // libcgroups' systemd manager attaches no device program: cnfbox
        // puts the container's own back on its scope (`devices::scope`).
        if let (AnyCgroupManager::Systemd(_), Some(init)) = (&manager, init) {
            use crate::devices::scope;
            let rel = scope::cgroup_of_pid(std::path::Path::new("/proc"), init.as_raw())?;
            scope::attach(&scope::dir_of(&rel), resources.devices())?;
        }
        Ok(())
    };
    let Some(init) = init else {
        // Nothing of the pod runs to open a device.
        return apply().with_context(context);
    };
    let was_paused = c.status() == ContainerStatus::Paused;
    manager
        .freeze(FreezerState::Frozen)
        .with_context(|| format!("freeze container {} for the update", a.container_id))?;
    let applied = apply();
    let denied = crate::devices::withheld::denied(&meta.granted_devices);
    // A pod whose withheld devices could not be denied again stays frozen:
    // thawing it would hand it the host's console.
    crate::devices::withheld::deny(std::path::Path::new("/proc"), init.as_raw(), &denied)
        .with_context(|| {
            format!(
                "withhold devices of container {} after the update (it stays frozen)",
                a.container_id
            )
        })?;
    if !was_paused {
        manager
            .freeze(FreezerState::Thawed)
            .with_context(|| format!("thaw container {} after the update", a.container_id))?;
    }
    applied.with_context(context)
}

/// An update must not move a NUMA-pinned container off its node.
fn check_pin(record: &crate::numa::Record, r: &LinuxResources) -> anyhow::Result<()> {
    use crate::numa::{parse_list, reserved_cpus, Topology};
    let Some(cpu) = r.cpu() else {
        return Ok(());
    };
    if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
        if parse_list("linux.resources.cpu.mems", mems)? != [record.node].into() {
            anyhow::bail!(
                "linux.resources.cpu.mems {mems:?}: refused, the container is pinned to NUMA node {}{} \
                 (its memory policy and hugetlbfs pages stay there; it is not re-bound)",
                record.node,
                pinned_from(record)
            );
        }
    }
    if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
        let wanted = parse_list("linux.resources.cpu.cpus", cpus)?;
        let topo = Topology::read(std::path::Path::new("/sys"))?;
        let reserved = reserved_cpus(&idmap::EtcRoot::default().config_path())?;
        let allowed: std::collections::BTreeSet<u32> = topo
            .nodes
            .get(&record.node)
            .cloned()
            .unwrap_or_default()
            .difference(&reserved)
            .copied()
            .collect();
        if !wanted.is_subset(&allowed) {
            anyhow::bail!(
                "linux.resources.cpu.cpus {cpus:?}: refused, the container is pinned to NUMA node {}{} \
                 (CPUs {}; its memory policy and hugetlbfs pages stay there; it is not re-bound)",
                record.node,
                pinned_from(record),
                crate::numa::format_list(&allowed)
            );
        }
    }
    Ok(())
}

/// ` from <where>` of a record that says where its node came from.
fn pinned_from(record: &crate::numa::Record) -> String {
    if record.from.is_empty() {
        String::new()
    } else {
        format!(" from {}", record.from)
    }
}

/// Hugepage limits where cnfbox enforces them (the cgroup2 tree of a hybrid
/// host) are set here and taken out of what libcontainer applies.
fn hugepage_update(meta: &ContainerMeta, r: &mut LinuxResources) -> anyhow::Result<()> {
    let Some(limits) = r.hugepage_limits().clone().filter(|l| !l.is_empty()) else {
        return Ok(());
    };
    let sys = std::path::Path::new("/sys");
    let limits = crate::numa::hugetlb::validate(&limits, sys)?;
    if let crate::numa::hugetlb::Enforcer::Cgroup2(_) =
        crate::numa::hugetlb::enforcer(&sys.join("fs/cgroup"))
    {
        let Some(dir) = meta.hugepages.as_ref().and_then(|h| h.cgroup2.clone()) else {
            anyhow::bail!(
                "linux.resources.hugepageLimits: the container was created without hugepage limits; \
                 on this host they can only be set at create"
            );
        };
        crate::numa::hugetlb::Cgroup2 { dir, limits }.set_limits()?;
        r.set_hugepage_limits(None);
    } else {
        // libcontainer writes `hugetlb.<pageSize>.max` as given: on a
        // unified host `2048KB` must become the kernel's `2MB`.
        r.set_hugepage_limits(Some(crate::numa::hugetlb::named(&limits)));
    }
    Ok(())
}
