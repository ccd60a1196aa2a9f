//! Tasks through the shim with `ctr`: run, exec, kill, pause, metrics,
//! the container's seccomp profile on an exec, a terminal.

use super::*;

/// The container's uid_map first line, as "inside outside count".
fn uid_map_of(out: &str) -> Vec<u64> {
    out.lines()
        .find_map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect();
            (v.len() == 3).then_some(v)
        })
        .expect("a uid_map line")
}

#[test]
fn ctr_run_output_exit_code_and_user_namespace() {
    let Some(n) = node("ctr_run_output_exit_code_and_user_namespace") else {
        return;
    };
    let id = n.env.id("run");
    let out = n.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        DEFAULT_IMAGE_REF,
        &id,
        "/bin/sh",
        "-c",
        "echo hello from cnfbox; cat /proc/self/uid_map; echo owner=$(stat -c %u /bin/busybox); \
         echo data > /written && echo wrote=$(stat -c %u /written); echo oops >&2; exit 3",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code; stderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("hello from cnfbox"), "stdout: {stdout}");
    assert!(
        text(&out.stderr).contains("oops"),
        "stderr: {}",
        text(&out.stderr)
    );
    // The image's root-owned files are root's inside (an id-mapped view of
    // the overlay's layers), and what container root writes is root's too.
    assert!(
        stdout.contains("owner=0"),
        "image file owner inside: {stdout}"
    );
    assert!(
        stdout.contains("wrote=0"),
        "written file owner inside: {stdout} {}",
        text(&out.stderr)
    );
    let map = uid_map_of(&stdout);
    assert_eq!(map[0], 0, "uid 0 inside");
    assert!(
        map[1] >= 1 << 31,
        "uid 0 maps to the test pool, not to host root: {map:?}"
    );
    assert!(map[2] >= 65536, "a pod-sized range: {map:?}");
    n.assert_nothing_left(&id);
    assert!(n.shims().is_empty(), "shim left: {:?}", n.shims());
    n.cd.stop().expect("stop containerd");
}

#[test]
fn ctr_exec_kill_pause_metrics_and_cleanup() {
    let Some(n) = node("ctr_exec_kill_pause_metrics_and_cleanup") else {
        return;
    };
    let id = n.env.id("exec");
    n.run_detached(&id, &[], &["/bin/sleep", "100000"]);
    // Range held while the pod runs.
    let held = n.env.allocator().show(&id).expect("ledger");
    assert!(held.is_some(), "no host ID range for the running pod {id}");

    let out = n.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "/bin/sh",
        "-c",
        "echo in-exec; id -u",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["in-exec", "0"],
        "exec output"
    );
    // The exec gets the init's supplementary groups, none of the shim's
    // host groups (an unmapped host group would read as 65534).
    let groups = n.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "g",
        &id,
        "/bin/sh",
        "-c",
        "grep ^Groups: /proc/1/status; grep ^Groups: /proc/self/status",
    ]);
    let lines: Vec<&str> = groups.lines().collect();
    assert_eq!(lines.len(), 2, "{groups}");
    assert_eq!(lines[0], lines[1], "exec groups differ from the init's");
    assert!(
        !groups.contains("65534"),
        "an unmapped group leaked in: {groups}"
    );
    let failed = n.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        &id,
        "/bin/sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(failed.status.code(), Some(7), "exec exit status");

    let ps = n.ctr_ok(&["tasks", "ps", &id]);
    assert!(ps.lines().count() >= 2, "ps lists the init: {ps}");

    n.ctr_ok(&["tasks", "pause", &id]);
    n.wait_task(&id, "PAUSED");
    n.ctr_ok(&["tasks", "resume", &id]);
    n.wait_task(&id, "RUNNING");

    let metrics = n.ctr_ok(&["tasks", "metrics", &id]);
    // ctr prints io.containerd.cgroups.v1.Metrics as memory.usage_in_bytes,
    // v2 (what a unified host gets) as memory.usage_limit.
    let memory = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "memory.usage_limit"
    } else {
        "memory.usage_in_bytes"
    };
    assert!(
        metrics.contains(memory) && metrics.contains("pids.current"),
        "metrics: {metrics}"
    );

    // One shim for the container.
    assert_eq!(n.shims().len(), 1, "shims: {:?}", n.shims());
    // sleep is the pid namespace's init: only SIGKILL ends it.
    n.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    n.wait_task(&id, "STOPPED");
    n.ctr_ok(&["tasks", "delete", &id]);
    n.ctr_ok(&["containers", "rm", &id]);
    n.assert_nothing_left(&id);
    for _ in 0..200 {
        if n.shims().is_empty() {
            break;
        }
        sleep(Duration::from_millis(25));
    }
    assert!(
        n.shims().is_empty(),
        "shim survives its last container: {:?}",
        n.shims()
    );
    n.cd.stop().expect("stop containerd");
}

