//! runc's per-command flags, black-box: `create --pid-file/--console-socket/
//! --preserve-fds/--no-pivot`, `exec --detach --pid-file/--tty/--cap`,
//! `kill --all` and `run --keep`, each checked from inside the container.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{IoSliceMut, Read as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use test_bundles::{Bundle, Scenario};

/// How long a test waits for the container to do something.
const TIMEOUT: Duration = Duration::from_secs(20);

/// `CAP_NET_ADMIN` (linux/capability.h): not in the bundles' default set.
const CAP_NET_ADMIN_BIT: u64 = 1 << 12;

/// `cnfbox --root ROOT ARGS...` with stdin closed.
fn cnfbox(env: &Env, args: &[&str]) -> Command {
    let mut cmd = env.command();
    cmd.args(args);
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `cmd` with stdout and stderr in files rather than pipes: a detached
/// container process inherits them, and a pipe it held would block the test
/// until the container exits. Returns the output as far as written and the
/// stdout file, which the container's process goes on writing to.
fn run_to_files(env: &Env, cmd: &mut Command, tag: &str) -> (Output, PathBuf) {
    let name = env.id(tag);
    let out_path = env.tmp.path().join(format!("{name}.out"));
    let err_path = env.tmp.path().join(format!("{name}.err"));
    let status = cmd
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .status()
        .expect("spawn cnfbox");
    let output = Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    };
    (output, out_path)
}

/// Panics with cnfbox's stderr unless `out` is a success.
fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `create --bundle B EXTRA... ID`; returns the file the container's stdout
/// goes to.
fn create_with(env: &Env, bundle: &Bundle, id: &str, extra: &[&str]) -> PathBuf {
    let mut cmd = cnfbox(env, &["create", "--bundle"]);
    cmd.arg(&bundle.dir).args(extra).arg(id);
    let (out, stdout) = run_to_files(env, &mut cmd, "create");
    assert_ok(&out, &format!("create {extra:?} {id}"));
    stdout
}

/// Starts a created container and returns its stdout once it has exited.
fn start_and_collect(env: &Env, id: &str, stdout: &Path) -> String {
    env.ok(&["start", id]);
    env.wait_status(id, "stopped");
    fs::read_to_string(stdout).expect("container stdout")
}

/// A unix socket the test listens on for `--console-socket`.
struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn bind(env: &Env, name: &str) -> Self {
        let path = env.tmp.path().join(format!("{name}.sock"));
        let listener = UnixListener::bind(&path).expect("bind console socket");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        Self { path, listener }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 socket path")
    }

    /// Accepts the runtime's connection and takes the pty master it sends
    /// with SCM_RIGHTS (as containerd's shim does).
    fn receive_master(&self) -> OwnedFd {
        let deadline = Instant::now() + TIMEOUT;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "the runtime never connected to {}",
                        self.path.display()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept on {}: {e}", self.path.display()),
            }
        };
        stream.set_nonblocking(false).expect("blocking stream");
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("read timeout");
        let mut name = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("recvmsg on the console socket");
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().expect("control messages") {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        assert_eq!(fds.len(), 1, "expected one fd (the pty master): {fds:?}");
        // SAFETY: the kernel just installed this fd in our table for this
        // message; nothing else refers to it, so the OwnedFd is its only owner.
        unsafe { OwnedFd::from_raw_fd(fds[0]) }
    }
}

/// Reads the pty master until `until` shows, the other side hangs up (EIO)
/// or the timeout passes; returns what was read.
fn read_pty(master: OwnedFd, until: &str) -> String {
    let flags = fcntl(master.as_raw_fd(), FcntlArg::F_GETFL).expect("F_GETFL");
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(master.as_raw_fd(), FcntlArg::F_SETFL(flags)).expect("F_SETFL");
    let mut master = File::from(master);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&got).contains(until) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            // The last slave fd closed: everything written has been read.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("read pty master: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Asserts that pty output holds a `tty` line naming a /dev/pts device and
