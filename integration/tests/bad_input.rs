//! Bad input: a one-line error naming what was wrong, a non-zero exit, and
//! nothing left behind (state dir, cgroup, mount).

mod common;

use std::fs;

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use test_bundles::Scenario;

#[test]
fn missing_bundle() {
    if !can_run("missing bundle") {
        return;
    }
    let env = Env::new();
    let id = env.id("nob");
    let missing = env.tmp.path().join("no-such-bundle");
    let out = env.run(&["create", "--bundle", missing.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["no-such-bundle"]);
    assert_nothing_left(&env, &id);
}

#[test]
fn malformed_config_names_the_field() {
    if !can_run("malformed config") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("bad", |b| b.scenario(&Scenario::True));
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fs::read(&bundle.config_path).unwrap()).unwrap();
    doc["process"]["user"]["uid"] = serde_json::json!("root");
    fs::write(&bundle.config_path, doc.to_string()).unwrap();
    let id = env.id("malformed");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["config.json", "process.user.uid"]);
    assert_nothing_left(&env, &id);

    fs::write(&bundle.config_path, b"{\"ociVersion\": \"1.0.2\", ").unwrap();
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["malformed", "config.json"]);
    assert_nothing_left(&env, &id);
}

#[test]
fn unsupported_oci_version() {
    if !can_run("ociVersion") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("v2", |b| {
        b.scenario(&Scenario::True).modify(|s| {
            s.set_version("2.0.0".into());
        })
    });
    let id = env.id("v2");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["ociVersion", "2.0.0"]);
    assert_nothing_left(&env, &id);
}

#[test]
fn missing_rootfs() {
    if !can_run("missing rootfs") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("norootfs", |b| b.scenario(&Scenario::True));
    fs::remove_dir_all(&bundle.rootfs).unwrap();
    let id = env.id("norootfs");
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &["root.path", "does not exist"]);
    assert_nothing_left(&env, &id);
}

#[test]
fn duplicate_id_keeps_the_first_container() {
    if !can_run("duplicate id") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("dup", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("dup");
    env.create(&bundle, &id);
    let pid = env.state(&id)["pid"].clone();
    let out = env.run(&["create", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_one_line_error(&out, &[&id, "already exists"]);
    let s = env.state(&id);
    assert_eq!(s["status"], "created");
    assert_eq!(s["pid"], pid, "the first container is untouched");
    assert!(
        !common::cgroup_dirs_named(&id).is_empty(),
        "first container's cgroup kept"
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn unknown_id_for_every_command() {
    if !can_run("unknown id") {
        return;
    }
    let env = Env::new();
    for args in [
        vec!["state", "ghost"],
        vec!["start", "ghost"],
        vec!["kill", "ghost", "KILL"],
        vec!["delete", "ghost"],
        vec!["exec", "ghost", "/bin/true"],
        vec!["ps", "ghost"],
        vec!["pause", "ghost"],
        vec!["resume", "ghost"],
        vec!["events", "--stats", "ghost"],
    ] {
        let out = env.run(&args);
        assert_one_line_error(&out, &["ghost", "does not exist"]);
    }
    let out = env.run(&["state", "../etc"]);
    assert_one_line_error(&out, &["invalid container id"]);
    assert!(!env.root.join("ghost").exists());
}

#[test]
fn invalid_signal() {
    if !can_run("invalid signal") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("sig", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("sig");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    for bad in ["SIGBOGUS", "0x9", "99"] {
        let out = env.run(&["kill", &id, bad]);
        assert_one_line_error(&out, &["invalid signal", bad]);
    }
    assert_eq!(
        env.state(&id)["status"],
        "running",
        "a bad kill leaves it running"
    );
    env.ok(&["kill", &id, "9"]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn failing_process_start_leaves_nothing() {
    if !can_run("bad args") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("noexec", |b| b.args(["/bin/does-not-exist"]));
    let id = env.id("noexec");
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert!(!out.status.success());
    let _ = env.run(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn systemd_cgroup_without_systemd() {
    if !can_run("--systemd-cgroup") {
        return;
    }
    if std::path::Path::new("/run/systemd/system").exists() {
        eprintln!("SKIP systemd_cgroup_without_systemd: systemd runs on this host");
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("sd", |b| b.scenario(&Scenario::True));
    let id = env.id("sd");
    let out = env.run(&[
        "--systemd-cgroup",
        "create",
        "-b",
        bundle.dir.to_str().unwrap(),
        &id,
    ]);
    assert_one_line_error(&out, &["--systemd-cgroup", "systemd is not running"]);
    assert_nothing_left(&env, &id);
}
