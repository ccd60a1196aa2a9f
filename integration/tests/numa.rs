//! NUMA placement on this machine (one node, CPUs 0-1): the hint pins the
//! container's cpuset before its process runs; bad hints are refused.
//! Without the hint, kubelet's cpuset decides the node (`[numa] align`):
//! node 0 here, node 1 in the VM lane (two nodes, one CPU each), where
//! the inputs' disagreements and CPUs across nodes are checked too.

mod common;

use std::fs;

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use serde_json::json;

/// The cpuset the container's process got, and the memory policy of its
/// first mapping (`bind:N` or `default`).
const PROBE: &str =
    "grep -E '^(Cpus|Mems)_allowed_list' /proc/self/status | tr -d '\\t ' | tr ':' '='; \
     echo policy=$(head -n1 /proc/self/numa_maps | cut -d' ' -f2)";

fn node0_cpus() -> String {
    fs::read_to_string("/sys/devices/system/node/node0/cpulist")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn run_hinted(
    env: &Env,
    name: &str,
    hint: &str,
    cpus: Option<&str>,
    mems: Option<&str>,
) -> std::process::Output {
    run_placed(env, name, Some(hint), cpus, mems)
}

/// `run` of the probe with the annotation (if any) and the spec's cpuset.
fn run_placed(
    env: &Env,
    name: &str,
    hint: Option<&str>,
    cpus: Option<&str>,
    mems: Option<&str>,
) -> std::process::Output {
    let bundle = placed_bundle(env, name, hint, cpus, mems, PROBE);
    let id = env.id(name);
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_nothing_left(env, &id);
    out
}

fn placed_bundle(
    env: &Env,
    name: &str,
    hint: Option<&str>,
    cpus: Option<&str>,
    mems: Option<&str>,
    script: &str,
) -> test_bundles::Bundle {
    let (cpus, mems) = (cpus.map(str::to_string), mems.map(str::to_string));
    let hint = hint.map(str::to_string);
    let script = script.to_string();
    env.bundle(name, move |b| {
        let b = b.args(["/bin/sh", "-c", script.as_str()]);
        let b = match &hint {
            Some(h) => b.annotation("cnfbox.io/numa-node", h),
            None => b,
        };
        b.modify(move |s| {
            let mut d = serde_json::to_value(&*s).unwrap();
            let mut cpu = serde_json::Map::new();
            if let Some(c) = cpus {
                cpu.insert("cpus".into(), json!(c));
            }
            if let Some(m) = mems {
                cpu.insert("mems".into(), json!(m));
            }
            d["linux"]["resources"]["cpu"] = serde_json::Value::Object(cpu);
            *s = serde_json::from_value(d).unwrap();
        })
    })
}

#[test]
fn hint_pins_cpus_and_mems_before_the_process_runs() {
    if !can_run("numa placement") {
        return;
    }
    let cpus = node0_cpus();
    if cpus != "0-1" && !cpus.contains('1') {
        eprintln!("SKIP numa placement: needs CPU 1 on node 0 (node0 cpulist {cpus:?})");
        return;
    }
    let env = Env::new();
    let out = run_hinted(&env, "pin1", "0", Some("1"), None);
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Cpus_allowed_list=1\n"), "{s}");
    assert!(s.contains("Mems_allowed_list=0\n"), "{s}");

    let out = run_hinted(&env, "node0", "0", None, None);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains(&format!("Cpus_allowed_list={cpus}\n")), "{s}");

    // reserved_cpus from config.toml is taken out.
    let config = env.config.clone().unwrap();
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("\n[numa]\nreserved_cpus = \"0\"\n");
    fs::write(&config, text).unwrap();
    let out = run_hinted(&env, "reserved", "0", None, None);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Cpus_allowed_list=1\n"), "{s}");
}

#[test]
fn bad_hints_are_refused_and_leave_nothing() {
    if !can_run("numa refusals") {
        return;
    }
    let env = Env::new();
    for (name, hint, cpus, mems, needles) in [
        ("unknown", "7", None, None, vec!["node 7 does not exist"]),
        (
            "notanumber",
            "zero",
            None,
            None,
            vec!["cnfbox.io/numa-node", "zero"],
        ),
        (
            "empty",
            "0",
            Some("63"),
            None,
            vec!["no CPU left on node 0"],
        ),
        (
            "malformed",
            "0",
            Some("1-x"),
            None,
            vec!["linux.resources.cpu.cpus", "1-x"],
        ),
        // mems naming a node the host lacks (7: neither this host nor the
        // VM lane has it) decides nothing and contradicts the hint; valid
        // mems on another node win under `align = "auto"` (see
        // `inputs_on_two_nodes_follow_align`).
        (
            "mems",
            "0",
            None,
            Some("7"),
            vec!["contradicts linux.resources.cpu.mems"],
        ),
    ] {
        let out = run_hinted(&env, name, hint, cpus, mems);
        assert_one_line_error(&out, &needles);
    }
    assert!(env.allocator().list().unwrap().is_empty());
}

