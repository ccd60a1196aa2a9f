use super::*;

/// A fake sysfs with `nodes[i]` = node i's CPU list ("" = memory-less and
/// CPU-less is allowed), `online` CPUs, and nodes with memory.
fn fake(nodes: &[&str], online: &str, with_memory: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let n = dir.path().join("devices/system/node");
    for (i, cpus) in nodes.iter().enumerate() {
        fs::create_dir_all(n.join(format!("node{i}"))).unwrap();
        fs::write(n.join(format!("node{i}/cpulist")), format!("{cpus}\n")).unwrap();
    }
    fs::write(n.join("has_memory"), format!("{with_memory}\n")).unwrap();
    fs::create_dir_all(dir.path().join("devices/system/cpu")).unwrap();
    fs::write(
        dir.path().join("devices/system/cpu/online"),
        format!("{online}\n"),
    )
    .unwrap();
    dir
}

fn set(l: &str) -> BTreeSet<u32> {
    parse_list("t", l).unwrap()
}

#[test]
fn cpu_lists_round_trip_and_reject_garbage() {
    assert_eq!(format_list(&set("0-3,7,9-10")), "0-3,7,9-10");
    assert_eq!(format_list(&set("3,1,2")), "1-3");
    assert!(set("").is_empty());
    for bad in ["1-", "a", "3-1", "0-99999999", "1,,2"] {
        assert!(parse_list("spec", bad).is_err(), "{bad}");
    }
}

#[test]
fn two_four_and_eight_node_trees() {
    let two = fake(&["0-3", "4-7"], "0-7", "0-1");
    let t = Topology::read(two.path()).unwrap();
    let none = BTreeSet::new();
    assert_eq!(place(&t, "1", None, None, &none).unwrap().cpus, set("4-7"));
    let four = fake(&["0-1", "2-3", "4-5", "6-7"], "0-7", "0-3");
    let t = Topology::read(four.path()).unwrap();
    assert_eq!(
        place(&t, "2", Some("3-5"), None, &none).unwrap().cpus,
        set("4-5")
    );
    assert_eq!(
        place(&t, "3", None, Some("3"), &set("7")).unwrap().cpus,
        set("6")
    );
    let eight_lists: Vec<String> = (0..8).map(|i| format!("{}-{}", i * 4, i * 4 + 3)).collect();
    let eight_refs: Vec<&str> = eight_lists.iter().map(String::as_str).collect();
    let eight = fake(&eight_refs, "0-31", "0-7");
    let t = Topology::read(eight.path()).unwrap();
    assert_eq!(t.nodes.len(), 8);
    assert_eq!(
        place(&t, "7", None, None, &none).unwrap().cpus,
        set("28-31")
    );
}

#[test]
fn offline_cpus_and_memoryless_nodes() {
    // CPUs 2 and 3 offline; node 1 has CPUs but no memory; node 2 has
    // memory but no CPUs.
    let tree = fake(&["0-3", "4-5", ""], "0-1,4-5", "0,2");
    let t = Topology::read(tree.path()).unwrap();
    let none = BTreeSet::new();
    assert_eq!(place(&t, "0", None, None, &none).unwrap().cpus, set("0-1"));
    assert!(matches!(
        place(&t, "1", None, None, &none),
        Err(NumaError::NoMemory { node: 1, .. })
    ));
    assert!(matches!(
        place(&t, "2", None, None, &none),
        Err(NumaError::EmptyCpus { .. })
    ));
}

#[test]
fn refusals() {
    let tree = fake(&["0-3", "4-7"], "0-7", "0-1");
    let t = Topology::read(tree.path()).unwrap();
    let none = BTreeSet::new();
    let e = place(&t, "5", None, None, &none).unwrap_err();
    assert!(
        e.to_string().contains("node 5 does not exist (nodes: 0,1)"),
        "{e}"
    );
    let e = place(&t, "one", None, None, &none).unwrap_err();
    assert!(matches!(e, NumaError::Hint { .. }));
    let e = place(&t, "0", Some("4-7"), None, &none).unwrap_err();
    assert!(e.to_string().contains("no CPU left on node 0"), "{e}");
    let e = place(&t, "0", None, Some("1"), &none).unwrap_err();
    assert!(matches!(e, NumaError::MemsConflict { .. }), "{e}");
    let e = place(&t, "0", Some("0-x"), None, &none).unwrap_err();
    assert!(e.to_string().contains("linux.resources.cpu.cpus"), "{e}");
    let e = place(&t, "0", None, None, &set("0-3")).unwrap_err();
    assert!(matches!(e, NumaError::EmptyCpus { .. }));
}

