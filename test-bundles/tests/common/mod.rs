//! Helpers shared by the test-bundles integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Prints a loud skip line and returns from the test.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        eprintln!("SKIP: {}", format!($($arg)*));
        return;
    }};
}

/// Why this process cannot run containers, if it cannot.
pub fn not_root() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .to_owned();
    (uid != "0").then(|| format!("effective uid is {uid}, not root"))
}

/// runc, where Debian installs it or in PATH.
pub fn runc() -> Option<PathBuf> {
    test_bundles::containerd::find_tool("runc")
}

/// A container id unique to this process and `name`.
pub fn unique_id(name: &str) -> String {
    format!("tb-{name}-{}", std::process::id())
}

/// `runc --root ROOT ...` with a private state root.
pub struct Runc {
    pub bin: PathBuf,
    pub root: tempfile::TempDir,
}

impl Runc {
    pub fn new(bin: PathBuf) -> Self {
        let root = tempfile::Builder::new()
            .prefix("cnfbox-runc-root-")
            .tempdir()
            .expect("runc state tempdir");
        Self { bin, root }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path()).stdin(Stdio::null());
        c
    }

    /// `runc state ID` status field ("running", "stopped", ...).
    pub fn status(&self, id: &str) -> Option<String> {
        let out = self.cmd().args(["state", id]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get("status")?.as_str().map(str::to_owned)
    }

    pub fn wait_running(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.status(id).as_deref() == Some("running") {
                return true;
            }
            sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn kill(&self, id: &str, signal: &str) -> ExitStatus {
        self.cmd()
            .args(["kill", id, signal])
            .status()
            .expect("spawn runc kill")
    }

    /// Best-effort `runc delete -f`, for cleanup after failures.
    pub fn force_delete(&self, id: &str) {
        let _ = self
            .cmd()
            .args(["delete", "-f", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits for `child` up to `timeout`; None when it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        sleep(Duration::from_millis(50));
    }
}