fn kv<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// The container's `numa` of `inspect --format json` (created, not started).
fn inspect_numa(env: &Env, name: &str, cpus: &str) -> serde_json::Value {
    let bundle = placed_bundle(env, name, None, Some(cpus), None, "true");
    let id = env.id(name);
    env.create(&bundle, &id);
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--format", "json", &id])).unwrap();
    let text = env.ok(&["inspect", &id]);
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(env, &id);
    let mut numa = inspect["containers"][0]["numa"].clone();
    numa["text"] = json!(text);
    numa
}

/// No annotation: kubelet's `cpu.cpus` on one node binds the container
/// there (cpuset, mems, MPOL_BIND), and `inspect` says where it came from.
#[test]
fn kubelets_cpuset_places_the_container_without_the_annotation() {
    const T: &str = "numa from cpu.cpus";
    if !can_run(T) {
        return;
    }
    let cpus = node0_cpus();
    let Some(last) = cpus.rsplit(['-', ',']).next().filter(|c| !c.is_empty()) else {
        eprintln!("SKIP {T}: no CPU list for node 0");
        return;
    };
    let env = Env::new();
    let out = run_placed(&env, "kcpus", None, Some(last), None);
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(kv(&s, "Cpus_allowed_list"), Some(last), "{s}");
    assert_eq!(kv(&s, "Mems_allowed_list"), Some("0"), "{s}");
    assert_eq!(kv(&s, "policy"), Some("bind:0"), "{s}");
    let numa = inspect_numa(&env, "kinspect", last);
    assert_eq!(numa["node"], 0, "{numa}");
    assert_eq!(
        numa["from"],
        format!("linux.resources.cpu.cpus {last}"),
        "{numa}"
    );
    assert!(
        numa["text"].as_str().unwrap().contains(&format!(
            "numa node 0 (from linux.resources.cpu.cpus {last})"
        )),
        "{numa}"
    );
    // A process `cnfbox exec` starts descends from cnfbox, not from the
    // init: it gets the container's memory policy too.
    let bundle = placed_bundle(&env, "kexec", None, Some(last), None, "exec sleep 100000");
    let id = env.id("kexec");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let out = env.ok(&[
        "exec",
        &id,
        "/bin/sh",
        "-c",
        "head -n1 /proc/self/numa_maps | cut -d' ' -f2",
    ]);
    assert_eq!(out.trim(), "bind:0", "exec'd process");
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    // align = "off": kubelet's cpuset is left as it is, memory unbound.
    let config = env.config.clone().unwrap();
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("\n[numa]\nalign = \"off\"\n");
    fs::write(&config, &text).unwrap();
    let out = run_placed(&env, "koff", None, Some(last), None);
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(kv(&s, "policy"), Some("default"), "{s}");
}

/// True in the VM lane's guest with two nodes that have CPUs.
fn two_nodes(test: &str) -> bool {
    if !can_run(test) {
        return false;
    }
    if std::env::var_os("CNFBOX_VM_LANE").is_none() {
        eprintln!(
            "SKIP {test}: needs two NUMA nodes with CPUs, the VM lane's (bash scripts/vm-test.sh)"
        );
        return false;
    }
    let n1 = fs::read_to_string("/sys/devices/system/node/node1/cpulist").unwrap_or_default();
    if n1.trim().is_empty() {
        eprintln!("SKIP {test}: no NUMA node 1 with CPUs");
        return false;
    }
    true
}

