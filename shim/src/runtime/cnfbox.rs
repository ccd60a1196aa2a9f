//! Drives the `cnfbox` binary the way containerd-shim-runc-v2 drives runc.
//!
//! Every command runs with `--root ROOT --log FILE --log-format json`: the
//! runtime's one-line error lands in the log (for `create`/`exec` its
//! stderr is the container's, so the log is the only clean place to read
//! it). Exit statuses come from [`Exits`], never from waiting on the child.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::exits::Exits;

use super::{ContainerStdio, Runtime, RuntimeError};

/// The runtime binary's name, looked up next to the shim, then in `PATH`.
pub const RUNTIME_BINARY: &str = "cnfbox";

fn stdio(fd: Option<OwnedFd>) -> Stdio {
    fd.map_or_else(Stdio::null, Stdio::from)
}

/// How to run the runtime: which binary, which state root.
#[derive(Debug, Clone)]
pub struct Cnfbox {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    exits: Arc<Exits>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Finds `name` (absolute, or next to the shim, or in `PATH`).
pub fn find_binary(name: &str) -> Result<PathBuf, RuntimeError> {
    let shim = std::env::current_exe().unwrap_or_default();
    let candidate = Path::new(name);
    if candidate.is_absolute() {
        return Ok(candidate.to_owned());
    }
    let beside = shim.parent().map(|d| d.join(name));
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name));
    beside
        .into_iter()
        .chain(in_path)
        .find(|p| p.is_file())
        .ok_or(RuntimeError::NotFound {
            name: name.to_owned(),
            shim,
        })
}

/// What a finished command left: stdout and the message of its failure.
struct Finished {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Cnfbox {
    pub fn new(binary: PathBuf, root: PathBuf, systemd_cgroup: bool, exits: Arc<Exits>) -> Self {
        Self {
            binary,
            root,
            systemd_cgroup,
            exits,
        }
    }

    fn command(&self, log: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(log)
            .args(["--log-format", "json"]);
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd
    }

    fn log_path(&self, dir: &Path, what: &str) -> PathBuf {
        dir.join(format!(
            ".cnfbox-{what}-{}-{}.log",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Runs `cnfbox ARGS`, feeding `input`, with the container's stdio
    /// (`stdio`) or captured pipes (`None`); the error when it fails.
    async fn run(
        &self,
        args: Vec<OsString>,
        input: Option<Vec<u8>>,
        stdio_of_container: Option<ContainerStdio>,
    ) -> Result<Vec<u8>, RuntimeError> {
        let command = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log_dir = std::env::temp_dir();
        let log = self.log_path(&log_dir, &command);
        let mut cmd = self.command(&log);
        cmd.args(&args);
        let captured = stdio_of_container.is_none();
        match stdio_of_container {
            Some(s) => {
                cmd.stdin(stdio(s.stdin))
                    .stdout(stdio(s.stdout))
                    .stderr(stdio(s.stderr));
            }
            None => {
                cmd.stdin(if input.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            }
        }
        let exits = self.exits.clone();
        let binary = self.binary.clone();
        let cmd_name = command.clone();
        let spawned = tokio::task::spawn_blocking(move || -> Result<_, RuntimeError> {
            let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
                binary,
                command: cmd_name.clone(),
                source,
            })?;
            // The reaper owns the child's status from here on.
            let status = exits.expect(child.id() as i32);
            // Closing our copy of the container's stdio happens when `cmd`
            // drops at the end of this closure.
            if let (Some(mut stdin), Some(data)) = (child.stdin.take(), input) {
                stdin
                    .write_all(&data)
                    .map_err(|source| RuntimeError::Input {
                        command: cmd_name.clone(),
                        source,
                    })?;
            }
            let mut stdout = Vec::new();
            let mut stderr = String::new();
            if captured {
                let err_pipe = child.stderr.take();
                let err_reader = std::thread::spawn(move || {
                    let mut s = String::new();
                    if let Some(mut p) = err_pipe {
                        // A read error leaves what was read: for messages only.
                        let _ = p.read_to_string(&mut s);
                    }
                    s
                });
                if let Some(mut p) = child.stdout.take() {
                    let _ = p.read_to_end(&mut stdout); // as above
                }
                stderr = err_reader.join().unwrap_or_default();
            }
            Ok((status, stdout, stderr))
        })
        .await
        .map_err(|_| RuntimeError::Reaper {
            command: command.clone(),
        })??;
        let (status, stdout, stderr) = spawned;
        let code = status.await.map_err(|_| RuntimeError::Reaper {
            command: command.clone(),
        })?;
        let finished = Finished {
            code,
            stdout,
            stderr,
        };
        let (logged, kind) = read_error_log(&log).unzip();
        // Best effort: the log is ours and temporary.
        let _ = std::fs::remove_file(&log);
        if finished.code != 0 {
            let message = logged
                .or_else(|| {
                    let s = finished.stderr.trim();
                    (!s.is_empty()).then(|| s.trim_start_matches("cnfbox: error: ").to_owned())
                })
                .unwrap_or_else(|| "no error message".to_owned());
            return Err(RuntimeError::Failed {
                command,
                code: finished.code,
                message,
                kind: kind.flatten(),
            });
        }
        Ok(finished.stdout)
    }

    async fn simple<I, S>(&self, args: I) -> Result<Vec<u8>, RuntimeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self.run(args, None, None).await
    }
}

/// The production runtime: each call is one `cnfbox` command.
#[async_trait]
impl Runtime for Cnfbox {
    /// `create --bundle B --pid-file P [--console-socket S] ID`; the init's pid.
    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        console_socket: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<i32, RuntimeError> {
        let pid_file = bundle.join(format!(".{id}.init.pid"));
        let mut args: Vec<OsString> = vec![
            "create".into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            pid_file.clone().into(),
        ];
        if let Some(s) = console_socket {
            args.push("--console-socket".into());
            args.push(s.into());
        }
        args.push(id.into());
        self.run(args, None, Some(stdio)).await?;
        read_pid("create", &pid_file)
    }

