//! Hugepages and memory policy on this machine (one NUMA node): a
//! container pinned to node 0 and CPU 1 maps hugepages from its own
//! hugetlbfs within its limit, is refused beyond it, and leaves no cgroup,
//! mount or page behind; bad hugepage and policy input is refused.
//!
//! The tests reserve 2 MiB pages and give the count back afterwards.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Mutex;

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use serde_json::{json, Value};

const NR: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
const FREE: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
const MIB: u64 = 1 << 20;

/// Tests in this file change the machine's hugepage pool one at a time.
static POOL: Mutex<()> = Mutex::new(());

fn read_u64(path: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Reserves `n` more 2 MiB pages; gives them back on drop.
struct Reservation {
    before: u64,
}

impl Reservation {
    fn take(test: &str, n: u64) -> Option<Self> {
        let before = read_u64(NR);
        let free = read_u64(FREE);
        if fs::write(NR, (before + n).to_string()).is_err() {
            eprintln!("SKIP {test}: cannot write {NR}");
            return None;
        }
        let r = Self { before };
        if read_u64(FREE) < free + n {
            eprintln!("SKIP {test}: the kernel could not reserve {n} 2 MiB pages");
            return None;
        }
        Some(r)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let _ = fs::write(NR, self.before.to_string());
    }
}

fn set_limits(s: &mut oci_spec::runtime::Spec, limits: Value, cpus: Option<&str>) {
    let mut d = serde_json::to_value(&*s).unwrap();
    d["linux"]["resources"]["hugepageLimits"] = limits;
    if let Some(c) = cpus {
        d["linux"]["resources"]["cpu"] = json!({ "cpus": c });
    }
    *s = serde_json::from_value(d).unwrap();
}

fn kv<'a>(report: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    report
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

/// Waits (no deadline: the machine is noisy) for the container's report.
fn wait_report(env: &Env, id: &str, path: &Path) -> String {
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains("ready\n") {
            return text;
        }
        let state = env.state(id);
        assert_ne!(
            state["status"], "stopped",
            "container stopped early: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn hugetlbfs_mounts(id: &str) -> Vec<String> {
    common::mounts_mentioning(id)
        .into_iter()
        .filter(|l| l.contains(" hugetlbfs "))
        .collect()
}

#[test]
fn pinned_container_maps_hugepages_within_its_limit_only() {
    if !can_run("hugepages") {
        return;
    }
    let _pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if !fs::read_to_string("/sys/devices/system/node/node0/cpulist")
        .unwrap_or_default()
        .contains('1')
    {
        eprintln!("SKIP hugepages: needs CPU 1 on node 0");
        return;
    }
    let Some(_reserved) = Reservation::take("hugepages", 8) else {
        return;
    };
    let free_before = read_u64(FREE);
    let env = Env::new();
    let helper = test_bundles::helpers::build(test_bundles::helpers::HUGETOUCH, env.tmp.path())
        .expect("build hugetouch");
    let script = "exec >/tmp/report 2>&1; \
        grep -E '^(Cpus|Mems)_allowed_list' /proc/self/status | tr -d '\\t ' | tr ':' '='; \
        echo policy=$(head -n1 /proc/self/numa_maps | cut -d' ' -f2); \
        echo step=anon4; /bin/hugetouch anon 4194304; \
        echo step=anon6; /bin/hugetouch anon 6291456; \
        echo step=file; /bin/hugetouch file 4194304 /dev/hugepages/data; \
        echo owner=$(stat -c %u:%g /dev/hugepages); \
        echo ready; exec sleep 100000";
    let bundle = env.bundle("huge", |b| {
        b.args(["/bin/sh", "-c", script])
            .annotation("cnfbox.io/numa-node", "0")
            .modify(|s| {
                set_limits(
                    s,
                    json!([{ "pageSize": "2MB", "limit": 4 * MIB }]),
                    Some("1"),
                )
            })
    });
    fs::copy(&helper, bundle.rootfs.join("bin/hugetouch")).unwrap();
    let id = env.id("huge");
    env.create(&bundle, &id);

    // Between create and start: the init already sits in its cgroup2
    // hugetlb cgroup, with the limit and its reservation twin set.
    let cg = common::hugetlb_cgroup_dir(&id);
    let rsvd = cg.join("hugetlb.2MB.rsvd.max").exists();
    assert_eq!(
        fs::read_to_string(cg.join("hugetlb.2MB.max"))
            .unwrap()
            .trim(),
        (4 * MIB).to_string()
    );
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let procs = fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "init {pid} not in {}: {procs}",
        cg.display()
    );
    // The hugetlbfs is the host's, owned by the pod root's host ids.
    let host_uid = env
        .allocator()
        .show(&id)
        .unwrap()
        .unwrap()
        .mapping
        .uid
        .host_id();
    let mounts = hugetlbfs_mounts(&id);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert!(
        mounts[0].contains(&format!("uid={host_uid}")) && mounts[0].contains("pagesize=2M"),
        "{}",
        mounts[0]
    );
    // nosuid,nodev,noexec on the host, in a directory only host root and
    // the pod's root may walk (runtime/src/views.rs).
    let per_mount: Vec<&str> = mounts[0].split(' ').nth(5).unwrap().split(',').collect();
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(per_mount.contains(&flag), "{}", mounts[0]);
    }
    let dir = common::mount_base_of(&env.root)
        .unwrap()
        .join("hugepages")
        .join(&id);
    let meta = fs::metadata(&dir).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid()),
            (0o700, host_uid),
            "{}",
            dir.display()
        );
    }

    env.ok(&["start", &id]);
    let report = wait_report(&env, &id, &bundle.rootfs.join("tmp/report"));
    assert_eq!(kv(&report, "Cpus_allowed_list"), ["1"], "{report}");
    assert_eq!(kv(&report, "Mems_allowed_list"), ["0"], "{report}");
    // The hint binds memory to node 0, inherited by every child.
    assert_eq!(kv(&report, "policy"), ["bind:0"], "{report}");
    // Within the limit: two pages, both from node 0, under the bind policy.
    let numa = kv(&report, "numa_maps");
    assert!(
        numa.iter()
            .any(|l| l.contains("bind:0") && l.contains("N0=2") && l.contains("anon_hugepage")),
        "{report}"
    );
    // Beyond it: refused at mmap with reservation accounting, else SIGBUS
    // at the first page past the limit.
    let after_anon6: Vec<&str> = report
        .split("step=anon6\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("step="))
        .collect();
    if rsvd {
        assert_eq!(after_anon6, ["mmap=ENOMEM"], "{report}");
    } else {
        assert!(after_anon6.contains(&"sigbus=2"), "{report}");
    }
    // The file on the container's hugetlbfs: its two pages stay charged.
    assert!(
        report.contains("step=file\nmmap=ok\ntouched=2\n"),
        "{report}"
    );
    assert_eq!(kv(&report, "owner"), ["0:0"], "{report}");
    assert_eq!(read_u64(FREE), free_before - 2, "the file keeps 2 pages");

    let inspect: Value =
        serde_json::from_str(&env.ok(&["inspect", "--format", "json", &id])).unwrap();
    let c = &inspect["containers"][0];
    assert_eq!(c["numa"]["node"], 0, "{c}");
    assert_eq!(c["numa"]["cpus"], "1", "{c}");
    assert_eq!(c["numa"]["memory_policy"], "MPOL_BIND 0", "{c}");
    assert_eq!(c["hugepages"][0]["page_size"], "2MB", "{c}");
    assert_eq!(c["hugepages"][0]["limit"], 4 * MIB, "{c}");
    assert_eq!(c["hugepages"][0]["usage"], 4 * MIB, "{c}");

    // events --stats reads hugetlb from the cgroup2 tree; the refused
    // mapping above was counted as a hit of the limit.
    let ev: Value = serde_json::from_str(&env.ok(&["events", "--stats", &id])).unwrap();
    let h = &ev["data"]["hugetlb"]["2MB"];
    assert_eq!(h["usage"], 4 * MIB, "{ev}");
    assert!(h["failcnt"].as_u64().unwrap() >= 1, "{ev}");
    // The limit is there by its name; `max` is runc's peak usage and is
    // left out where the kernel keeps none (never a bare `max: 0`).
    assert_eq!(h["limit"], 4 * MIB, "{ev}");
    assert_ne!(h["max"], 0, "{ev}");

    // exec'd processes start inside the hugetlb cgroup, under the limit.
    let out = env.ok(&["exec", &id, "/bin/cat", "/proc/self/cgroup"]);
    assert!(
        out.lines().any(|l| l == format!("0::/cnfbox/{id}")),
        "exec not in the hugetlb cgroup: {out}"
    );

    // update: the cgroup2 limit follows; the pin cannot be widened.
    let res = env.tmp.path().join("res.json");
    fs::write(
        &res,
        json!({ "hugepageLimits": [{ "pageSize": "2MB", "limit": 8 * MIB }],
                "cpu": { "cpus": "0-1" } })
        .to_string(),
    )
    .unwrap();
    env.ok(&["update", "--resources", res.to_str().unwrap(), &id]);
    assert_eq!(
        fs::read_to_string(cg.join("hugetlb.2MB.max"))
            .unwrap()
            .trim(),
        (8 * MIB).to_string()
    );
    let out = env.run(&["update", "--cpuset-mems", "1", &id]);
    assert_one_line_error(&out, &["cpu.mems \"1\"", "pinned to NUMA node 0"]);
    let out = env.run(&["update", "--cpuset-cpus", "0-5", &id]);
    assert_one_line_error(&out, &["cpu.cpus \"0-5\"", "pinned to NUMA node 0"]);

    env.ok(&["delete", "--force", &id]);
    assert!(!cg.exists(), "hugetlb cgroup left: {}", cg.display());
    assert!(hugetlbfs_mounts(&id).is_empty());
    assert_eq!(read_u64(FREE), free_before, "hugepages not freed at delete");
    assert_nothing_left(&env, &id);
}

