//! A container whose init exited and whose pid a host process then took
//! (issue 25): nothing may take that process for the init.

use std::process::{Child, Command};

use super::*;

const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// Starts `sleep` as a host process with pid `pid` (free now): the kernel
/// hands out `ns_last_pid + 1` next, unless another fork comes first, so a
/// few tries.
fn host_process_at(pid: i32) -> Option<Child> {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let child = Command::new("sleep").arg("600").spawn().expect("sleep(1)");
        if child.id() as i32 == pid {
            return Some(child);
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

#[test]
fn a_host_process_that_reused_the_init_pid_is_not_the_container() {
    if !can_run("reused init pid") {
        return;
    }
    let env = Env::new();
    let pod = env.id("reuse");
    let sb = env.bundle("reuse", |b| {
        b.scenario(&Scenario::Sleep)
            .annotation(SANDBOX_ID, pod.clone())
            .annotation(CONTAINER_TYPE, "sandbox")
    });
    env.create(&sb, &pod);
    env.ok(&["start", &pod]);
    let pid = env.state(&pod)["pid"].as_i64().unwrap() as i32;
    env.ok(&["kill", &pod, "KILL"]);
    env.wait_status(&pod, "stopped");
    // The init is reaped (by whoever adopted it) before its pid is free.
    let mut host = None;
    for _ in 0..200 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            host = host_process_at(pid);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let Some(mut host) = host else {
        eprintln!("SKIP reused init pid: could not start a host process at pid {pid} (ns_last_pid raced by other forks)");
        env.ok(&["delete", "--force", &pod]);
        return;
    };

    let state = env.state(&pod);
    assert_eq!(state["status"], "stopped", "{state}");
    assert_ne!(state["pid"].as_i64(), Some(i64::from(pid)), "{state}");
    let inspect = env.ok(&["inspect", &pod, "--format", "json"]);
    assert!(!inspect.contains("\"running\""), "inspect: {inspect}");
    // exec would have joined the host process's namespaces as real root.
    let out = env.run(&["exec", &pod, "sh", "-c", "echo ran-on-host"]);
    assert!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("ran-on-host"),
        "exec ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_one_line_error(&out, &["exec in container", &pod, "not running"]);
    let out = env.run(&["kill", &pod, "KILL"]);
    assert_one_line_error(&out, &["not running"]);
    for cmd in [&["pause", &pod][..], &["events", "--stats", &pod][..]] {
        let out = env.run(cmd);
        assert!(!out.status.success(), "{cmd:?} acted on the host process");
    }
    // A member joining the pod through /proc/<pid>/ns/* of that process.
    let member = env.id("reusem");
    let mb = env.bundle("reusem", |b| {
        b.scenario(&Scenario::Sleep)
            .annotation(SANDBOX_ID, pod.clone())
            .annotation(CONTAINER_TYPE, "container")
    });
    let out = env.run(&["create", "-b", mb.dir.to_str().unwrap(), &member]);
    assert_one_line_error(&out, &["no running sandbox", &pod]);
    assert_nothing_left(&env, &member);
    assert!(
        alive(&mut host),
        "a cnfbox command signalled host pid {pid}"
    );

    env.ok(&["delete", &pod]);
    assert!(alive(&mut host), "delete signalled host pid {pid}");
    assert_nothing_left(&env, &pod);
    let _ = host.kill();
    let _ = host.wait();
}