    /// `exec --process P --detach --pid-file F [--console-socket S] ID`; the pid.
    async fn exec(
        &self,
        id: &str,
        process_json: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<i32, RuntimeError> {
        let mut args: Vec<OsString> = vec![
            "exec".into(),
            "--process".into(),
            process_json.into(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.into(),
        ];
        if let Some(s) = console_socket {
            args.push("--console-socket".into());
            args.push(s.into());
        }
        args.push(id.into());
        self.run(args, None, Some(stdio)).await?;
        read_pid("exec", pid_file)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.simple(["start", id]).await.map(drop)
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        self.simple(args).await.map(drop)
    }

    async fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.simple(args).await.map(drop)
    }

    async fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.simple(["pause", id]).await.map(drop)
    }

    async fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.simple(["resume", id]).await.map(drop)
    }

    /// `update --resources - ID` with the OCI LinuxResources JSON on stdin.
    async fn update(&self, id: &str, resources_json: Vec<u8>) -> Result<(), RuntimeError> {
        let args = ["update", "--resources", "-", id]
            .map(OsString::from)
            .to_vec();
        self.run(args, Some(resources_json), None).await.map(drop)
    }

    /// `events --stats ID`: the container's cgroup stats (libcgroups'),
    /// in runc's JSON.
    async fn stats(&self, id: &str) -> Result<crate::stats::Stats, RuntimeError> {
        let out = self.simple(["events", "--stats", id]).await?;
        serde_json::from_slice::<crate::stats::Event>(&out)
            .map(|e| e.data)
            .map_err(|source| RuntimeError::Json {
                command: "events".into(),
                source,
            })
    }

    /// `ps --format json ID`: the container's pids.
    async fn ps(&self, id: &str) -> Result<Vec<i32>, RuntimeError> {
        let out = self.simple(["ps", "--format", "json", id]).await?;
        serde_json::from_slice(&out).map_err(|source| RuntimeError::Json {
            command: "ps".into(),
            source,
        })
    }
}

fn read_pid(command: &str, path: &Path) -> Result<i32, RuntimeError> {
    let content = std::fs::read_to_string(path).map_err(|source| RuntimeError::PidFile {
        command: command.into(),
        path: path.to_owned(),
        source,
    })?;
    // Best effort: the pid file is ours and no longer needed.
    let _ = std::fs::remove_file(path);
    content
        .trim()
        .parse()
        .ok()
        .filter(|p: &i32| *p > 0)
        .ok_or_else(|| RuntimeError::BadPid {
            command: command.into(),
            path: path.to_owned(),
            content,
        })
}

/// The last `"level":"error"` line of a runtime log: its message and kind.
fn read_error_log(path: &Path) -> Option<(String, Option<String>)> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .filter_map(|v| {
            let msg = v["msg"].as_str()?.to_owned();
            Some((msg, v["kind"].as_str().map(str::to_owned)))
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_log_last_error_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            concat!(
                "{\"level\":\"info\",\"msg\":\"starting\"}\n",
                "{\"level\":\"error\",\"msg\":\"first\"}\n",
                "not json\n",
                "{\"level\":\"error\",\"msg\":\"unknown capability FOO in cnfbox.io/capabilities\"}\n",
            ),
        )
        .expect("write log");
        assert_eq!(
            read_error_log(&log).map(|(m, _)| m).as_deref(),
            Some("unknown capability FOO in cnfbox.io/capabilities")
        );
        assert_eq!(read_error_log(&dir.path().join("missing")), None);
    }

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pid");
        std::fs::write(&p, "1234").expect("write");
        assert_eq!(read_pid("create", &p).expect("pid"), 1234);
        assert!(!p.exists(), "pid file removed after reading");
        std::fs::write(&p, "x").expect("write");
        assert!(matches!(
            read_pid("create", &p),
            Err(RuntimeError::BadPid { .. })
        ));
        std::fs::write(&p, "0").expect("write");
        assert!(read_pid("create", &p).is_err());
    }

    #[test]
    fn finds_absolute_and_path_binaries() {
        assert_eq!(
            find_binary("/bin/sh").expect("absolute"),
            PathBuf::from("/bin/sh")
        );
        assert!(find_binary("sh").expect("in PATH").ends_with("sh"));
        let err = find_binary("no-such-runtime-xyz").expect_err("missing");
        assert!(err.to_string().contains("no-such-runtime-xyz"));
    }

    #[test]
    fn not_found_is_the_runtimes_kind_not_its_words() {
        let failed = |message: &str, kind: Option<&str>| RuntimeError::Failed {
            command: "create".into(),
            code: 1,
            message: message.into(),
            kind: kind.map(str::to_owned),
        };
        assert!(failed("container abc does not exist", Some("not_found")).is_not_found());
        let bind = failed(
            "create container c: bind source /srv/x does not exist",
            Some("failed"),
        );
        assert!(
            !bind.is_not_found(),
            "a missing bind source is not a missing container"
        );
        assert!(!failed("container abc does not exist", None).is_not_found());

        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.json");
        std::fs::write(
            &log,
            "{\"kind\":\"not_found\",\"level\":\"error\",\"msg\":\"container x does not exist\"}\n",
        )
        .expect("write log");
        assert_eq!(
            read_error_log(&log),
            Some((
                "container x does not exist".into(),
                Some("not_found".into())
            ))
        );
    }
}