#[test]
fn memory_policy_from_the_spec_reaches_the_process() {
    if !can_run("memory policy") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("interleave", |b| {
        b.args([
            "/bin/sh",
            "-c",
            "head -n1 /proc/self/numa_maps | cut -d' ' -f2",
        ])
        .modify(|s| {
            let mut d = serde_json::to_value(&*s).unwrap();
            d["linux"]["memoryPolicy"] = json!({ "mode": "MPOL_INTERLEAVE", "nodes": "0" });
            *s = serde_json::from_value(d).unwrap();
        })
    });
    let id = env.id("interleave");
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "interleave:0");
    assert_nothing_left(&env, &id);
}

#[test]
fn bad_hugepage_and_policy_input_is_refused_and_leaves_nothing() {
    if !can_run("hugepage bad input") {
        return;
    }
    let env = Env::new();
    type Tweak = fn(&mut oci_spec::runtime::Spec);
    let cases: [(&str, Tweak, &[&str]); 8] = [
        (
            "notmultiple",
            |s| set_limits(s, json!([{ "pageSize": "2MB", "limit": 3 * MIB }]), None),
            &[
                "hugepageLimits[0].limit 3145728",
                "not a multiple of the 2MB page size",
            ],
        ),
        (
            "nosuchsize",
            |s| set_limits(s, json!([{ "pageSize": "64KB", "limit": 0 }]), None),
            &[
                "hugepageLimits[0].pageSize \"64KB\"",
                "no such hugepage size",
            ],
        ),
        (
            "malformed",
            |s| set_limits(s, json!([{ "pageSize": "2XB", "limit": 0 }]), None),
            &[
                "hugepageLimits[0].pageSize \"2XB\"",
                "unit must be KB, MB or GB",
            ],
        ),
        (
            "mountsize",
            |s| {
                let mut d = serde_json::to_value(&*s).unwrap();
                d["linux"]["resources"]["hugepageLimits"] =
                    json!([{ "pageSize": "2MB", "limit": 2 * MIB }]);
                d["mounts"].as_array_mut().unwrap().push(json!({
                    "destination": "/huge1g", "type": "hugetlbfs", "source": "none",
                    "options": ["pagesize=1G"]
                }));
                *s = serde_json::from_value(d).unwrap();
            },
            &["hugetlbfs at /huge1g", "sets no limit for this page size"],
        ),
        (
            // No hugepageLimits at all: the hugetlbfs cnfbox mounts would
            // have no size= and no cgroup cap, so pod root could map every
            // free hugepage of the host (issue 25).
            "nolimits",
            |s| {
                let mut d = serde_json::to_value(&*s).unwrap();
                d["mounts"].as_array_mut().unwrap().push(json!({
                    "destination": "/huge", "type": "hugetlbfs", "source": "none",
                    "options": ["pagesize=2M"]
                }));
                *s = serde_json::from_value(d).unwrap();
            },
            &["hugetlbfs at /huge", "sets no limit for this page size"],
        ),
        (
            "policynode",
            |s| {
                let mut d = serde_json::to_value(&*s).unwrap();
                d["linux"]["memoryPolicy"] = json!({ "mode": "MPOL_BIND", "nodes": "7" });
                *s = serde_json::from_value(d).unwrap();
            },
            &["linux.memoryPolicy.nodes \"7\"", "node 7 does not exist"],
        ),
        (
            "policyflags",
            |s| {
                let mut d = serde_json::to_value(&*s).unwrap();
                d["linux"]["memoryPolicy"] = json!({
                    "mode": "MPOL_BIND", "nodes": "0",
                    "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]
                });
                *s = serde_json::from_value(d).unwrap();
            },
            &["linux.memoryPolicy", "exclude each other"],
        ),
        (
            "policylocal",
            |s| {
                let mut d = serde_json::to_value(&*s).unwrap();
                d["linux"]["memoryPolicy"] = json!({ "mode": "MPOL_LOCAL", "nodes": "0" });
                *s = serde_json::from_value(d).unwrap();
            },
            &["mode MPOL_LOCAL takes neither nodes nor flags"],
        ),
    ];
    for (name, tweak, needles) in cases {
        let bundle = env.bundle(name, |b| b.args(["/bin/true"]).modify(tweak));
        let id = env.id(name);
        let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
        assert_one_line_error(&out, needles);
        assert_nothing_left(&env, &id);
        assert!(hugetlbfs_mounts(&id).is_empty(), "{name}: hugetlbfs left");
    }
    // A failure after the hugetlb cgroup and hugetlbfs were made (the
    // capability policy is checked later) takes both away again.
    let bundle = env.bundle("latefail", |b| {
        b.args(["/bin/true"])
            .annotation("cnfbox.io/capabilities", "SYS_MODULE")
            .modify(|s| set_limits(s, json!([{ "pageSize": "2MB", "limit": 2 * MIB }]), None))
    });
    let id = env.id("latefail");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["SYS_MODULE"]);
    assert_nothing_left(&env, &id);
    assert!(hugetlbfs_mounts(&id).is_empty(), "latefail: hugetlbfs left");
    assert!(!common::hugetlb_cgroup_dir(&id).exists());

    // A hint that contradicts the spec's memory policy.
    let bundle = env.bundle("conflict", |b| {
        b.args(["/bin/true"])
            .annotation("cnfbox.io/numa-node", "0")
            .modify(|s| {
                let mut d = serde_json::to_value(&*s).unwrap();
                d["linux"]["memoryPolicy"] = json!({ "mode": "MPOL_INTERLEAVE", "nodes": "0-1" });
                *s = serde_json::from_value(d).unwrap();
            })
    });
    let id = env.id("conflict");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    // Node 1 does not exist here: whichever check speaks first names the field.
    assert_one_line_error(&out, &["linux.memoryPolicy.nodes \"0-1\""]);
    assert_nothing_left(&env, &id);
}