/// the line `ok`.
fn assert_tty_output(out: &str) {
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(
        lines.iter().any(|l| l
            .strip_prefix("/dev/pts/")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))),
        "`tty` did not name a /dev/pts device: {out:?}"
    );
    assert!(lines.contains(&"ok"), "no `ok` from the process: {out:?}");
}

/// `ls -l /proc/self/fd` output as (fd, target) pairs.
fn parse_fd_listing(out: &str) -> Vec<(u32, String)> {
    out.lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.trim().to_string()))
        })
        .collect()
}

/// Whether `target` is `ls`'s own handle on the directory it lists.
fn is_listing_dir(target: &str) -> bool {
    target
        .strip_prefix("/proc/")
        .and_then(|rest| rest.strip_suffix("/fd"))
        .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
}

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

fn ps_pids(env: &Env, id: &str) -> Vec<i64> {
    serde_json::from_str(&env.ok(&["ps", "--format", "json", id])).expect("ps JSON")
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
fn create_pid_file_holds_the_init_pid() {
    if !can_run("create --pid-file") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("pidfile", |b| b.scenario(&Scenario::Sleep));
    let id = env.id("pidfile");
    let pid_file = env.tmp.path().join("init.pid");
    create_with(
        &env,
        &bundle,
        &id,
        &["--pid-file", pid_file.to_str().unwrap()],
    );
    let written: i64 = fs::read_to_string(&pid_file)
        .expect("pid file written by create")
        .trim()
        .parse()
        .expect("pid file holds a number");
    let s = env.state(&id);
    assert_eq!(s["pid"].as_i64(), Some(written), "pid file vs state: {s}");
    assert!(written > 1 && Path::new(&format!("/proc/{written}")).exists());
    env.ok(&["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn create_console_socket_hands_over_the_pty_master() {
    if !can_run("create --console-socket") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("console", |b| {
        b.terminal(true).args(["/bin/sh", "-c", "tty; echo ok"])
    });
    let id = env.id("console");
    let socket = ConsoleSocket::bind(&env, "console");
    // Relative to the caller's cwd, as runc takes it (containerd passes an
    // absolute path; the exec test below uses both).
    let mut cmd = cnfbox(&env, &["create", "--bundle"]);
    cmd.arg(&bundle.dir)
        .arg("--console-socket")
        .arg(socket.path.file_name().unwrap())
        .arg(&id)
        .current_dir(env.tmp.path());
    let (out, _) = run_to_files(&env, &mut cmd, "create-console");
    assert_ok(&out, "create --console-socket (relative path)");
    let master = socket.receive_master();
    env.ok(&["start", &id]);
    let out = read_pty(master, "ok");
    assert_tty_output(&out);
    env.wait_status(&id, "stopped");
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn terminal_without_console_socket_is_refused() {
    if !can_run("terminal without --console-socket") {
        return;
    }
    let env = Env::new();
    let bundle = env.bundle("noconsole", |b| {
        b.terminal(true).args(["/bin/sh", "-c", "tty; echo ok"])
    });
    let id = env.id("noconsole");
    let mut cmd = cnfbox(&env, &["create", "--bundle"]);
    cmd.arg(&bundle.dir).arg(&id);
    let (out, _) = run_to_files(&env, &mut cmd, "noconsole");
    assert_one_line_error(&out, &["process.terminal", "--console-socket"]);
    assert_nothing_left(&env, &id);
}

/// Opens `content` in a file and passes it to `create` as fd 3.
fn create_with_fd3(env: &Env, bundle: &Bundle, id: &str, extra: &[&str], fd3: &File) -> PathBuf {
    let mut cmd = cnfbox(env, &["create", "--bundle"]);
    cmd.arg(&bundle.dir).args(extra).arg(id);
    let src = fd3.as_raw_fd();
    // SAFETY: the hook runs in the forked child before exec and only calls
    // dup2(2) and fcntl(2), which are async-signal-safe and allocate nothing;
    // `src` is open in the child because `fd3` outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if src == 3 {
                // dup2 onto itself would keep O_CLOEXEC: clear it instead.
                fcntl(3, FcntlArg::F_SETFD(FdFlag::empty()))?;
            } else {
                nix::unistd::dup2(src, 3)?;
            }
            Ok(())
        });
    }
    let (out, stdout) = run_to_files(env, &mut cmd, "create-fd3");
    assert_ok(&out, &format!("create {extra:?} {id} with fd 3"));
    stdout
}