/// Two nodes: cpus on node 1 bind node 1; an update moving them to node 0
/// is refused and says so; the annotation against kubelet's cpuset under
/// each `align`; cpus across both nodes bind nothing and say why.
#[test]
fn inputs_on_two_nodes_follow_align() {
    const T: &str = "numa align on two nodes";
    if !two_nodes(T) {
        return;
    }
    let node = |n: u32| {
        fs::read_to_string(format!("/sys/devices/system/node/node{n}/cpulist"))
            .unwrap()
            .trim()
            .to_string()
    };
    let (n0, n1) = (node(0), node(1));
    let env = Env::new();
    let out = run_placed(&env, "on1", None, Some(&n1), None);
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(kv(&s, "Mems_allowed_list"), Some("1"), "{s}");
    assert_eq!(kv(&s, "policy"), Some("bind:1"), "{s}");

    // With a hugepage limit: the free-page check and the hugetlbfs pages
    // follow node 1 too (the pool of node 1 loses the file's 2 pages while
    // it exists, node 0's none).
    let free = |n: u32| {
        fs::read_to_string(format!(
            "/sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/free_hugepages"
        ))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0)
    };
    if free(1) >= 2 {
        let helper = test_bundles::helpers::build(test_bundles::helpers::HUGETOUCH, env.tmp.path())
            .expect("build hugetouch");
        let free_of = "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/free_hugepages";
        let script = format!(
            "b=$(cat {free_of}); /bin/hugetouch file 4194304 /dev/hugepages/data; \
             echo used1=$((b - $(cat {free_of})))"
        );
        let bundle = placed_bundle(&env, "huge1", None, Some(&n1), None, &script);
        let mut doc: serde_json::Value =
            serde_json::from_slice(&fs::read(&bundle.config_path).unwrap()).unwrap();
        doc["linux"]["resources"]["hugepageLimits"] =
            json!([{ "pageSize": "2MB", "limit": 8u64 << 20 }]);
        fs::write(&bundle.config_path, doc.to_string()).unwrap();
        fs::copy(&helper, bundle.rootfs.join("bin/hugetouch")).unwrap();
        let free0 = free(0);
        let id = env.id("huge1");
        let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
        assert!(out.status.success(), "{out:?}");
        let s = String::from_utf8_lossy(&out.stdout);
        assert_eq!(kv(&s, "used1"), Some("2"), "node 1's pool: {s}");
        let maps = kv(&s, "numa_maps").unwrap_or_default();
        assert!(
            maps.contains("bind:1") && maps.contains("N1=2") && !maps.contains("N0="),
            "{s}"
        );
        assert_eq!(free(0), free0, "node 0's pool must not change: {s}");
        assert_nothing_left(&env, &id);
        // The free-page check follows the derived node: node 1's pool
        // emptied, the same container is refused naming node 1 and where
        // the node came from.
        let nr = "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages";
        let before = fs::read_to_string(nr).unwrap().trim().to_string();
        fs::write(nr, "0").unwrap();
        let id = env.id("huge1");
        let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
        fs::write(nr, &before).unwrap();
        assert_one_line_error(
            &out,
            &[
                "NUMA node 1",
                &format!("from linux.resources.cpu.cpus {n1}"),
                "has 0 free 2MB hugepages",
            ],
        );
        assert_nothing_left(&env, &id);
    } else {
        eprintln!("SKIP {T} (hugepages part): node 1 has fewer than 2 free 2 MiB pages");
    }

    // An update that moves the CPUs to node 0: refused, saying it is not
    // re-bound.
    let bundle = placed_bundle(&env, "upd", None, Some(&n1), None, "exec sleep 100000");
    let id = env.id("upd");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    // An exec'd process is bound to node 1 as the init is.
    let log = env.tmp.path().join("exec.log");
    let out = env.run(&[
        "--debug",
        "--log",
        log.to_str().unwrap(),
        "exec",
        &id,
        "/bin/sh",
        "-c",
        "head -n1 /proc/self/numa_maps | cut -d' ' -f2",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "bind:1",
        "exec'd process: {out:?}\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let out = env.run(&["update", "--cpuset-cpus", &n0, &id]);
    assert_one_line_error(
        &out,
        &[
            "refused",
            "NUMA node 1",
            "from linux.resources.cpu.cpus",
            "not re-bound",
        ],
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);

    // The annotation (node 0) against kubelet's cpuset (node 1).
    let out = run_placed(&env, "auto", Some("0"), Some(&n1), None);
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        kv(&s, "policy"),
        Some("bind:1"),
        "auto follows kubelet: {s}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("annotation cnfbox.io/numa-node (node 0) ignored"),
        "{err}"
    );
    // Kubelet's mems (node 1) against the annotation (node 0): mems wins.
    let out = run_placed(&env, "automems", Some("0"), None, Some("1"));
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(kv(&s, "Mems_allowed_list"), Some("1"), "{s}");
    assert_eq!(kv(&s, "policy"), Some("bind:1"), "{s}");
    let config = env.config.clone().unwrap();
    let base = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("{base}\n[numa]\nalign = \"strict\"\n")).unwrap();
    let out = run_placed(&env, "strict", Some("0"), Some(&n1), None);
    assert_one_line_error(
        &out,
        &[
            "align = \"strict\"",
            &format!("linux.resources.cpu.cpus {n1} (node 1)"),
            "annotation cnfbox.io/numa-node (node 0)",
        ],
    );
    fs::write(&config, format!("{base}\n[numa]\nalign = \"off\"\n")).unwrap();
    let out = run_placed(&env, "off", Some("0"), Some(&n1), None);
    assert_one_line_error(
        &out,
        &["no CPU left on node 0", "annotation cnfbox.io/numa-node"],
    );
    fs::write(&config, &base).unwrap();

    // CPUs on both nodes: no binding, and inspect says why.
    let both = format!("{n0},{n1}");
    let numa = inspect_numa(&env, "both", &both);
    assert!(numa["node"].is_null(), "{numa}");
    assert!(
        numa["unbound"]
            .as_str()
            .unwrap_or_default()
            .contains("spans nodes 0-1"),
        "{numa}"
    );
}
