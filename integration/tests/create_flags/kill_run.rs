//! `kill --all`, a harmless signal to a created or paused container, and
//! `run --keep`.

use super::*;

fn is_zombie_or_gone(pid: i64) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": comm may hold spaces and parentheses.
        Ok(s) => s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => true,
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn kill_all_signals_every_process() {
    if !can_run("kill --all") {
        return;
    }
    let env = Env::new();
    // The init execs into `sleep`: as pid 1 of its namespace it ignores TERM
    // (no handler; pid_namespaces(7)), while its background child does not.
    let bundle = env.bundle("killall", |b| {
        b.args(["/bin/sh", "-c", "sleep 1000 & exec sleep 1001"])
    });
    let id = env.id("killall");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let init = env.wait_status(&id, "running")["pid"].as_i64().unwrap();
    let mut pids = Vec::new();
    wait_until("two processes in the container", || {
        pids = ps_pids(&env, &id);
        pids.len() == 2
    });
    let child = *pids.iter().find(|p| **p != init).expect("background pid");

    // Without --all only the init is signalled: the child lives on.
    env.ok(&["kill", &id, "TERM"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !is_zombie_or_gone(child),
        "kill without --all reached {child}"
    );
    assert_eq!(env.state(&id)["status"], "running");

    env.ok(&["kill", "--all", &id, "TERM"]);
    wait_until("TERM reaches the background child", || {
        is_zombie_or_gone(child)
    });
    assert!(!is_zombie_or_gone(init), "the init ignores TERM");
    assert_eq!(env.state(&id)["status"], "running");

    env.ok(&["kill", "--all", &id, "KILL"]);
    env.wait_status(&id, "stopped");
    wait_until("every process gone", || {
        !Path::new(&format!("/proc/{init}")).exists() && is_zombie_or_gone(child)
    });
    assert_eq!(ps_pids(&env, &id), Vec::<i64>::new());
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn kill_with_a_harmless_signal_keeps_created_and_paused() {
    if !can_run("kill of a created or paused container") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("harmless", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("harmless");
    env.create(&bundle, &id);
    // The waiting init is pid 1 of its namespace with no USR1 handler: the
    // signal is ignored and runc's state stays `created`.
    for all in [false, true] {
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend_from_slice(&[&id, "USR1"]);
        env.ok(&args);
        assert_eq!(env.state(&id)["status"], "created", "after {args:?}");
    }
    env.ok(&["start", &id]);
    env.wait_status(&id, "running");
    env.ok(&["pause", &id]);
    env.ok(&["kill", &id, "USR1"]);
    assert_eq!(env.state(&id)["status"], "paused", "after kill USR1");
    env.ok(&["kill", &id, "KILL"]);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn run_keep_leaves_a_stopped_container_to_delete() {
    if !can_run("run --keep") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("keep", |b| b.scenario(&Scenario::Exit(3)));
    let id = env.id("keep");
    let out = env.run(&[
        "run",
        "--keep",
        "--bundle",
        bundle.dir.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "run --keep passes the exit code"
    );
    let s = env.state(&id);
    assert_eq!(s["status"], "stopped", "{s}");
    assert_eq!(s["pid"], 0, "{s}");
    assert!(env.root.join(&id).exists(), "state dir kept");
    let listed = env.ok(&["list", "--quiet"]);
    assert!(listed.lines().any(|l| l == id), "list: {listed}");
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}
