//! `cnfbox setup` and `cnfbox ranges`: giving cnfbox an ID pool and showing
//! which pod owns which host IDs, against a private /etc and ledger.

mod common;

use std::fs;
use std::path::Path;

use common::{assert_one_line_error, can_run, Env};
use serde_json::Value;

fn etc_args<'a>(etc: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["ranges", "--etc", etc];
    v.extend_from_slice(rest);
    v
}

/// A private /etc with cnfbox set up, and an allocator on the same ledger.
fn set_up(env: &Env) -> (String, idmap::Allocator) {
    let etc = env.tmp.path().join("etc");
    fs::create_dir_all(&etc).unwrap();
    // Another owner already holds a range: setup must avoid it.
    fs::write(etc.join("subuid"), "builder:100000:65536\n").unwrap();
    fs::write(etc.join("subgid"), "builder:100000:65536\n").unwrap();
    let ledger = env.tmp.path().join("ledger");
    let etc_s = etc.to_str().unwrap().to_string();
    let args = [
        "setup",
        "--etc",
        &etc_s,
        "--pool-size",
        "655360",
        "--ledger-dir",
        ledger.to_str().unwrap(),
        "--format",
        "json",
    ];
    let first: Value = serde_json::from_str(&env.ok(&args)).unwrap();
    let subuid = fs::read_to_string(etc.join("subuid")).unwrap();
    let config = fs::read_to_string(etc.join("cnfbox/config.toml")).unwrap();
    // Idempotent: a second run changes nothing.
    let second: Value = serde_json::from_str(&env.ok(&args)).unwrap();
    assert_eq!(second["subuid"], "unchanged", "{second}");
    assert_eq!(second["config"], "unchanged", "{second}");
    assert_eq!(first["uid_pool"], second["uid_pool"]);
    assert_eq!(fs::read_to_string(etc.join("subuid")).unwrap(), subuid);
    assert_eq!(
        fs::read_to_string(etc.join("cnfbox/config.toml")).unwrap(),
        config
    );
    let line = subuid
        .lines()
        .find(|l| l.starts_with("cnfbox:"))
        .expect("cnfbox subuid line");
    let start: u64 = line.split(':').nth(1).unwrap().parse().unwrap();
    assert!(
        start >= 65536,
        "pool must avoid host IDs below 65536: {line}"
    );
    assert!(
        start >= 165536 || start + 655360 <= 100000,
        "pool overlaps builder's range: {line}"
    );

    let etc_root = idmap::EtcRoot::new(&etc);
    let cfg = idmap::Config::load_from(&etc_root.default_config(), true).unwrap();
    let alloc = idmap::Allocator::from_config(&cfg, &etc_root).unwrap();
    (etc_s, alloc)
}

fn list(env: &Env, etc: &str) -> Vec<Value> {
    serde_json::from_str(&env.ok(&etc_args(etc, &["--format", "json", "list"]))).unwrap()
}

#[test]
fn setup_list_show_release_gc() {
    if !can_run("ranges") {
        return;
    }
    let mut env = Env::new();
    env.config = None;
    let (etc, alloc) = set_up(&env);
    assert!(list(&env, &etc).is_empty());

    let a = alloc.allocate("pod-a").unwrap();
    let b = alloc.allocate("pod-b").unwrap();
    let l = list(&env, &etc);
    assert_eq!(l.len(), 2);
    let (ua, ub) = (&l[0]["uid"], &l[1]["uid"]);
    assert_eq!(l[0]["pod"], "pod-a");
    assert_eq!(ua["host_start"], a.uid.host_id());
    assert_eq!(ub["host_start"], b.uid.host_id());
    assert_eq!(ua["size"], 65536);
    assert!(
        ua["host_end"].as_u64() <= ub["host_start"].as_u64(),
        "ranges overlap: {ua} {ub}"
    );
    let text = env.ok(&etc_args(&etc, &["show", "pod-b"]));
    assert!(
        text.contains("pod-b") && text.contains(&b.uid.host_id().to_string()),
        "{text}"
    );

    env.ok(&etc_args(&etc, &["release", "pod-a"]));
    let out = env.run(&etc_args(&etc, &["show", "pod-a"]));
    assert_one_line_error(&out, &["pod-a", "holds no host ID range"]);
    let out = env.run(&etc_args(&etc, &["release", "pod-a"]));
    assert_one_line_error(&out, &["pod-a"]);

    // pod-b was just granted: within the grace period gc keeps it.
    env.ok(&etc_args(&etc, &["gc"]));
    assert_eq!(list(&env, &etc).len(), 1);
    let freed: Vec<Value> =
        serde_json::from_str(&env.ok(&etc_args(&etc, &["--format", "json", "gc", "--grace", "0"])))
            .unwrap();
    assert_eq!(freed.len(), 1);
    assert_eq!(freed[0]["pod"], "pod-b");
    assert!(list(&env, &etc).is_empty());
    // The freed range is handed out again.
    assert_eq!(alloc.allocate("pod-c").unwrap(), a);
}

