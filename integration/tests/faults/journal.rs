//! The create journal's one teardown (runtime/src/journal): a create that
//! fails at a journal step undoes itself: state dir, journal, staged spec,
//! cgroups on every hierarchy, mounts, pins, hugetlbfs and the range. (One
//! killed there is cleared by `delete --force` alone: `recover_and_check`
//! in main.rs.)

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use super::common::{assert_nothing_left, can_run, Env};
use super::{bundle_with_volume, create_with, STEPS};
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
