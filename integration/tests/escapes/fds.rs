//! The runtime binary and host fds seen from inside.

use super::*;

// ---------------------------------------------------------------------------
// CVE-2019-5736 class: the runtime binary seen through /proc/<pid>/exe of a
// process entering the container.

const EXE_SCANNER: &str = r#"
me=$$
i=0
while [ ! -e /tmp/stop ]; do
  i=$((i+1))
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$me" ] && continue
    l=$(readlink $d/exe 2>/dev/null) || l=unreadable
    case "$l" in /bin/*) continue;; esac
    [ -d $d ] || continue
    echo "seen=$p:$l"
    if ( exec 3>>$d/exe ) 2>/dev/null; then echo "opened=$p:$l"; fi
  done
done
echo loops=$i
if ( exec 3>>/bin/cnfbox-check ) 2>/dev/null; then echo control=ok; else echo control=fail; fi
"#;

#[test]
fn proc_self_exe_of_an_entering_process_is_not_writable() {
    if !can_run("proc self exe") {
        return;
    }
    let env = Env::new();
    let bin = common::cnfbox_bin();
    let before = sha(&bin);
    let bundle = env.bundle("exe", |b| {
        b.args(["/bin/sh", "-c", EXE_SCANNER])
            .hard_link_busybox(false)
    });
    let id = env.id("exe");
    let log = env.tmp.path().join("scanner.out");
    let mut run = env
        .command()
        .args(["run", "-b", bundle.dir.to_str().unwrap(), &id])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_running(&env, &id);
    // Processes entering the container: foreground and detached execs, each
    // a clone of the cnfbox binary until it execs the container's program.
    let pidfile = env.tmp.path().join("exec.pid");
    for i in 0..40 {
        if i % 2 == 0 {
            env.ok(&["exec", &id, "/bin/true"]);
        } else {
            exec_detached(&env, &id, &pidfile);
            // The exec'd process itself, from the host's side: its exe is
            // the container's binary, and pod root may not open it for write.
            let epid: i64 = fs::read_to_string(&pidfile)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let exe = fs::read_link(format!("/proc/{epid}/exe")).unwrap();
            assert!(
                !exe.starts_with(bin.parent().unwrap()),
                "exec'd process still runs the runtime binary: {}",
                exe.display()
            );
            let uid = fs::metadata(format!("/proc/{epid}")).unwrap().uid();
            assert_ne!(uid, 0, "exec'd process runs as host root");
        }
    }
    // The scanner (the init) exits as soon as it sees the file, and the
    // kernel then kills what is left in the pod's PID namespace: `touch`
    // itself may go that way before its own exit (137).
    let stop = env.run(&["exec", &id, "/bin/touch", "/tmp/stop"]);
    assert!(
        stop.status.success() || stop.status.code() == Some(137),
        "exec touch /tmp/stop: {stop:?}"
    );
    let status = run.wait().unwrap();
    assert!(status.success(), "scanner: {status:?}");
    let out = fs::read_to_string(&log).unwrap();
    assert_eq!(
        kv(&out, "control"),
        "ok",
        "the scanner can open files for write:\n{out}"
    );
    let seen = all(&out, "seen");
    let opened = all(&out, "opened");
    eprintln!(
        "exe scanner: {} loops, saw {} foreign executables ({:?}), opened {:?}",
        kv(&out, "loops"),
        seen.len(),
        seen.iter().take(3).collect::<Vec<_>>(),
        opened
    );
    assert!(
        opened.is_empty(),
        "pod root opened a host binary for write: {opened:?}"
    );
    assert!(sha(&bin) == before, "{} was modified", bin.display());
    assert_nothing_left(&env, &id);
}

// ---------------------------------------------------------------------------
// CVE-2024-21626 class: host fds leaking into the container.

#[test]
fn cwd_through_a_leaked_fd_does_not_reach_the_host() {
    if !can_run("leaked fd cwd") {
        return;
    }
    let env = Env::new();
    // If the cwd were a host directory, climbing from it reaches the host's
    // root, which has this test's tmp dir's top component (/tmp or /work...).
    let host_top = env
        .tmp
        .path()
        .components()
        .nth(1)
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap()
        .to_string();
    let script = "echo cwd=$(readlink /proc/self/cwd); cd ../../../../../../../..; echo top=$(ls | tr '\\n' ,)";
    for n in 3..=40 {
        let (ok, out, err) = run_script(&env, &format!("fdcwd{n}"), script, move |b| {
            b.modify(edit(move |d| {
                d["process"]["cwd"] = json!(format!("/proc/self/fd/{n}"));
            }))
        });
        eprintln!(
            "cwd /proc/self/fd/{n}: ok={ok} {} {}",
            out.trim(),
            err.trim()
        );
        if !ok {
            // Refused: fine, as long as it says why in one line.
            assert!(!err.trim().is_empty(), "fd {n}: failure without a message");
            continue;
        }
        let cwd = kv(&out, "cwd");
        assert!(
            !cwd.contains("unreachable") && !cwd.starts_with("/proc"),
            "fd {n}: cwd outside the container: {cwd}"
        );
        let top: Vec<&str> = kv(&out, "top").leak().split(',').collect();
        assert!(
            !top.contains(&host_top.as_str())
                || Path::new("/").join(&host_top) == Path::new("/tmp"),
            "fd {n}: climbed to the host root: {top:?}"
        );
        assert!(
            !top.contains(&"work") && !top.contains(&"home") && !top.contains(&"boot"),
            "fd {n}: climbed to the host root: {top:?}"
        );
    }
}

/// The exec variant of CVE-2024-21626: `cnfbox exec --cwd /proc/self/fd/N`.
#[test]
fn exec_cwd_through_a_leaked_fd_does_not_reach_the_host() {
    if !can_run("exec leaked fd cwd") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("execcwd", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("execcwd");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let script = "echo cwd=$(readlink /proc/self/cwd); cd ../../../../../../../..; echo top=$(ls | tr '\\n' ,)";
    // Control: --cwd itself works.
    let out = env.ok(&["exec", "--cwd", "/tmp", &id, "/bin/sh", "-c", script]);
    assert_eq!(kv(&out, "cwd"), "/tmp", "{out}");
    let (mut refused, mut ran) = (0, 0);
    for n in 3..=40 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = env.run(&["exec", "--cwd", &cwd, &id, "/bin/sh", "-c", script]);
        if !out.status.success() {
            if refused == 0 {
                eprintln!(
                    "exec --cwd {cwd}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            refused += 1;
            continue;
        }
        ran += 1;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let cwd = kv(&stdout, "cwd");
        assert!(
            !cwd.contains("unreachable") && !cwd.starts_with("/proc"),
            "exec fd {n}: cwd outside the container: {cwd}"
        );
        let top = kv(&stdout, "top");
        assert!(
            !top.split(',')
                .any(|e| e == "work" || e == "home" || e == "boot"),
            "exec fd {n}: climbed to the host root: {top}"
        );
    }
    eprintln!("exec --cwd /proc/self/fd/3..40: {refused} refused, {ran} ran inside");
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn only_stdio_and_preserved_fds_reach_init_and_exec() {
    if !can_run("fd scan") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("fds", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("fds");
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let fds = wait_exec(pid);
    let nums: Vec<i32> = fds.iter().map(|f| f.0).collect();
    assert_eq!(nums, [0, 1, 2], "init fds: {fds:?}");
    // A detached exec: its process's fds.
    let pidfile = env.tmp.path().join("fds.pid");
    exec_detached(&env, &id, &pidfile);
    let epid: i64 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let fds = wait_exec(epid);
    let nums: Vec<i32> = fds.iter().map(|f| f.0).collect();
    assert_eq!(nums, [0, 1, 2], "exec'd process fds: {fds:?}");
    // Seen from inside by a foreground exec too: the shell's own fds 0-2 and
    // the one `ls` reads the directory with.
    let inside = env.ok(&[
        "exec",
        &id,
        "/bin/sh",
        "-c",
        "ls /proc/self/fd | tr '\\n' ,",
    ]);
    assert_eq!(inside.trim(), "0,1,2,3,", "fds inside an exec: {inside}");
    // An exec'd process keeps the spec's no_new_privileges too.
    let nnp = env.ok(&["exec", &id, "/bin/grep", "NoNewPrivs", "/proc/self/status"]);
    assert!(
        nnp.trim().ends_with('1'),
        "exec without no_new_privileges: {nnp}"
    );
    env.ok(&["delete", "--force", &id]);

    // --preserve-fds 2: exactly fds 3 and 4 are passed on, nothing else.
    let id = env.id("fdskeep");
    let extra = env.tmp.path().join("extra");
    fs::write(&extra, "x").unwrap();
    let f3 = fs::File::open(&extra).unwrap();
    let f4 = fs::File::open(&extra).unwrap();
    let mut cmd = env.command();
    cmd.args([
        "create",
        "--preserve-fds",
        "2",
        "-b",
        bundle.dir.to_str().unwrap(),
        &id,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let (a, b) = (f3.as_raw_fd(), f4.as_raw_fd());
        // SAFETY: dup2 and close are async-signal-safe; the fds are open in the parent
        // and stay open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                // Via 100/101 so that a source already at 3 or 4 is not
                // clobbered; dup2 leaves the copies without FD_CLOEXEC.
                if libc::dup2(a, 100) < 0
                    || libc::dup2(b, 101) < 0
                    || libc::dup2(100, 3) < 0
                    || libc::dup2(101, 4) < 0
                    || libc::close(100) < 0
                    || libc::close(101) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    assert!(cmd.status().unwrap().success());
    env.ok(&["start", &id]);
    let pid = env.state(&id)["pid"].as_i64().unwrap();
    let fds = wait_exec(pid);
    let nums: Vec<i32> = fds.iter().map(|f| f.0).collect();
    assert_eq!(
        nums,
        [0, 1, 2, 3, 4],
        "init fds with --preserve-fds 2: {fds:?}"
    );
    assert!(
        fds[3].1.ends_with("extra") && fds[4].1.ends_with("extra"),
        "{fds:?}"
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}