#[test]
fn corrupt_ledger_stops_everything_until_repair() {
    if !can_run("ranges repair") {
        return;
    }
    let mut env = Env::new();
    env.config = None;
    let (etc, alloc) = set_up(&env);
    alloc.allocate("pod-x").unwrap();
    let ledger = alloc.ledger().path();
    let mut raw = fs::read(&ledger).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x20;
    fs::write(&ledger, &raw).unwrap();

    let out = env.run(&etc_args(&etc, &["list"]));
    assert_one_line_error(&out, &[ledger.to_str().unwrap()]);
    assert!(
        alloc.allocate("pod-y").is_err(),
        "allocation must stop on a corrupt ledger"
    );

    // No live container holds pod-x, so the rebuilt ledger is empty and the
    // corrupt file is kept for inspection.
    let rebuilt: Vec<Value> =
        serde_json::from_str(&env.ok(&etc_args(&etc, &["--format", "json", "repair"]))).unwrap();
    assert!(rebuilt.is_empty(), "{rebuilt:?}");
    assert!(list(&env, &etc).is_empty());
    let kept = fs::read_dir(ledger.parent().unwrap())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(kept, "the corrupt ledger is kept beside the new one");
    assert!(alloc.allocate("pod-y").is_ok());
}

#[test]
fn no_pool_says_how_to_set_one_up() {
    if !can_run("ranges without pool") {
        return;
    }
    let mut env = Env::new();
    env.config = None;
    let etc = env.tmp.path().join("empty-etc");
    fs::create_dir_all(&etc).unwrap();
    let out = env.run(&etc_args(etc.to_str().unwrap(), &["list"]));
    let err = assert_one_line_error(&out, &["cnfbox setup"]);
    assert!(
        !Path::new(&etc).join("cnfbox").exists(),
        "{err}: nothing written"
    );
    let out = env.run(&etc_args(
        etc.to_str().unwrap(),
        &["--format", "yaml", "list"],
    ));
    assert_one_line_error(&out, &["--format"]);
}

#[test]
fn repair_rebuilds_from_live_container_records() {
    if !can_run("ranges repair from containers") {
        return;
    }
    let mut env = Env::new();
    env.config = None;
    let (etc, alloc) = set_up(&env);
    let held = alloc.allocate("live-pod").unwrap();
    alloc.allocate("gone-pod").unwrap();
    // A container of live-pod, as `create` records it (pod and mapping in
    // the container's cnfbox.json); gone-pod has no container left.
    let dir = env.root.join("c-of-live-pod");
    fs::create_dir_all(&dir).unwrap();
    let record = serde_json::json!({
        "bundle": "/b", "rootfs": "/b/rootfs", "cgroup_path": "/cnfbox/c", "systemd": false,
        "pod": "live-pod", "mapping": held,
    });
    fs::write(dir.join("cnfbox.json"), record.to_string()).unwrap();
    fs::write(alloc.ledger().path(), b"truncated").unwrap();

    let rebuilt: Vec<Value> =
        serde_json::from_str(&env.ok(&etc_args(&etc, &["--format", "json", "repair"]))).unwrap();
    assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
    assert_eq!(rebuilt[0]["pod"], "live-pod");
    assert_eq!(rebuilt[0]["uid"]["host_start"], held.uid.host_id());
    // The live pod keeps its range; a new pod never gets it.
    assert_eq!(alloc.allocate("live-pod").unwrap(), held);
    let other = alloc.allocate("new-pod").unwrap();
    assert_ne!(other.uid.host_id(), held.uid.host_id());
    // gc spares the pod that still has a container.
    let freed: Vec<Value> =
        serde_json::from_str(&env.ok(&etc_args(&etc, &["--format", "json", "gc", "--grace", "0"])))
            .unwrap();
    assert!(freed.iter().all(|e| e["pod"] != "live-pod"), "{freed:?}");
    let out = env.run(&etc_args(&etc, &["release", "live-pod"]));
    assert_one_line_error(&out, &["live-pod", "still has containers"]);
    fs::remove_dir_all(&dir).unwrap();
}
