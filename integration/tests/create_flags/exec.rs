//! `exec` flags: `--detach --pid-file`, `--tty --console-socket`, `--cap`.

use super::*;

/// `CAP_NET_ADMIN` (linux/capability.h): not in the bundles' default set.
const CAP_NET_ADMIN_BIT: u64 = 1 << 12;

/// A created and started container that sleeps.
fn running_sleeper(env: &Env, name: &str) -> String {
    let bundle = env.bundle(name, |b| b.scenario(&Scenario::Sleep));
    let id = env.id(name);
    env.create(&bundle, &id);
    env.ok(&["start", &id]);
    env.wait_status(&id, "running");
    id
}

#[test]
fn exec_detach_pid_file_shows_in_ps() {
    if !can_run("exec --detach --pid-file") {
        return;
    }
    let env = Env::new();
    let id = running_sleeper(&env, "execpid");
    let pid_file = env.tmp.path().join("exec.pid");
    let mut cmd = cnfbox(&env, &["exec", "--detach", "--pid-file"]);
    cmd.arg(&pid_file).args([&id, "/bin/sleep", "4242"]);
    let (out, _) = run_to_files(&env, &mut cmd, "exec-detach");
    assert_ok(&out, "exec --detach --pid-file");
    let pid: i64 = fs::read_to_string(&pid_file)
        .expect("pid file written by exec")
        .trim()
        .parse()
        .expect("pid file holds a number");
    let init = env.state(&id)["pid"].as_i64().unwrap();
    assert_ne!(pid, init, "the exec'd process is not the init");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("4242"),
        "pid {pid} from the pid file is not the exec'd sleep: {cmdline:?}"
    );
    let pids = ps_pids(&env, &id);
    assert!(
        pids.contains(&pid) && pids.contains(&init),
        "ps {pids:?} lacks exec pid {pid} or init {init}"
    );
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn exec_tty_console_socket_hands_over_the_pty_master() {
    if !can_run("exec --tty --console-socket") {
        return;
    }
    let env = Env::new();
    let id = running_sleeper(&env, "exectty");
    // runc takes --console-socket only with --detach (containerd's shim
    // passes both); without --detach runc proxies a pty of its own.
    for relative in [false, true] {
        let socket = ConsoleSocket::bind(&env, &format!("exectty-{relative}"));
        let path = if relative {
            socket.path.file_name().unwrap().to_str().unwrap()
        } else {
            socket.path()
        };
        let mut cmd = cnfbox(
            &env,
            &[
                "exec",
                "--detach",
                "--tty",
                "--console-socket",
                path,
                &id,
                "/bin/sh",
                "-c",
                "tty; echo ok",
            ],
        );
        cmd.current_dir(env.tmp.path());
        let (out, _) = run_to_files(&env, &mut cmd, "exec-tty");
        assert_ok(
            &out,
            &format!("exec --detach --tty --console-socket {path}"),
        );
        let out = read_pty(socket.receive_master(), "ok");
        assert_tty_output(&out);
    }
    assert_eq!(
        env.state(&id)["status"],
        "running",
        "the execs left the init alone"
    );
    // Detached with a tty but no socket: the master would have nowhere to go.
    let out = env.run(&["exec", "--detach", "--tty", &id, "/bin/true"]);
    assert_one_line_error(&out, &["--tty", "--console-socket"]);
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

/// A capability mask line (`CapEff:\t...`) of /proc/PID/status text.
fn cap_mask(status: &str, key: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in {status:?}"));
    u64::from_str_radix(line.trim(), 16).expect("hex capability mask")
}

#[test]
fn exec_cap_adds_net_admin_like_runc() {
    if !can_run("exec --cap") {
        return;
    }
    let env = Env::new();
    let id = running_sleeper(&env, "execcap");
    let status = |extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&id, "/bin/cat", "/proc/self/status"]);
        env.ok(&args)
    };

    let plain = status(&[]);
    for key in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(
            cap_mask(&plain, key) & CAP_NET_ADMIN_BIT,
            0,
            "{key} has NET_ADMIN without --cap"
        );
    }
    // runc exec.go: --cap is added to the bounding, effective and permitted
    // sets (ambient only when the spec has inheritable caps, and never to
    // inheritable: GHSA-f3fp-gc8g-vw66).
    let with = status(&["--cap", "CAP_NET_ADMIN"]);
    for key in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(
            cap_mask(&with, key),
            cap_mask(&plain, key) | CAP_NET_ADMIN_BIT,
            "{key} with --cap CAP_NET_ADMIN"
        );
    }
    for key in ["CapInh", "CapAmb"] {
        assert_eq!(cap_mask(&with, key), 0, "{key} with --cap CAP_NET_ADMIN");
    }
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}