fn policy(mode: Mode, nodes: Option<&str>, flags: &[Flag]) -> LinuxMemoryPolicy {
    let mut p = LinuxMemoryPolicy::default();
    p.set_mode(mode);
    p.set_nodes(nodes.map(str::to_string));
    if !flags.is_empty() {
        p.set_flags(Some(flags.to_vec()));
    }
    p
}

#[test]
fn memory_policies_are_checked_against_topology_and_hint() {
    let tree = fake(&["0-3", "4-7", ""], "0-7", "0-1");
    let t = Topology::read(tree.path()).unwrap();
    assert!(check_policy(&policy(Mode::MpolBind, Some("0-1"), &[]), &t, None).is_ok());
    assert!(check_policy(&policy(Mode::MpolLocal, None, &[]), &t, Some(1)).is_ok());
    assert!(check_policy(&policy(Mode::MpolPreferred, None, &[]), &t, None).is_ok());
    let e = check_policy(&policy(Mode::MpolBind, Some("2"), &[]), &t, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("node 2 does not exist or has no memory (nodes with memory: 0-1)"),
        "{e}"
    );
    // Relative nodes count within the cpuset: not checked against sysfs.
    assert!(check_policy(
        &policy(
            Mode::MpolInterleave,
            Some("0-5"),
            &[Flag::MpolFRelativeNodes]
        ),
        &t,
        None
    )
    .is_ok());
    let e = check_policy(&policy(Mode::MpolInterleave, None, &[]), &t, None).unwrap_err();
    assert!(e.to_string().contains("needs nodes"), "{e}");
    let e = check_policy(&policy(Mode::MpolDefault, Some("0"), &[]), &t, None).unwrap_err();
    assert!(e.to_string().contains("takes neither"), "{e}");
    let e = check_policy(
        &policy(Mode::MpolInterleave, Some("0"), &[Flag::MpolFNumaBalancing]),
        &t,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs mode MPOL_BIND"), "{e}");
    let e = check_policy(&policy(Mode::MpolBind, Some("0-1"), &[]), &t, Some(1)).unwrap_err();
    assert!(
        matches!(e, NumaError::PolicyConflict { node: 1, .. }),
        "{e}"
    );
    let e = check_policy(&policy(Mode::MpolBind, Some("x"), &[]), &t, None).unwrap_err();
    assert!(e.to_string().contains("linux.memoryPolicy.nodes"), "{e}");
}

#[test]
fn the_hint_binds_memory_unless_the_spec_has_a_policy() {
    let tree = fake(&["0-3", "4-7"], "0-7", "0-1");
    let config = tree.path().join("none.toml");
    let mut spec = Spec::default();
    spec.set_annotations(Some([(ANNOTATION.to_string(), "1".to_string())].into()));
    let rec = apply(&mut spec, tree.path(), &config, &[])
        .unwrap()
        .record
        .unwrap();
    assert_eq!(
        rec,
        Record {
            node: 1,
            cpus: "4-7".into(),
            mems: "1".into(),
            from: "annotation cnfbox.io/numa-node".into(),
        }
    );
    let linux = spec.linux().as_ref().unwrap();
    let p = linux.memory_policy().as_ref().unwrap();
    assert_eq!(
        (p.mode(), p.nodes().as_deref()),
        (Mode::MpolBind, Some("1"))
    );
    // The spec's own policy is kept when it agrees with the hint.
    let mut spec = Spec::default();
    spec.set_annotations(Some([(ANNOTATION.to_string(), "0".to_string())].into()));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_memory_policy(Some(policy(Mode::MpolPreferred, Some("0"), &[])));
    spec.set_linux(Some(linux));
    apply(&mut spec, tree.path(), &config, &[]).unwrap();
    let p = spec
        .linux()
        .as_ref()
        .unwrap()
        .memory_policy()
        .clone()
        .unwrap();
    assert_eq!(p.mode(), Mode::MpolPreferred);
    // No hint, no policy: nothing is read or changed.
    let mut spec = Spec::default();
    assert_eq!(
        apply(&mut spec, Path::new("/nonexistent"), &config, &[]).unwrap(),
        Outcome::default()
    );
}

fn with_cpu(cpus: Option<&str>, mems: Option<&str>, hint: Option<&str>) -> Spec {
    let mut doc = serde_json::json!({"ociVersion": "1.0.2", "linux": {"resources": {"cpu": {}}}});
    if let Some(c) = cpus {
        doc["linux"]["resources"]["cpu"]["cpus"] = c.into();
    }
    if let Some(m) = mems {
        doc["linux"]["resources"]["cpu"]["mems"] = m.into();
    }
    if let Some(h) = hint {
        doc["annotations"] = serde_json::json!({ ANNOTATION: h });
    }
    serde_json::from_value(doc).unwrap()
}

#[test]
fn kubelets_cpuset_decides_the_node_without_the_annotation() {
    let tree = fake(&["0-3", "4-7"], "0-7", "0-1");
    let config = tree.path().join("none.toml");
    // cpus alone on node 1: bound there, memory too.
    let mut spec = with_cpu(Some("6-7"), None, None);
    let out = apply(&mut spec, tree.path(), &config, &[]).unwrap();
    let rec = out.record.unwrap();
    assert_eq!((rec.node, rec.cpus.as_str()), (1, "6-7"));
    assert_eq!(rec.from, "linux.resources.cpu.cpus 6-7");
    let linux = spec.linux().as_ref().unwrap();
    let p = linux.memory_policy().as_ref().unwrap();
    assert_eq!(
        (p.mode(), p.nodes().as_deref()),
        (Mode::MpolBind, Some("1"))
    );
    // mems alone.
    let mut spec = with_cpu(None, Some("0"), None);
    let rec = apply(&mut spec, tree.path(), &config, &[])
        .unwrap()
        .record
        .unwrap();
    assert_eq!((rec.node, rec.cpus.as_str()), (0, "0-3"));
    // cpus across nodes: nothing bound, and why.
    let mut spec = with_cpu(Some("2-5"), None, None);
    let out = apply(&mut spec, tree.path(), &config, &[]).unwrap();
    assert_eq!(out.record, None);
    assert_eq!(
        out.unbound.as_deref(),
        Some("linux.resources.cpu.cpus 2-5 spans nodes 0-1")
    );
    assert!(spec.linux().as_ref().unwrap().memory_policy().is_none());
    // The annotation against kubelet's cpuset: auto follows kubelet
    // and warns; strict refuses naming both; off follows the annotation.
    let mut spec = with_cpu(Some("0-1"), None, Some("1"));
    let out = apply(&mut spec, tree.path(), &config, &[]).unwrap();
    assert_eq!(out.record.unwrap().node, 0);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    let strict = tree.path().join("strict.toml");
    fs::write(&strict, "[numa]\nalign = \"strict\"\n").unwrap();
    let mut spec = with_cpu(Some("0-1"), None, Some("1"));
    let err = apply(&mut spec, tree.path(), &strict, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux.resources.cpu.cpus 0-1 (node 0)")
            && err.contains("annotation cnfbox.io/numa-node (node 1)"),
        "{err}"
    );
    let off = tree.path().join("off.toml");
    fs::write(&off, "[numa]\nalign = \"off\"\n").unwrap();
    let mut spec = with_cpu(Some("6-7"), None, None);
    assert_eq!(
        apply(&mut spec, tree.path(), &off, &[]).unwrap(),
        Outcome::default()
    );
    let bad = tree.path().join("bad.toml");
    fs::write(&bad, "[numa]\nalign = \"sometimes\"\n").unwrap();
    let mut spec = with_cpu(Some("6-7"), None, None);
    let err = apply(&mut spec, tree.path(), &bad, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("align") || err.contains("sometimes"), "{err}");
}

#[test]
fn no_cpu_left_names_the_spec_cpus_and_the_reserved_set() {
    let t = Topology {
        nodes: std::collections::BTreeMap::from([(0, set("0-1"))]),
        with_memory: set("0"),
    };
    let e = place(&t, "0", Some("5"), None, &BTreeSet::new())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "no CPU left on node 0 (from annotation cnfbox.io/numa-node): linux.resources.cpu.cpus \"5\" names none of the node's CPUs 0-1 (reserved none)"
    );
    let e = place(&t, "0", None, None, &set("0-1"))
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("[numa] reserved_cpus 0-1 takes all of the node's CPUs 0-1"),
        "{e}"
    );
}
