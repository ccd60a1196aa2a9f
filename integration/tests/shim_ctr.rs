//! `containerd-shim-cnfbox-v2` under a real, private containerd 1.6,
//! driven with `ctr run --runtime io.containerd.cnfbox.v2`.
//!
//! containerd finds the shim as `containerd-shim-cnfbox-v2` on its `PATH`
//! (a temporary bin dir holding the built shim and `cnfbox`), and passes
//! its environment (`CNFBOX_CONFIG`: this test's own pool and ledger) to
//! the shim and so to the runtime.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::thread::sleep;
use std::time::Duration;

use common::{can_run, cnfbox_bin, Env};
use test_bundles::containerd::missing_tool;
use test_bundles::{ImageBuilder, PrivateContainerd, StartOptions, DEFAULT_IMAGE_REF};

const RUNTIME: &str = "io.containerd.cnfbox.v2";
const SHIM: &str = "containerd-shim-cnfbox-v2";
/// containerd's default snapshotter: cnfbox views an overlay rootfs through
/// id-mapped layers (runtime/src/overlay.rs).
const SNAPSHOTTER: &str = "overlayfs";

/// A private containerd that knows the cnfbox shim, with busybox imported.
struct Node {
    env: Env,
    cd: PrivateContainerd,
    _bin: tempfile::TempDir,
}

fn shim_bin() -> PathBuf {
    cnfbox_bin().with_file_name(SHIM)
}

fn node(test: &str) -> Option<Node> {
    if !can_run(test) {
        return None;
    }
    if let Some(tool) = missing_tool() {
        eprintln!("SKIP {test}: {tool} not installed (apt-get install containerd runc util-linux)");
        return None;
    }
    let shim = shim_bin();
    assert!(
        shim.exists(),
        "{} is missing: run `cargo build -p cnfbox -p cnfbox-shim` first",
        shim.display()
    );
    let bin = tempfile::Builder::new()
        .prefix("cnfbox-shim-bin-")
        .tempdir()
        .expect("bin dir");
    std::os::unix::fs::symlink(&shim, bin.path().join(SHIM)).expect("link shim");
    std::os::unix::fs::symlink(cnfbox_bin(), bin.path().join("cnfbox")).expect("link cnfbox");
    let env = Env::new();
    let opts = StartOptions {
        path_prepend: vec![bin.path().to_owned()],
        env: vec![(
            "CNFBOX_CONFIG".into(),
            env.config.clone().expect("env config").into(),
        )],
        cri: false,
    };
    let cd = PrivateContainerd::start_with("", &opts).expect("start private containerd");
    eprintln!("{test}: containerd {}", cd.version());
    let archive = ImageBuilder::busybox()
        .write(&env.tmp.path().join("busybox.tar"))
        .expect("write busybox image");
    cd.ctr_ok([Path::new("images"), Path::new("import"), &archive.path])
        .expect("ctr images import");
    Some(Node { env, cd, _bin: bin })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Node {
    fn ctr(&self, args: &[&str]) -> Output {
        self.cd
            .ctr()
            .env("CONTAINERD_SNAPSHOTTER", SNAPSHOTTER)
            .args(args)
            .output()
            .expect("spawn ctr")
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}): {}\n{}\ncontainerd log tail:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            self.log_tail()
        );
        text(&out.stdout)
    }

    fn log_tail(&self) -> String {
        let log = self.cd.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `ctr run -d` of `cmd` in a fresh container `id`.
    fn run_detached(&self, id: &str, extra: &[&str], cmd: &[&str]) {
        let mut args = vec!["run", "-d", "--runtime", RUNTIME];
        args.extend_from_slice(extra);
        args.extend([DEFAULT_IMAGE_REF, id]);
        args.extend_from_slice(cmd);
        self.ctr_ok(&args);
        self.wait_task(id, "RUNNING");
    }

    fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr(&["tasks", "ls"]);
        text(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
    }

    fn wait_task(&self, id: &str, want: &str) {
        for _ in 0..400 {
            if self.task_status(id).as_deref() == Some(want) {
                return;
            }
            sleep(Duration::from_millis(25));
        }
        panic!(
            "task {id} never reached {want} (now {:?})\n{}",
            self.task_status(id),
            self.log_tail()
        );
    }

    /// Kills, deletes and removes container `id`.
    fn remove(&self, id: &str) {
        if self.task_status(id).is_some() {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            self.ctr_ok(&["tasks", "delete", "-f", id]);
        }
        self.ctr_ok(&["containers", "rm", id]);
    }

    /// A path as containerd (and the shim) see it: its /run is private.
    fn in_ns(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.cd.pid())).join(p.trim_start_matches('/'))
    }

    /// Pids of shims serving container or pod `id` of this containerd.
    fn shims(&self) -> Vec<i32> {
        let ns = self.cd.namespace();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args.first().is_some_and(|a| a.ends_with(SHIM));
            let ours = args.windows(2).any(|w| w[0] == "-namespace" && w[1] == ns);
            let serving = args.iter().any(|a| a == "-socket");
            if is_shim && ours && serving {
                pids.push(pid);
            }
        }
        pids
    }

    /// Nothing of container `id` is left: runtime state, mounts in
    /// containerd's namespace, cgroups, host ID range.
    fn assert_nothing_left(&self, id: &str) {
        let state = self.in_ns(&format!(
            "/run/containerd/cnfbox/{}/{id}",
            self.cd.namespace()
        ));
        assert!(!state.exists(), "runtime state {} left", state.display());
        let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", self.cd.pid()))
            .unwrap_or_default();
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(id)).collect();
        assert!(left.is_empty(), "mounts of {id} left: {left:#?}");
        let cgroups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|h| h.path().join(self.cd.namespace()).join(id))
            .filter(|p| p.exists())
            .collect();
        assert!(cgroups.is_empty(), "cgroups of {id} left: {cgroups:?}");
        let held = self.env.allocator().show(id).expect("read ledger");
        assert!(held.is_none(), "host ID range of {id} left: {held:?}");
    }
}

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

