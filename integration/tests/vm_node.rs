//! A real node's layout, in the VM lane (scripts/vm-test.sh): cgroup v2
//! only and two NUMA nodes. A container pinned to node 1 runs on node 1's
//! CPUs with its memory bound there and gets its hugepages from node 1's
//! pool only; a hint for a node without the free pages is refused; hugetlb
//! limits hold on cgroup v2.
//!
//! Every test skips loudly outside the lane's guest (`CNFBOX_VM_LANE=1`)
//! or when the guest lacks what it checks.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Mutex;

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use serde_json::json;

const MIB: u64 = 1 << 20;

/// Tests in this file read and change the nodes' hugepage pools one at a time.
static POOL: Mutex<()> = Mutex::new(());

fn pool_file(node: u32, file: &str) -> String {
    format!("/sys/devices/system/node/node{node}/hugepages/hugepages-2048kB/{file}")
}

fn read_u64(path: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn free(node: u32) -> u64 {
    read_u64(&pool_file(node, "free_hugepages"))
}

/// True in the lane's guest with cgroup v2 only and node 1 having CPUs and
/// at least `pages` free 2 MiB pages; otherwise prints why not.
fn in_lane(test: &str, pages: u64) -> bool {
    if !can_run(test) {
        return false;
    }
    if std::env::var_os("CNFBOX_VM_LANE").is_none() {
        eprintln!("SKIP {test}: runs in the VM lane only (bash scripts/vm-test.sh)");
        return false;
    }
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!("SKIP {test}: /sys/fs/cgroup is not a cgroup2 mount");
        return false;
    }
    let cpus = fs::read_to_string("/sys/devices/system/node/node1/cpulist").unwrap_or_default();
    if cpus.trim().is_empty() {
        eprintln!("SKIP {test}: no NUMA node 1 with CPUs");
        return false;
    }
    if free(1) < pages {
        eprintln!(
            "SKIP {test}: node 1 has {} free 2 MiB pages, needs {pages}",
            free(1)
        );
        return false;
    }
    true
}

fn node_cpus(node: u32) -> String {
    fs::read_to_string(format!("/sys/devices/system/node/node{node}/cpulist"))
        .unwrap()
        .trim()
        .to_string()
}

fn kv<'a>(report: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    report
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

fn with_limit(s: &mut oci_spec::runtime::Spec, bytes: u64) {
    let mut d = serde_json::to_value(&*s).unwrap();
    d["linux"]["resources"]["hugepageLimits"] = json!([{ "pageSize": "2MB", "limit": bytes }]);
    *s = serde_json::from_value(d).unwrap();
}

