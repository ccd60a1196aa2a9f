//! `start`: spawn the shim server for a pod and hand its address back, or
//! fail leaving no server behind.
//!
//! containerd reads `start`'s combined output as the error of a failed
//! start, so every failure here is one line naming the step. The start
//! protocol itself (containerd 2.3+'s `BootstrapParams` on stdin, or the
//! older flags, environment and raw runc options) is read and answered by
//! `containerd-shim` (its `bootstrap` module) before and after this runs.
//!
//! The crate's own `spawn` returns only an address: a server that died
//! while starting (a socket it could not bind) went unnoticed, and one that
//! started before a later step failed (the `address` file) was left running
//! with nobody to stop it. Here the server is a child this process holds
//! until the start has succeeded, and kills and reaps otherwise.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use containerd_shim::api::Options;
use containerd_shim::StartOpts;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// The environment variable a shim server reads containerd's TTRPC address
/// from (containerd 2.3+ passes it in the bootstrap message instead).
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";
/// How long a server that closed its stdout without serving gets to exit
/// before it is killed (it is exiting: only a hung server waits it out).
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// Where the server's address is left for containerd and `delete`.
pub const ADDRESS_FILE: &str = "address";

/// A failed `start`, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("locating the shim binary: {0}")]
    CurrentExe(#[source] std::io::Error),
    #[error("reading the bundle directory (the working directory): {0}")]
    Cwd(#[source] std::io::Error),
    #[error("creating the shim server's stderr file: {0}")]
    StderrFile(#[source] std::io::Error),
    #[error("spawning the shim server {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("runtime options: {0}")]
    Options(String),
    #[error("moving the shim server (pid {pid}) into the shim cgroup {cgroup:?}: {reason}")]
    Confine {
        pid: u32,
        cgroup: String,
        reason: String,
    },
    #[error("waiting for the shim server (pid {pid}) to serve: {source}")]
    Wait {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the shim server for {address} exited with {status} while starting: {cause}")]
    ServerExited {
        address: String,
        status: ExitStatus,
        cause: String,
    },
    #[error("the shim server for {address} neither serves nor exits")]
    NotServing { address: String },
    #[error("writing {path}: {source}")]
    Address {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Spawns the server for `group` (the pod's sandbox id), waits until it
/// serves (or found a live server for the group already serving), writes
/// `address` in the bundle and returns the address. On any error the
/// server is killed and reaped first.
pub async fn start_server(opts: &StartOpts, group: &str) -> Result<String, StartError> {
    let exe = std::env::current_exe().map_err(StartError::CurrentExe)?;
    let cwd = std::env::current_dir().map_err(StartError::Cwd)?;
    let address = opts.socket_address(group);
    // The server's early errors (before its logger runs) go to stderr: an
    // unlinked file keeps them for the message below without a pipe the
    // running server would hold open.
    let mut stderr = tempfile::tempfile().map_err(StartError::StderrFile)?;
    let stderr_child = stderr.try_clone().map_err(StartError::StderrFile)?;
    let mut cmd = Command::new(&exe);
    cmd.current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_child))
        .args(["-namespace", &opts.namespace, "-id", &opts.id])
        .args(["-address", &opts.address, "-socket", &address]);
    if !opts.ttrpc_address.is_empty() {
        cmd.env(TTRPC_ADDRESS, &opts.ttrpc_address);
    }
    if opts.debug {
        cmd.arg("-debug");
    }
    let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
        exe: exe.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or_default();
    log::debug!("shim server spawned: pid {pid}, address {address}, group {group}");
    match serve_or_fail(&mut child, &mut stderr, opts, &address, &cwd).await {
        Ok(()) => Ok(address),
        Err(err) => {
            stop(&mut child, pid).await;
            Err(err)
        }
    }
}

/// Everything after the spawn that can fail.
async fn serve_or_fail(
    child: &mut Child,
    stderr: &mut std::fs::File,
    opts: &StartOpts,
    address: &str,
    cwd: &Path,
) -> Result<(), StartError> {
    let pid = child.id().unwrap_or_default();
    confine(opts, pid)?;
    // The server points its stdout at its stderr once it listens, or
    // exits: either way the pipe ends.
    if let Some(mut out) = child.stdout.take() {
        let mut sink = Vec::new();
        out.read_to_end(&mut sink)
            .await
            .map_err(|source| StartError::Wait { pid, source })?;
    }
    // The pipe also ends while a failing server exits, before it can be
    // waited for: only a connection tells that something serves.
    let socket = address.trim_start_matches("unix://");
    if tokio::net::UnixStream::connect(socket).await.is_err() {
        let status = match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(source)) => return Err(StartError::Wait { pid, source }),
            Err(_) => {
                return Err(StartError::NotServing {
                    address: address.to_owned(),
                })
            }
        };
        return Err(StartError::ServerExited {
            address: address.to_owned(),
            status,
            cause: last_line(stderr),
        });
    }
    let path = cwd.join(ADDRESS_FILE);
    std::fs::write(&path, address).map_err(|source| StartError::Address { path, source })
}

/// The shim cgroup from runc's options and an OOM score above containerd's,
/// as containerd-shim-runc-v2 sets for its server.
fn confine(opts: &StartOpts, pid: u32) -> Result<(), StartError> {
    let options = opts
        .extension::<Options>()
        .map_err(|e| StartError::Options(e.to_string()))?;
    let cgroup = options.map(|o| o.shim_cgroup).unwrap_or_default();
    containerd_shim::cgroup::set_cgroup_and_oom_score(pid, &cgroup).map_err(|e| {
        StartError::Confine {
            pid,
            cgroup,
            reason: e.to_string(),
        }
    })
}

/// Kills and reaps a server that must not outlive a failed start.
async fn stop(child: &mut Child, pid: u32) {
    if let Err(err) = child.start_kill() {
        // Only fails when it has exited already; reaped below.
        log::debug!("killing the shim server (pid {pid}): {err}");
    }
    if let Err(err) = child.wait().await {
        log::warn!("reaping the shim server (pid {pid}): {err}");
    }
}

/// The last non-empty line the server wrote to stderr, or a placeholder.
fn last_line(file: &mut std::fs::File) -> String {
    let mut text = String::new();
    // Small: only what the server printed before it failed.
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.take(64 * 1024).read_to_string(&mut text));
    if read.is_err() {
        return "(its stderr could not be read)".to_owned();
    }
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(it printed nothing)")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn last_line_skips_blank_lines() {
        let mut f = tempfile::tempfile().expect("tempfile");
        writeln!(f, "first\nio.containerd.cnfbox.v2: bind failed\n\n").expect("write");
        assert_eq!(last_line(&mut f), "io.containerd.cnfbox.v2: bind failed");
        let mut empty = tempfile::tempfile().expect("tempfile");
        assert_eq!(last_line(&mut empty), "(it printed nothing)");
    }
}
