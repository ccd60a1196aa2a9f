//! What the shim reports and cleans when processes die: TaskOOM for an
//! OOM kill, and the leftovers of a shared PID namespace killed with the
//! init.

use super::*;

#[test]
fn oom_kill_publishes_task_oom() {
    let Some(n) = node("oom_kill_publishes_task_oom") else {
        return;
    };
    let id = n.env.id("oom");
    let mut events =
        n.cd.ctr()
            .arg("events")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ctr events");
    let out = n.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--memory-limit",
        "33554432",
        DEFAULT_IMAGE_REF,
        &id,
        "/bin/sh",
        "-c",
        // tail buffers a "line" of zeros without end: the cgroup's OOM
        // killer ends it.
        "tail /dev/zero",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "OOM-killed: {}",
        text(&out.stderr)
    );
    // The events stream is read after the fact: stop it and collect.
    let _ = events.kill();
    let got = events.wait_with_output().expect("ctr events output");
    let stream = text(&got.stdout);
    let oom = stream
        .lines()
        .any(|l| l.contains("/tasks/oom") && l.contains(&id));
    assert!(oom, "no /tasks/oom event for {id}:\n{stream}");
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(
            stream.lines().any(|l| l.contains(topic) && l.contains(&id)),
            "no {topic} event for {id}:\n{stream}"
        );
    }
    n.assert_nothing_left(&id);
    n.cd.stop().expect("stop containerd");
}

/// Host pid of a live (not zombie) `sleep ARG` process, if any.
fn live_sleep(arg: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.len() >= 2
                && args[0].ends_with(b"sleep")
                && args[1] == arg.as_bytes()
                && alive(*pid)
        })
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// containerd 2.x waits for a task's output to close before it reports the
/// exit: a process the init of a container that shares a PID namespace
/// left behind (here a background `sleep` holding stdout) would hang the
/// pod's stop. The shim kills what is left in the container's cgroup when
/// its init exits, as containerd's runc shim does; without that the
/// background sleep survives the task.
#[test]
fn shared_pid_namespace_leftovers_die_with_the_init() {
    let Some(n) = node("shared_pid_namespace_leftovers_die_with_the_init") else {
        return;
    };
    let pod = n.env.id("pidpod");
    let member = n.env.id("pidmember");
    let sandbox_ann = format!("io.kubernetes.cri.sandbox-id={pod}");
    n.run_detached(
        &pod,
        &[
            "--annotation",
            &sandbox_ann,
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
        ],
        &["/bin/sleep", "100000"],
    );
    let pod_pid = n
        .ctr_ok(&["tasks", "ls"])
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pod.as_str()))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .expect("the pod's pid in ctr tasks ls");
    let pid_ns = format!("pid:/proc/{pod_pid}/ns/pid");
    // Unique to this test run: the orphan is found by its argument.
    let marker = (900_000 + std::process::id()).to_string();
    let script = format!("sleep {marker} & exec sleep 100000");
    n.run_detached(
        &member,
        &[
            "--annotation",
            &sandbox_ann,
            "--annotation",
            "io.kubernetes.cri.container-type=container",
            "--with-ns",
            &pid_ns,
        ],
        &["/bin/sh", "-c", &script],
    );
    let mut orphan = None;
    for _ in 0..400 {
        orphan = live_sleep(&marker);
        if orphan.is_some() {
            break;
        }
        sleep(Duration::from_millis(25));
    }
    let orphan = orphan.expect("the member's background sleep runs");
    let ns_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("ns link");
    assert_eq!(
        ns_of(&orphan.to_string()),
        ns_of(&pod_pid),
        "the member shares the pod's PID namespace"
    );
    n.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &member]);
    n.wait_task(&member, "STOPPED");
    // The shim's SIGKILL is sent before the exit is reported; give the
    // kernel a moment to finish the process off.
    for _ in 0..400 {
        if !alive(orphan) {
            break;
        }
        sleep(Duration::from_millis(25));
    }
    assert!(
        !alive(orphan),
        "the member's background sleep {orphan} outlived its init"
    );
    n.ctr_ok(&["tasks", "delete", &member]);
    n.ctr_ok(&["containers", "rm", &member]);
    n.assert_nothing_left(&member);
    n.wait_task(&pod, "RUNNING");
    n.remove(&pod);
    n.assert_nothing_left(&pod);
    n.cd.stop().expect("stop containerd");
}