/// Waits (no deadline: TCG is slow) for the container's report.
fn wait_report(env: &Env, id: &str, path: &Path) -> String {
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains("ready\n") {
            return text;
        }
        assert_ne!(
            env.state(id)["status"],
            "stopped",
            "container stopped early: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn container_pinned_to_node_1_runs_and_maps_hugepages_on_node_1() {
    if !in_lane("node 1 placement", 4) {
        return;
    }
    let _pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let helper = test_bundles::helpers::build(test_bundles::helpers::HUGETOUCH, env.tmp.path())
        .expect("build hugetouch");
    let script = "exec >/tmp/report 2>&1; \
        grep -E '^(Cpus|Mems)_allowed_list' /proc/self/status | tr -d '\\t ' | tr ':' '='; \
        echo policy=$(head -n1 /proc/self/numa_maps | cut -d' ' -f2); \
        echo step=anon; /bin/hugetouch anon 4194304; \
        echo step=file; /bin/hugetouch file 4194304 /dev/hugepages/data; \
        echo step=over; /bin/hugetouch anon 6291456; \
        echo ready; exec sleep 100000";
    let bundle = env.bundle("node1", |b| {
        b.args(["/bin/sh", "-c", script])
            .annotation("cnfbox.io/numa-node", "1")
            .modify(|s| with_limit(s, 8 * MIB))
    });
    fs::copy(&helper, bundle.rootfs.join("bin/hugetouch")).unwrap();
    let id = env.id("node1");
    let (free0, free1) = (free(0), free(1));
    env.create(&bundle, &id);
    // libcontainer made the container's cgroup on the unified tree, with
    // node 1's cpuset and the hugetlb limit.
    let cg = Path::new("/sys/fs/cgroup/cnfbox").join(&id);
    let read = |f: &str| fs::read_to_string(cg.join(f)).unwrap().trim().to_string();
    assert_eq!(read("cpuset.cpus"), node_cpus(1));
    assert_eq!(read("cpuset.mems"), "1");
    assert_eq!(read("hugetlb.2MB.max"), (8 * MIB).to_string());

    env.ok(&["start", &id]);
    let report = wait_report(&env, &id, &bundle.rootfs.join("tmp/report"));
    assert_eq!(kv(&report, "Cpus_allowed_list"), [node_cpus(1)], "{report}");
    assert_eq!(kv(&report, "Mems_allowed_list"), ["1"], "{report}");
    assert_eq!(kv(&report, "policy"), ["bind:1"], "{report}");
    // Both mappings' pages are node 1's, none node 0's.
    let numa = kv(&report, "numa_maps");
    assert_eq!(numa.len(), 2, "{report}");
    for line in &numa {
        assert!(
            line.contains("bind:1") && line.contains("N1=2") && !line.contains("N0="),
            "{report}"
        );
    }
    assert!(
        report.contains("step=anon\nmmap=ok\ntouched=2\n"),
        "{report}"
    );
    assert!(
        report.contains("step=file\nmmap=ok\ntouched=2\n"),
        "{report}"
    );
    // The file keeps its two pages: taken from node 1's pool, not node 0's.
    assert_eq!(free(1), free1 - 2, "node 1's pool: {report}");
    assert_eq!(free(0), free0, "node 0's pool must not change: {report}");
    // Over the limit (2 held + 3 asked > 4): refused at mmap, where the
    // kernel accounts reservations on cgroup v2.
    let over: Vec<&str> = report
        .split("step=over\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| *l != "ready")
        .collect();
    if cg.join("hugetlb.2MB.rsvd.max").exists() {
        assert_eq!(over, ["mmap=ENOMEM"], "{report}");
    } else {
        assert!(over.contains(&"sigbus=2"), "{report}");
    }

    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--format", "json", &id])).unwrap();
    let c = &inspect["containers"][0];
    assert_eq!(c["numa"]["node"], 1, "{c}");
    assert_eq!(c["numa"]["memory_policy"], "MPOL_BIND 1", "{c}");
    assert_eq!(c["hugepages"][0]["usage"], 4 * MIB, "{c}");
    let ev: serde_json::Value = serde_json::from_str(&env.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["data"]["hugetlb"]["2MB"]["usage"], 4 * MIB, "{ev}");

    // update on cgroup v2: libcontainer writes the limit, under the
    // kernel's name for the page size (`2048KB` is `2MB`).
    let res = env.tmp.path().join("res.json");
    fs::write(
        &res,
        json!({ "hugepageLimits": [{ "pageSize": "2048KB", "limit": 16 * MIB }] }).to_string(),
    )
    .unwrap();
    env.ok(&["update", "--resources", res.to_str().unwrap(), &id]);
    assert_eq!(read("hugetlb.2MB.max"), (16 * MIB).to_string());

    env.ok(&["delete", "--force", &id]);
    assert_eq!(free(1), free1, "node 1's pages not freed at delete");
    assert_nothing_left(&env, &id);
}

#[test]
fn hint_for_a_node_without_free_hugepages_is_refused() {
    if !in_lane("node without hugepages", 0) {
        return;
    }
    let _pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let nr = pool_file(1, "nr_hugepages");
    let before = read_u64(&nr);
    fs::write(&nr, "0").unwrap();
    struct Restore(String, u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = fs::write(&self.0, self.1.to_string());
        }
    }
    let _restore = Restore(nr.clone(), before);
    assert_eq!(free(1), 0, "node 1's pool could not be emptied");
    let env = Env::new();
    let bundle = env.bundle("nofree", |b| {
        b.args(["/bin/true"])
            .annotation("cnfbox.io/numa-node", "1")
            .modify(|s| with_limit(s, 4 * MIB))
    });
    let id = env.id("nofree");
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(
        &out,
        &[
            "hugepageLimits[0]",
            "NUMA node 1",
            "has 0 free 2MB hugepages",
        ],
    );
    assert_nothing_left(&env, &id);
    // Node 0 still has pages: the same container pinned there runs.
    let bundle = env.bundle("node0", |b| {
        b.args(["/bin/true"])
            .annotation("cnfbox.io/numa-node", "0")
            .modify(|s| with_limit(s, 4 * MIB))
    });
    let id = env.id("node0");
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{out:?}");
    assert_nothing_left(&env, &id);
}
