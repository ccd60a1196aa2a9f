//! OCI hooks through the `cnfbox` CLI: what they see, and what a failing
//! one leaves (nothing, for poststop: runc warns and deletes).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use common::{assert_nothing_left, can_run, Env};
use test_bundles::Scenario;

/// Hooks of every kind read the state on their stdin and find the bundle
/// the user gave (runc's behaviour, and what `state` reports), not
/// cnfbox's staged copy: those in the runtime's namespaces, and
/// createContainer and startContainer, which libcontainer runs from the
/// container's init; the runtime-namespace hooks' argv are theirs.
#[test]
fn hooks_get_the_users_bundle() {
    if !can_run("hooks") {
        return;
    }
    let env = Env::new();
    let out = env.tmp.path().join("hook-out");
    fs::create_dir(&out).unwrap();
    let hook = env.tmp.path().join("record-hook");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat > {}/\"$1\".json\necho \"$0 $*\" > {}/\"$1\".argv\n",
            out.display(),
            out.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let kinds = ["prestart", "createRuntime", "poststart", "poststop"];
    let bundle = env.bundle("hooks", |b| {
        let hook = hook.clone();
        b.scenario(&Scenario::Sleep).modify(move |s| {
            let mk = |kind: &str| {
                vec![oci_spec::runtime::HookBuilder::default()
                    .path(&hook)
                    .args(vec!["recorder".to_string(), kind.to_string()])
                    .build()
                    .unwrap()]
            };
            // The in-container hooks run as pod root, which cannot reach the
            // test's private directory: they print their state on the
            // init's stderr (the create's), one marked line each. The
            // createContainer path resolves on the host (the host's sh),
            // startContainer's in the rootfs (busybox sh).
            let shout = |kind: &str| {
                vec![oci_spec::runtime::HookBuilder::default()
                    .path("/bin/sh")
                    .args(vec![
                        "sh".to_string(),
                        "-c".to_string(),
                        format!("printf '\\nhook-state {kind} ' >&2; cat >&2; echo >&2"),
                    ])
                    .env(vec!["PATH=/usr/bin:/bin".to_string()])
                    .build()
                    .unwrap()]
            };
            let hooks = oci_spec::runtime::HooksBuilder::default()
                .prestart(mk("prestart"))
                .create_runtime(mk("createRuntime"))
                .create_container(shout("createContainer"))
                .start_container(shout("startContainer"))
                .poststart(mk("poststart"))
                .poststop(mk("poststop"))
                .build()
                .unwrap();
            s.set_hooks(Some(hooks));
        })
    });
    let id = env.id("hooks");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let want = fs::canonicalize(&bundle.dir).unwrap();
    assert_eq!(env.state(&id)["bundle"], want.to_str().unwrap());
    env.ok(&["delete", "--force", &id]);
    let printed = fs::read_to_string(env.tmp.path().join(format!("{id}.create.err"))).unwrap();
    for kind in ["createContainer", "startContainer"] {
        let marker = format!("hook-state {kind} ");
        let line = printed
            .lines()
            .find_map(|l| l.strip_prefix(&marker))
            .unwrap_or_else(|| panic!("{kind} hook did not run: {printed}"));
        let state: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{kind}: state is not JSON ({e}): {line}"));
        assert_eq!(state["bundle"], want.to_str().unwrap(), "{kind}: {state}");
        assert_eq!(state["id"], id, "{kind}");
    }
    for kind in kinds {
        let state: serde_json::Value = serde_json::from_slice(
            &fs::read(out.join(format!("{kind}.json")))
                .unwrap_or_else(|e| panic!("{kind} hook did not run: {e}")),
        )
        .unwrap_or_else(|e| panic!("{kind}: state is not JSON: {e}"));
        assert_eq!(state["bundle"], want.to_str().unwrap(), "{kind}: {state}");
        assert_eq!(state["id"], id, "{kind}");
        let argv = fs::read_to_string(out.join(format!("{kind}.argv"))).unwrap();
        assert_eq!(argv.trim(), format!("{} {kind}", hook.display()), "{kind}");
    }
    assert_nothing_left(&env, &id);
}

/// A poststop hook that exits non-zero does not strand the container:
/// `delete` finishes the teardown (state dir, rootfs view, the pod's range
/// all go, as runc deletes after warning) and says which hook failed. Each
/// `delete` used to fail after libcontainer had removed the cgroup, and
/// even `delete --force` left the state dir, view and range for good.
#[test]
fn a_failing_poststop_hook_is_reported_and_the_container_still_deleted() {
    if !can_run("failing poststop hook") {
        return;
    }
    let env = Env::new();
    let hook = env.tmp.path().join("failing-poststop");
    fs::write(&hook, "#!/bin/sh\ncat >/dev/null\nexit 3\n").unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    // A hook before it that passes and one after it that never runs: the
    // warning names the failing one only.
    let ok = env.tmp.path().join("passing-poststop");
    fs::write(&ok, "#!/bin/sh\ncat >/dev/null\nexit 0\n").unwrap();
    fs::set_permissions(&ok, fs::Permissions::from_mode(0o755)).unwrap();
    let later = env.tmp.path().join("later-poststop");
    fs::write(&later, "#!/bin/sh\ncat >/dev/null\nexit 0\n").unwrap();
    fs::set_permissions(&later, fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = env.bundle("poststop", |b| {
        let hooks: Vec<_> = [&ok, &hook, &later]
            .iter()
            .map(|p| {
                oci_spec::runtime::HookBuilder::default()
                    .path(p.as_path())
                    .build()
                    .unwrap()
            })
            .collect();
        b.scenario(&Scenario::Sleep).modify(move |s| {
            let hooks = oci_spec::runtime::HooksBuilder::default()
                .poststop(hooks)
                .build()
                .unwrap();
            s.set_hooks(Some(hooks));
        })
    });
    for force in [false, true] {
        let id = env.id("poststop");
        env.create(&bundle, &id);
        env.ok(&["start", &id]);
        env.ok(&["kill", &id, "KILL"]);
        let stopped = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            env.state(&id)["status"] == "stopped"
        });
        assert!(stopped, "{id} did not stop");
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(&id);
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "delete {force}: {out:?}");
        assert!(
            err.contains("poststop") && err.contains(hook.to_str().unwrap()),
            "the warning names the failing hook: {err}"
        );
        assert!(err.contains("exit code: 3"), "and its status: {err}");
        for other in [&ok, &later] {
            assert!(
                !err.contains(other.to_str().unwrap()),
                "only the failing hook is named: {err}"
            );
        }
        assert_nothing_left(&env, &id);
    }
}
