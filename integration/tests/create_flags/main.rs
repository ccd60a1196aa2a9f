//! runc's per-command flags, black-box: `create --pid-file/--console-socket/
//! --preserve-fds/--no-pivot`, `exec --detach --pid-file/--tty/--cap`,
//! `kill --all` and `run --keep`, each checked from inside the container.
//!
//! - `create`: `--pid-file`, `--console-socket`, `--preserve-fds`, `--no-pivot`;
//! - `exec`: `--detach --pid-file`, `--tty`, `--cap`;
//! - `kill_run`: `kill --all`, harmless signals, `run --keep`.

#[path = "../common/mod.rs"]
mod common;

mod create;
mod exec;
mod kill_run;

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

fn ps_pids(env: &Env, id: &str) -> Vec<i64> {
    serde_json::from_str(&env.ok(&["ps", "--format", "json", id])).expect("ps JSON")
}
