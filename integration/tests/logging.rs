//! `--log FILE --log-format json` writes runc's JSON lines, which containerd
//! parses (go-runc: level, msg, time per line; the last error is reported).

mod common;

use common::{can_run, Env};
use test_bundles::Scenario;

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn json_log_lines_parse_as_runcs() {
    if !can_run("json log") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("log", |b| b.scenario(&Scenario::True));
    let log = env.tmp.path().join("log.json");
    let id = env.id("log");
    let log_s = log.to_str().unwrap();
    let out = env.run(&[
        "--log",
        log_s,
        "--log-format",
        "json",
        "run",
        "-b",
        bundle.dir.to_str().unwrap(),
        &id,
    ]);
    assert!(out.status.success(), "{out:?}");
    let ok_lines = lines(&log);
    assert!(!ok_lines.is_empty(), "a successful run logs at info level");
    for l in &ok_lines {
        let level = l["level"].as_str().expect("level");
        assert!(
            ["debug", "info", "warning", "error"].contains(&level),
            "{l}"
        );
        assert!(l["msg"].is_string(), "{l}");
        let time = l["time"].as_str().expect("time");
        assert!(time.ends_with('Z') && time.contains('T'), "{l}");
    }

    let out = env.run(&[
        "--log",
        log_s,
        "--log-format",
        "json",
        "kill",
        "nope",
        "KILL",
    ]);
    assert!(!out.status.success());
    let all = lines(&log);
    let last = all.last().unwrap();
    assert_eq!(last["level"], "error", "{last}");
    assert!(
        last["msg"]
            .as_str()
            .unwrap()
            .contains("nope does not exist"),
        "{last}"
    );
}

#[test]
fn text_log_and_bad_format() {
    if !can_run("text log") {
        return;
    }
    let env = Env::new();
    let log = env.tmp.path().join("log.txt");
    let out = env.run(&["--log", log.to_str().unwrap(), "state", "nope"]);
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("level=error") && text.contains("nope does not exist"),
        "{text}"
    );
    let out = env.run(&["--log-format", "xml", "list"]);
    common::assert_one_line_error(&out, &["--log-format", "xml"]);
}

/// The JSON error line says what kind of failure it was, so that the shim
/// maps "no such container" to NOT_FOUND without reading words: a missing
/// bind source ("... does not exist") is `failed`, an unknown id
/// `not_found`.
#[test]
fn error_lines_carry_their_kind() {
    if !can_run("error kind") {
        return;
    }
    let env = Env::new();
    let log = env.tmp.path().join("kind.json");
    let log_s = log.to_str().unwrap();
    let last_error = || {
        lines(&log)
            .into_iter()
            .rev()
            .find(|l| l["level"] == "error")
            .expect("an error line")
    };
    let out = env.run(&["--log", log_s, "--log-format", "json", "state", "ghost"]);
    assert!(!out.status.success());
    let e = last_error();
    assert_eq!(e["kind"], "not_found", "{e}");

    let bundle = env.bundle("nobind", |b| {
        b.scenario(&Scenario::True).modify(|s| {
            let mut mounts = s.mounts().clone().unwrap_or_default();
            mounts.push(
                oci_spec::runtime::MountBuilder::default()
                    .destination("/data")
                    .typ("bind")
                    .source("/nonexistent/cnfbox-bind-source")
                    .options(vec!["rbind".to_string()])
                    .build()
                    .unwrap(),
            );
            s.set_mounts(Some(mounts));
        })
    });
    let id = env.id("nobind");
    let out = env.run(&[
        "--log",
        log_s,
        "--log-format",
        "json",
        "create",
        "-b",
        bundle.dir.to_str().unwrap(),
        &id,
    ]);
    assert!(!out.status.success());
    let e = last_error();
    assert!(
        e["msg"].as_str().unwrap().contains("cnfbox-bind-source"),
        "{e}"
    );
    assert_eq!(e["kind"], "failed", "{e}");
    common::assert_nothing_left(&env, &id);

    // A kill of a container whose init exited: `not_running`, which the
    // shim answers NOT_FOUND for (containerd's CRI then goes on stopping
    // the pod, as with runc's "container not running").
    let bundle = env.bundle("exited", |b| b.scenario(&Scenario::True));
    let id = env.id("exited");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    env.wait_status(&id, "stopped");
    let out = env.run(&["--log", log_s, "--log-format", "json", "kill", &id, "KILL"]);
    assert!(!out.status.success());
    let e = last_error();
    assert!(
        e["msg"].as_str().unwrap().contains("container not running"),
        "{e}"
    );
    assert_eq!(e["kind"], "not_running", "{e}");
    env.ok(&["delete", &id]);
    common::assert_nothing_left(&env, &id);
}
