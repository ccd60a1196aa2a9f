//! The create journal's one teardown (runtime/src/journal): a create that
//! fails at a journal step undoes itself: state dir, journal, staged spec,
//! cgroups on every hierarchy, mounts, pins, hugetlbfs and the range. (One
//! killed there is cleared by `delete --force` alone: `recover_and_check`
//! in main.rs.)

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use super::common::{assert_nothing_left, can_run, Env};
use super::{bundle_with_volume, bundle_with_volume_in, create_with, STEPS};
use test_bundles::Scenario;

/// `cnfbox create` failing at `step` (`CNFBOX_FAILPOINT=fail:<step>`); its
/// stderr through a file (a detached init would hold a pipe open).
fn create_failing_at(env: &Env, bundle: &std::path::Path, id: &str, step: &str) -> (bool, String) {
    let err_path = env.tmp.path().join(format!("{id}.err"));
    let status = env
        .command()
        .args(["create", "-b"])
        .arg(bundle)
        .arg(id)
        .env("CNFBOX_FAILPOINT", format!("fail:{step}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .status()
        .expect("spawn cnfbox create");
    (status.success(), fs::read_to_string(&err_path).unwrap())
}

#[test]
fn create_failing_at_each_step_undoes_everything_itself() {
    if !can_run("failed create") {
        return;
    }
    let env = Env::new();
    let bundle = bundle_with_volume(&env, "failing", &Scenario::Sleep);
    for step in STEPS {
        let id = env.id(&format!("fail-{}", step.trim_start_matches("create:")));
        let (ok, err) = create_failing_at(&env, &bundle.dir, &id, step);
        assert!(!ok, "{step}: create succeeded");
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "{step}: one error line: {err}");
        assert!(
            lines[0].contains(&format!("failpoint {step}")),
            "{step}: the error names the step: {err}"
        );
        assert!(
            !err.contains("teardown"),
            "{step}: teardown complete: {err}"
        );
        // No `delete`, no `ranges gc`: the failed create left nothing.
        assert_nothing_left(&env, &id);
        assert!(
            env.allocator().show(&id).unwrap().is_none(),
            "{step}: the pod's range is still allocated"
        );
    }
    assert!(env.allocator().list().unwrap().is_empty());
}

/// `run` whose start fails (after its create succeeded): the same
/// teardown leaves nothing, with no `delete`.
#[test]
fn a_failed_start_of_run_undoes_the_created_container() {
    if !can_run("failed start") {
        return;
    }
    let env = Env::new();
    let bundle = bundle_with_volume(&env, "failstart", &Scenario::True);
    let id = env.id("failstart");
    let out = env
        .command()
        .args(["run", "-b"])
        .arg(&bundle.dir)
        .arg(&id)
        .env("CNFBOX_FAILPOINT", "fail:run:before-start")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run succeeded: {err}");
    assert!(
        err.contains(&format!("start container {id}"))
            && err.contains("failpoint run:before-start"),
        "{err}"
    );
    assert_nothing_left(&env, &id);
    assert!(env.allocator().show(&id).unwrap().is_none(), "range left");
}

#[test]
fn a_create_of_an_id_whose_killed_create_was_not_cleared_is_refused() {
    if !can_run("journal left") {
        return;
    }
    let env = Env::new();
    let bundle = bundle_with_volume(&env, "leftjournal", &Scenario::Sleep);
    let id = env.id("left");
    let status = create_with(&env, &bundle.dir, &id, Some("create:after-mounts"));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let out = env
        .command()
        .args(["create", "-b"])
        .arg(&bundle.dir)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("already exists") && err.contains("delete --force"),
        "{err}"
    );
    // The refused create touched nothing of the first: its journal still
    // tears all of it down.
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    assert!(env.allocator().show(&id).unwrap().is_none());
}

/// A member whose teardown cannot undo a step keeps its pod's range through
/// its journal, after its state dir is gone: deleting the sandbox (the last
/// container with a record) and `ranges gc` keep it; the member's next
/// `delete --force`, once its step can be undone, frees it.
#[test]
fn an_incomplete_member_teardown_keeps_the_pods_range_past_its_sandbox() {
    if !can_run("incomplete teardown") {
        return;
    }
    let env = Env::new();
    let pod = env.id("tdpod");
    let sandbox = {
        let pod = pod.clone();
        env.bundle("tdsandbox", |b| {
            b.scenario(&Scenario::Sleep).in_pod(pod, "sandbox")
        })
    };
    env.create(&sandbox, &pod);
    let member_bundle = bundle_with_volume_in(
        &env,
        "tdmember",
        &Scenario::Sleep,
        Some((&pod, "container")),
    );
    let member = env.id("tdmember");
    env.create(&member_bundle, &member);
    let range = env
        .allocator()
        .show(&pod)
        .unwrap()
        .expect("the pod's range");
    // Something that is not a mount point in the member's volume views:
    // teardown only unmounts and rmdirs, so its volumes step fails.
    let journal = env.root.join(".journal").join(format!("{member}.json"));
    let j: serde_json::Value = serde_json::from_slice(&fs::read(&journal).unwrap()).unwrap();
    let volumes = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "volumes")
        .and_then(|s| s["dir"].as_str())
        .map(std::path::PathBuf::from)
        .expect("the member's journal records its volume views");
    let junk = volumes.join("junk");
    fs::create_dir_all(&junk).unwrap();
    fs::write(junk.join("file"), b"x").unwrap();
    let out = env.run(&["delete", "--force", &member]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "delete --force succeeded");
    assert!(err.contains("volumes"), "the error names the step: {err}");
    assert!(
        !env.root.join(&member).exists(),
        "the member's state dir stays"
    );
    // The sandbox is the last container with a record; the member's
    // journal still holds the range.
    env.ok(&["delete", "--force", &pod]);
    env.ok(&["ranges", "gc", "--grace", "0"]);
    assert_eq!(
        env.allocator().show(&pod).unwrap().map(|e| e.mapping),
        Some(range.mapping),
        "the range went while the member's teardown was incomplete"
    );
    fs::remove_dir_all(&junk).unwrap();
    env.ok(&["delete", "--force", &member]);
    assert_nothing_left(&env, &member);
    assert_nothing_left(&env, &pod);
    assert!(
        env.allocator().show(&pod).unwrap().is_none(),
        "the member's completed teardown did not free the pod's range"
    );
}