/// `ctr tasks exec` (containerd's exec: a process file to `cnfbox exec -p`)
/// into a container with containerd's default seccomp profile runs under
/// that profile: `Seccomp: 2`, and `unshare(CLONE_NEWUSER)`, which the
/// profile denies without CAP_SYS_ADMIN, fails. Without a profile both
/// differ, so the checks can fail.
#[test]
fn ctr_exec_runs_under_the_containers_seccomp_profile() {
    let Some(n) = node("ctr_exec_runs_under_the_containers_seccomp_profile") else {
        return;
    };
    let probe = "grep ^Seccomp: /proc/self/status | tr -d '\\t '; \
                 if unshare -U /bin/true 2>/dev/null; then echo unshare=ok; else echo unshare=denied; fi";
    for (name, flags, want) in [
        (
            "seccomp",
            &["--seccomp"][..],
            ["Seccomp:2", "unshare=denied"],
        ),
        ("plain", &[][..], ["Seccomp:0", "unshare=ok"]),
    ] {
        let id = n.env.id(name);
        n.run_detached(&id, flags, &["/bin/sleep", "100000"]);
        let init = n.ctr_ok(&[
            "tasks",
            "exec",
            "--exec-id",
            "i",
            &id,
            "/bin/sh",
            "-c",
            "grep ^Seccomp: /proc/1/status | tr -d '\\t '",
        ]);
        assert_eq!(init.trim(), want[0], "{name}: the init");
        let out = n.ctr_ok(&[
            "tasks",
            "exec",
            "--exec-id",
            "p",
            &id,
            "/bin/sh",
            "-c",
            probe,
        ]);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            want,
            "{name}: the exec'd process"
        );
        n.remove(&id);
        n.assert_nothing_left(&id);
    }
    n.cd.stop().expect("stop containerd");
}

#[test]
fn ctr_run_with_a_terminal() {
    use std::io::Read;
    let Some(n) = node("ctr_run_with_a_terminal") else {
        return;
    };
    let id = n.env.id("tty");
    // ctr insists on a terminal for -t: give it a pty of the test's own,
    // 33x101, whose size ctr passes on to the container with ResizePty.
    let size = nix::pty::Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let slave = |fd: &std::os::fd::OwnedFd| Stdio::from(fd.try_clone().expect("dup pty slave"));
    let mut cmd = n.cd.ctr();
    cmd.env("CONTAINERD_SNAPSHOTTER", SNAPSHOTTER)
        .args(["run", "--rm", "-t", "--runtime", RUNTIME, DEFAULT_IMAGE_REF, &id])
        .args(["/bin/sh", "-c"])
        // The pty starts at 0x0 (busybox stty then fails) and ctr resizes
        // it right after Start: wait for that event.
        .arg(
            "tty; test -t 0 && echo stdin-is-a-tty; i=0; \
             until stty size 2>/dev/null | grep -q '^[1-9]' || [ $i -ge 1200 ]; do sleep 0.05; i=$((i+1)); done; \
             echo size=$(stty size)",
        )
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave));
    let mut child = cmd.spawn().expect("spawn ctr run -t");
    drop(cmd);
    drop(pty.slave);
    // Reads until every slave fd (ctr's) is closed: EIO on the master.
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(k) = master.read(&mut buf) {
            if k == 0 {
                break;
            }
            out.extend_from_slice(&buf[..k]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let status = child.wait().expect("wait ctr");
    let stdout = reader.join().expect("pty reader");
    assert!(status.success(), "ctr run -t: {status}: {stdout}");
    assert!(stdout.contains("/dev/pts/"), "tty: {stdout}");
    assert!(stdout.contains("stdin-is-a-tty"), "stdin: {stdout}");
    assert!(stdout.contains("size=33 101"), "ResizePty: {stdout}");
    n.assert_nothing_left(&id);
    n.cd.stop().expect("stop containerd");
}