#[test]
fn preserve_fds_passes_fd_3_and_only_with_the_flag() {
    if !can_run("create --preserve-fds") {
        return;
    }
    let env = Env::new();
    let content = format!("preserved-{}", std::process::id());
    let file_path = env.tmp.path().join("fd3-source");
    fs::write(&file_path, format!("{content}\n")).unwrap();

    let bundle = env.bundle("fds", |b| {
        b.args([
            "/bin/sh",
            "-c",
            "cat <&3; echo; echo --; ls -l /proc/self/fd",
        ])
    });
    let id = env.id("fds");
    let fd3 = File::open(&file_path).unwrap();
    let stdout = create_with_fd3(&env, &bundle, &id, &["--preserve-fds", "1"], &fd3);
    let out = start_and_collect(&env, &id, &stdout);
    let (read, listing) = out.split_once("--\n").expect("marker line");
    assert_eq!(read.trim(), content, "cat <&3 inside: {out}");
    let fds = parse_fd_listing(listing);
    let fd3_target = fds.iter().find(|(fd, _)| *fd == 3).map(|(_, t)| t.as_str());
    assert!(
        fd3_target.is_some_and(|t| t.ends_with("fd3-source")),
        "fd 3 inside is not the passed file: {listing}"
    );
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);

    // Same fd 3 offered, no flag: the container must not see it (runc closes
    // every fd above 2 + --preserve-fds before exec).
    let bare = env.bundle("nofds", |b| b.args(["/bin/ls", "-l", "/proc/self/fd"]));
    let id = env.id("nofds");
    let stdout = create_with_fd3(&env, &bare, &id, &[], &fd3);
    let listing = start_and_collect(&env, &id, &stdout);
    let fds = parse_fd_listing(&listing);
    let open: BTreeSet<u32> = fds
        .iter()
        .filter(|(_, target)| !is_listing_dir(target))
        .map(|(fd, _)| *fd)
        .collect();
    assert_eq!(
        open,
        BTreeSet::from([0, 1, 2]),
        "fds inside without --preserve-fds: {listing}"
    );
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}

#[test]
fn no_pivot_still_roots_the_container_in_its_rootfs() {
    if !can_run("create --no-pivot") {
        return;
    }
    let env = Env::new();
    let bundle_dir = env.tmp.path().join("nopivot");
    let host_probe = bundle_dir.join("config.json");
    let script = format!(
        "cat /marker; if [ -e {} ]; then echo host-visible; else echo host-hidden; fi; ls -a /",
        host_probe.display()
    );
    let bundle = env.bundle("nopivot", |b| b.args(["/bin/sh", "-c", &script]));
    let marker = format!("rootfs-of-{}", std::process::id());
    fs::write(bundle.rootfs.join("marker"), format!("{marker}\n")).unwrap();
    let id = env.id("nopivot");
    let stdout = create_with(&env, &bundle, &id, &["--no-pivot"]);
    let out = start_and_collect(&env, &id, &stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(marker.as_str()), "{out}");
    assert_eq!(lines.next(), Some("host-hidden"), "{out}");
    let inside: BTreeSet<String> = lines
        .flat_map(str::split_whitespace)
        .filter(|n| *n != "." && *n != "..")
        .map(str::to_string)
        .collect();
    let on_host: BTreeSet<String> = fs::read_dir(&bundle.rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(inside, on_host, "`ls /` inside vs the rootfs on the host");
    env.ok(&["delete", &id]);
    assert_nothing_left(&env, &id);
}

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