#[test]
fn containers_of_one_pod_share_one_shim() {
    let Some(n) = node("containers_of_one_pod_share_one_shim") else {
        return;
    };
    let pod = n.env.id("pod");
    let member = n.env.id("member");
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
    n.run_detached(
        &member,
        &[
            "--annotation",
            &sandbox_ann,
            "--annotation",
            "io.kubernetes.cri.container-type=container",
        ],
        &["/bin/sleep", "100000"],
    );
    assert_eq!(n.shims().len(), 1, "one shim for the pod: {:?}", n.shims());
    let uid_map = |id: &str| {
        n.ctr_ok(&[
            "tasks",
            "exec",
            "--exec-id",
            "m",
            id,
            "cat",
            "/proc/self/uid_map",
        ])
    };
    assert_eq!(
        uid_map(&pod),
        uid_map(&member),
        "the member shares the pod's range"
    );
    n.remove(&member);
    assert_eq!(n.shims().len(), 1, "the pod's shim stays for the sandbox");
    n.remove(&pod);
    n.assert_nothing_left(&member);
    n.assert_nothing_left(&pod);
    n.cd.stop().expect("stop containerd");
}

#[test]
fn killed_shim_is_cleaned_up_by_a_fresh_shim_delete() {
    let Some(n) = node("killed_shim_is_cleaned_up_by_a_fresh_shim_delete") else {
        return;
    };
    let id = n.env.id("orphan");
    n.run_detached(&id, &[], &["/bin/sleep", "100000"]);
    let shims = n.shims();
    assert_eq!(shims.len(), 1, "shims: {shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the shim");
    // containerd sees the shim go and runs `containerd-shim-cnfbox-v2 delete`.
    for _ in 0..400 {
        if n.task_status(&id).is_none() && n.env.allocator().show(&id).expect("ledger").is_none() {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    let _ = n.ctr(&["tasks", "delete", "-f", &id]);
    n.ctr_ok(&["containers", "rm", &id]);
    n.assert_nothing_left(&id);
    n.cd.stop().expect("stop containerd");
}

#[test]
fn pods_survive_a_containerd_restart() {
    let Some(mut n) = node("pods_survive_a_containerd_restart") else {
        return;
    };
    let id = n.env.id("survive");
    n.run_detached(&id, &[], &["/bin/sleep", "100000"]);
    let shims = n.shims();
    n.cd.restart().expect("restart containerd");
    n.wait_task(&id, "RUNNING");
    assert_eq!(n.shims(), shims, "the same shim serves after the restart");
    let out = n.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "after",
        &id,
        "echo",
        "still-here",
    ]);
    assert_eq!(out.trim(), "still-here");
    n.remove(&id);
    n.assert_nothing_left(&id);
    n.cd.stop().expect("stop containerd");
}

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
