//! The shim's `start` as containerd runs it: both start protocols
//! (containerd 2.3+'s `BootstrapParams` on stdin, 2.0-2.2's flags,
//! `TTRPC_ADDRESS` and raw runc options), and failed starts that must
//! leave no server process behind and print one line naming the cause.
//!
//! Needs no containerd: a Unix listener stands in for containerd's TTRPC
//! socket (the server only connects to it to publish events).

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use containerd_shim::api::Options;
use containerd_shim::bootstrap::{BootstrapParams, BootstrapResult, Extension};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-cnfbox-v2");
const NAMESPACE: &str = "cnfbox-start-test";

/// A bundle directory with what containerd puts there before `start`
/// (the `log` FIFO: a plain file does here), and a stand-in containerd.
struct Bundle {
    dir: tempfile::TempDir,
    ttrpc: PathBuf,
    _listener: UnixListener,
}

impl Bundle {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("log"), "").expect("log file");
        std::fs::write(dir.path().join("config.json"), "{}").expect("config.json");
        let ttrpc = dir.path().join("containerd.sock.ttrpc");
        let listener = UnixListener::bind(&ttrpc).expect("bind the stand-in TTRPC socket");
        Self {
            dir,
            ttrpc,
            _listener: listener,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn params(&self, id: &str) -> BootstrapParams {
        let options = Options {
            binary_name: "cnfbox".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: options.write_to_bytes().expect("encode options"),
            ..Default::default()
        };
        BootstrapParams {
            instance_id: id.into(),
            namespace: NAMESPACE.into(),
            containerd_version: "v2.4.2".into(),
            containerd_ttrpc_address: self.ttrpc.display().to_string(),
            containerd_grpc_address: self.path().join("containerd.sock").display().to_string(),
            containerd_binary: "/bin/false".into(),
            socket_dir: Some(self.path().join("s").display().to_string()),
            extensions: vec![Extension {
                value: Some(any).into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Runs `start` for `id` in the bundle with `stdin` and extra `env`.
    fn start(&self, id: &str, stdin: &[u8], env: &[(&str, &str)]) -> Output {
        let mut child = Command::new(SHIM)
            .current_dir(self.path())
            .env_remove("TTRPC_ADDRESS")
            .envs(env.iter().copied())
            .args(["-namespace", NAMESPACE, "-id", id])
            .args([
                "-address",
                &self.path().join("containerd.sock").display().to_string(),
            ])
            .arg("start")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the shim");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write stdin");
        child.wait_with_output().expect("wait for start")
    }

    /// Shim processes whose working directory is this bundle.
    fn servers(&self) -> Vec<i32> {
        let me = std::fs::canonicalize(self.path()).expect("canonical bundle");
        let shim = std::fs::canonicalize(SHIM).expect("canonical shim");
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cwd = std::fs::read_link(entry.path().join("cwd"));
            let exe = std::fs::read_link(entry.path().join("exe"));
            if cwd.ok().as_deref() == Some(&me) && exe.ok().as_deref() == Some(&shim) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Kills the servers a successful start left (the test's own cleanup).
    fn stop_servers(&self) {
        for pid in self.servers() {
            // SAFETY: kill(2) with a pid read from /proc and a valid signal.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        self.stop_servers();
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The assertions every failed start shares: non-zero exit, one line that
/// names `cause`, no server left.
fn assert_failed_cleanly(bundle: &Bundle, out: &Output, cause: &str) {
    let err = stderr_of(out);
    assert!(!out.status.success(), "start succeeded: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(cause), "{err:?} does not name {cause:?}");
    assert!(
        bundle.servers().is_empty(),
        "a failed start left shim processes {:?} (stderr: {err})",
        bundle.servers()
    );
    assert!(
        !bundle.path().join("address").exists(),
        "a failed start left an address file"
    );
}

#[test]
fn bootstrap_start_answers_with_a_bootstrap_result_and_serves() {
    let bundle = Bundle::new();
    let params = bundle.params("pod-a");
    let out = bundle.start("pod-a", &params.write_to_bytes().expect("encode"), &[]);
    assert!(out.status.success(), "start failed: {}", stderr_of(&out));
    let result = BootstrapResult::parse_from_bytes(&out.stdout).expect("a BootstrapResult");
    assert_eq!(result.version, 3, "task API version");
    assert_eq!(result.protocol, "ttrpc");
    let sock_dir = bundle.path().join("s");
    assert!(
        result
            .address
            .starts_with(&format!("unix://{}/", sock_dir.display())),
        "address {} not in the socket dir containerd asked for",
        result.address
    );
    let socket = result.address.trim_start_matches("unix://");
    assert!(Path::new(socket).exists(), "no socket at {socket}");
    assert_eq!(
        std::fs::read_to_string(bundle.path().join("address")).expect("address file"),
        result.address
    );
    assert_eq!(bundle.servers().len(), 1, "one server serves the pod");
}

#[test]
fn legacy_start_answers_with_json_and_serves() {
    let bundle = Bundle::new();
    let ttrpc = bundle.ttrpc.display().to_string();
    // containerd 2.0-2.2: the runc options as a bare Any on stdin.
    let any = Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: Options::default().write_to_bytes().expect("encode"),
        ..Default::default()
    };
    let id = format!("legacy-{}", std::process::id());
    let out = bundle.start(
        &id,
        &any.write_to_bytes().expect("encode"),
        &[("TTRPC_ADDRESS", &ttrpc)],
    );
    assert!(out.status.success(), "start failed: {}", stderr_of(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON reply");
    assert_eq!(reply["version"], 3, "{reply}");
    assert_eq!(reply["protocol"], "ttrpc", "{reply}");
    let address = reply["address"].as_str().expect("address").to_owned();
    assert_eq!(bundle.servers().len(), 1, "one server serves the pod");
    bundle.stop_servers();
    // Legacy starts put the socket under containerd's fixed directory.
    let _ = std::fs::remove_file(address.trim_start_matches("unix://"));
}

#[test]
fn a_socket_that_cannot_be_bound_fails_the_start_and_leaves_no_server() {
    let bundle = Bundle::new();
    let mut params = bundle.params("pod-b");
    // A socket directory below a regular file: the server cannot bind.
    let file = bundle.path().join("not-a-dir");
    std::fs::write(&file, "").expect("file");
    params.socket_dir = Some(file.join("s").display().to_string());
    let out = bundle.start("pod-b", &params.write_to_bytes().expect("encode"), &[]);
    assert_failed_cleanly(&bundle, &out, "exited with");
    assert!(stderr_of(&out).contains("not-a-dir"), "{}", stderr_of(&out));
}

#[test]
fn a_bundle_without_the_log_fifo_fails_the_start_and_leaves_no_server() {
    let bundle = Bundle::new();
    std::fs::remove_file(bundle.path().join("log")).expect("remove log");
    let params = bundle.params("pod-c");
    let out = bundle.start("pod-c", &params.write_to_bytes().expect("encode"), &[]);
    assert_failed_cleanly(&bundle, &out, "logger");
}

#[test]
fn an_unreachable_containerd_fails_the_start_and_leaves_no_server() {
    let bundle = Bundle::new();
    let mut params = bundle.params("pod-d");
    params.containerd_ttrpc_address = bundle.path().join("nobody-listens").display().to_string();
    let out = bundle.start("pod-d", &params.write_to_bytes().expect("encode"), &[]);
    assert_failed_cleanly(&bundle, &out, "exited with");
}

#[test]
fn bootstrap_params_for_another_shim_fail_before_any_server() {
    let bundle = Bundle::new();
    let params = bundle.params("someone-else");
    let out = bundle.start("pod-e", &params.write_to_bytes().expect("encode"), &[]);
    assert_failed_cleanly(&bundle, &out, "do not match command line arguments");
}

#[test]
fn no_ttrpc_address_at_all_fails_before_any_server() {
    let bundle = Bundle::new();
    let out = bundle.start("pod-f", b"", &[]);
    assert_failed_cleanly(&bundle, &out, "TTRPC_ADDRESS");
}

#[test]
fn garbage_on_stdin_is_taken_for_the_legacy_protocol_without_options() {
    // containerd never sends this; what matters is that the start neither
    // crashes nor leaves a server when it then fails (no TTRPC address).
    let bundle = Bundle::new();
    let out = bundle.start("pod-g", &[0xff, 0xfe, 0x00, 0x2e], &[]);
    assert_failed_cleanly(&bundle, &out, "TTRPC_ADDRESS");
}
