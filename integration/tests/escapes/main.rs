//! Escape attempts: each test plays a tenant who is root in its pod (a
//! script run inside a real container) or a hostile bundle, tries a known
//! container-escape technique, and asserts that it gets nothing on the host.
//! SECURITY.md lists every attack with the test that proves it fails.
//!
//! - `console`: the host's console and the rest of libcgroups' default
//!   device set through a node in the image or a `linux.devices` entry;
//! - `fds`: the runtime binary through `/proc/<pid>/exe` (CVE-2019-5736)
//!   and host fds (CVE-2024-21626);
//! - `mounts`: mount destinations and rootfs paths that leave the rootfs
//!   (CVE-2021-30465);
//! - `privileges`: masked paths, setuid, other pods, devices, the spec on
//!   the host;
//! - `host_views`: another host user against a pod's views, pins and
//!   staging on the host.

#[path = "../common/mod.rs"]
mod common;

mod console;
mod fds;
mod host_views;
mod mounts;
mod privileges;
mod reused_pid;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{assert_nothing_left, assert_one_line_error, can_run, Env};
use serde_json::json;
use test_bundles::Scenario;

fn kv(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
        .to_string()
}

/// Every `key=` line with this key.
fn all(out: &str, key: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

/// Edits the spec as JSON (oci-spec's setters for every field get long).
fn edit(
    f: impl FnOnce(&mut serde_json::Value) + 'static,
) -> impl FnOnce(&mut oci_spec::runtime::Spec) {
    move |s| {
        let mut doc = serde_json::to_value(&*s).unwrap();
        f(&mut doc);
        *s = serde_json::from_value(doc).unwrap();
    }
}

/// `cnfbox run` of `script` in a fresh bundle; returns (success, stdout, stderr).
fn run_script(
    env: &Env,
    name: &str,
    script: &str,
    tweak: impl FnOnce(test_bundles::BundleBuilder) -> test_bundles::BundleBuilder,
) -> (bool, String, String) {
    let bundle = env.bundle(name, |b| tweak(b.args(["/bin/sh", "-c", script])));
    let id = env.id(name);
    let out = env.run(&["run", "-b", bundle.dir.to_str().unwrap(), &id]);
    assert_nothing_left(env, &id);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sha(path: &Path) -> Vec<u8> {
    // A byte-for-byte copy is as good as a digest for "unchanged".
    let mut buf = Vec::new();
    fs::File::open(path).unwrap().read_to_end(&mut buf).unwrap();
    buf
}

/// `cnfbox exec --detach` of a sleep; stdio not captured (the process
/// would hold the pipe open).
fn exec_detached(env: &Env, id: &str, pidfile: &Path) {
    let st = env
        .command()
        .args(["exec", "--detach", "--pid-file"])
        .arg(pidfile)
        .args([id, "/bin/sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(pidfile.with_extension("err")).unwrap())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "exec --detach in {id}: {}",
        fs::read_to_string(pidfile.with_extension("err")).unwrap_or_default()
    );
}

/// The fds of `pid` once it runs the container's program (`/bin/...`),
/// not the runtime's init code any more.
fn wait_exec(pid: i64) -> Vec<(i32, String)> {
    for _ in 0..400 {
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.to_string_lossy().contains("busybox") {
            return fds_of(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("pid {pid} never exec'd the container's program");
}

/// The open fds of `pid` and what they point at.
fn fds_of(pid: i64) -> Vec<(i32, String)> {
    let mut v: Vec<(i32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let n: i32 = e.file_name().to_str().unwrap().parse().unwrap();
            let target = fs::read_link(e.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (n, target)
        })
        .collect();
    v.sort();
    v
}

/// Polls until `state` works and says running (a foreground `run` may still
/// be writing cnfbox's record when the first poll comes).
fn wait_running(env: &Env, id: &str) {
    for _ in 0..800 {
        let out = env.run(&["state", id]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"running\"") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("{id} never ran");
}