/// Issue 25: a journal planted in the state root (by a host user, when the
/// root was writable by others) whose steps name directories outside
/// cnfbox's paths: host root's `delete --force` removed any directory a
/// `stage` step named (recursively) and unlinked the entries of a
/// `volumes` one. Now neither is touched and the delete says why.
#[test]
fn a_planted_journal_naming_a_host_directory_removes_nothing() {
    if !can_run("planted journal") {
        return;
    }
    let env = Env::new();
    env.ok(&["list"]);
    fs::create_dir_all(env.root.join(".journal")).unwrap();
    let victim = env.tmp.path().join("host-dir");
    fs::create_dir_all(victim.join("sub")).unwrap();
    fs::write(victim.join("sub/precious"), "host").unwrap();
    let victim2 = env.tmp.path().join("host-dir2");
    fs::create_dir_all(&victim2).unwrap();
    fs::write(victim2.join("precious"), "host").unwrap();
    let id = env.id("planted");
    let journal = serde_json::json!({
        "id": id,
        "steps": [
            {"step": "volumes", "dir": victim2},
            {"step": "stage", "dir": victim},
            {"step": "stage", "dir": env.root.join(".staging/../../host-dir")},
        ],
    });
    fs::write(
        env.root.join(".journal").join(format!("{id}.json")),
        journal.to_string(),
    )
    .unwrap();
    let out = env.run(&["delete", "--force", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "delete --force of the planted journal: {:?} {err}",
        out.status
    );
    assert!(
        victim.join("sub/precious").exists(),
        "delete --force removed {} named by a planted journal",
        victim.display()
    );
    assert!(
        victim2.join("precious").exists(),
        "delete --force unlinked an entry of {}",
        victim2.display()
    );
    assert!(!out.status.success(), "the refused steps are reported");
    assert!(
        err.contains("not under cnfbox's own paths") && err.contains("host-dir"),
        "{err}"
    );
}

/// Turns container `id` into one of the previous release: its record moves
/// out of its journal into `<root>/<id>/cnfbox.json`; `keep_journal: false`
/// drops the journal too (the release before, which kept none).
fn as_previous_release(env: &Env, id: &str, keep_journal: bool) {
    let path = env.root.join(".journal").join(format!("{id}.json"));
    let mut journal: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let record = journal
        .as_object_mut()
        .unwrap()
        .remove("record")
        .expect("the journal holds the record");
    fs::write(env.root.join(id).join("cnfbox.json"), record.to_string()).unwrap();
    if keep_journal {
        fs::write(&path, journal.to_string()).unwrap();
    } else {
        fs::remove_file(&path).unwrap();
    }
}

/// A pod made by the previous release (record in `cnfbox.json`, journal
/// without it) and one made by the release before (no journal): both are
/// read where their record is (`state`, `inspect`, `exec` into the member
/// through the sandbox's record, `start`), and `delete` tears each down
/// with nothing left, the pod's range included.
#[test]
fn containers_of_the_previous_releases_are_read_and_deleted() {
    if !can_run("previous release") {
        return;
    }
    let env = Env::new();
    for keep_journal in [true, false] {
        let pod = env.id(if keep_journal { "prev" } else { "older" });
        let member = format!("{pod}-app");
        let sandbox = bundle_with_volume_in(&env, &pod, &Scenario::Sleep, Some((&pod, "sandbox")));
        let app = bundle_with_volume_in(&env, &member, &Scenario::Sleep, Some((&pod, "container")));
        env.create(&sandbox, &pod);
        env.ok(&["start", &pod]);
        for id in [&pod, &member] {
            if id == &member {
                // A member finds its sandbox by the sandbox's record.
                env.create(&app, &member);
            }
            as_previous_release(&env, id, keep_journal);
        }
        let state: serde_json::Value = serde_json::from_str(&env.ok(&["state", &member])).unwrap();
        assert_eq!(state["status"], "created", "{state}");
        assert_eq!(state["bundle"], app.dir.to_str().unwrap(), "{state}");
        let inspect = env.ok(&["inspect", &pod]);
        assert!(
            inspect.contains(&member),
            "inspect does not show the member: {inspect}"
        );
        env.ok(&["start", &member]);
        let uid_map = env.ok(&["exec", &member, "cat", "/proc/self/uid_map"]);
        let range = env
            .allocator()
            .show(&pod)
            .unwrap()
            .expect("the pod's range");
        assert!(
            uid_map.contains(&range.mapping.uid.host_id().to_string()),
            "exec did not run in the pod's user namespace: {uid_map}"
        );
        env.ok(&["delete", "--force", &member]);
        assert!(
            env.allocator().show(&pod).unwrap().is_some(),
            "the sandbox still holds the range"
        );
        env.ok(&["delete", "--force", &pod]);
        for id in [&pod, &member] {
            assert_nothing_left(&env, id);
        }
        assert!(
            env.allocator().show(&pod).unwrap().is_none(),
            "the pod's range stays"
        );
    }
}
