//! The pure planning of create, on fake host roots.

use std::fs;

use libcgroups::common::CgroupSetup;
use oci_spec::runtime::Spec;

use super::*;

fn spec(json: serde_json::Value) -> Spec {
    let mut doc = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}
    });
    merge(&mut doc, json);
    serde_json::from_value(doc).unwrap()
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Empty `/sys` and `/proc`, no config.toml.
fn roots(tmp: &tempfile::TempDir) -> HostRoots {
    let sys = tmp.path().join("sys");
    let proc = tmp.path().join("proc");
    fs::create_dir_all(&sys).unwrap();
    fs::create_dir_all(&proc).unwrap();
    HostRoots {
        sys,
        proc,
        config: tmp.path().join("config.toml"),
    }
}

fn plan_of(s: &Spec, driver: Driver, setup: CgroupSetup) -> anyhow::Result<Plan> {
    let tmp = tempfile::tempdir().unwrap();
    plan("c1", s, Path::new("/b/rootfs"), driver, setup, &roots(&tmp))
}

#[test]
fn cgroup_path_defaults_per_driver_and_reaches_the_spec() {
    let s = spec(serde_json::json!({}));
    let p = plan_of(&s, Driver::Cgroupfs, CgroupSetup::Hybrid).unwrap();
    assert_eq!(p.cgroup_path, Path::new("/cnfbox/c1"));
    let in_spec = p.spec.linux().as_ref().unwrap().cgroups_path().clone();
    assert_eq!(in_spec.as_deref(), Some(Path::new("/cnfbox/c1")));
    let p = plan_of(&s, Driver::Systemd, CgroupSetup::Unified).unwrap();
    assert_eq!(p.cgroup_path, Path::new("system.slice:cnfbox:c1"));
    // The systemd form on a hybrid host is expanded for the v1 managers.
    let s = spec(serde_json::json!({"linux": {"cgroupsPath": "pod.slice:cri:c1"}}));
    let p = plan_of(&s, Driver::Systemd, CgroupSetup::Hybrid).unwrap();
    assert!(
        !p.cgroup_path.to_string_lossy().contains(':'),
        "{}",
        p.cgroup_path.display()
    );
}

#[test]
fn rootfs_and_no_new_privileges_are_rewritten() {
    let s = spec(serde_json::json!({"process": {"noNewPrivileges": false}}));
    let p = plan_of(&s, Driver::Cgroupfs, CgroupSetup::Hybrid).unwrap();
    assert_eq!(
        p.spec.root().as_ref().unwrap().path(),
        Path::new("/b/rootfs")
    );
    assert_eq!(p.spec.process().as_ref().unwrap().no_new_privileges(), None);
    let s = spec(serde_json::json!({"process": {"noNewPrivileges": true}}));
    let p = plan_of(&s, Driver::Cgroupfs, CgroupSetup::Hybrid).unwrap();
    assert_eq!(
        p.spec.process().as_ref().unwrap().no_new_privileges(),
        Some(true)
    );
}

#[test]
fn device_rules_start_with_deny_all() {
    let s = spec(serde_json::json!({"linux": {"resources": {"devices": [
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]}}}));
    let p = plan_of(&s, Driver::Cgroupfs, CgroupSetup::Hybrid).unwrap();
    let linux = p.spec.linux().as_ref().unwrap();
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(!rules[0].allow(), "deny all first: {rules:?}");
    assert!(rules[1].allow());
}

#[test]
fn nothing_to_make_without_hugepages_numa_or_interfaces() {
    let s = spec(serde_json::json!({}));
    let p = plan_of(&s, Driver::Cgroupfs, CgroupSetup::Hybrid).unwrap();
    assert!(p.hugepages.is_empty());
    assert!(p.numa.is_none());
    assert!(p.interfaces.is_empty());
}

#[test]
fn a_hugepage_size_the_host_lacks_is_refused_by_name() {
    let s = spec(
        serde_json::json!({"linux": {"resources": {"hugepageLimits": [
            {"pageSize": "2MB", "limit": 2097152}
        ]}}}),
    );
    let err = plan_of(&s, Driver::Cgroupfs, CgroupSetup::Hybrid).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("create container c1"), "{text}");
    assert!(text.contains("2MB"), "{text}");
}

#[test]
fn a_numa_hint_for_a_node_the_host_lacks_is_refused() {
    let s = spec(serde_json::json!({"annotations": {"cnfbox.io/numa-node": "7"}}));
    let err = plan_of(&s, Driver::Cgroupfs, CgroupSetup::Hybrid).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("create container c1"), "{text}");
}
