//! The container runtime as the Task service sees it.
//!
//! - this module: what the service asks of a runtime ([`Runtime`]), the
//!   container side of a process's stdio, and the runtime's errors;
//! - `cnfbox`: the production runtime, the `cnfbox` binary driven the way
//!   containerd-shim-runc-v2 drives runc.
//!
//! The service is generic over [`Runtime`] (as rust-extensions' runc shim
//! is over its container trait), so its bookkeeping (states, exits, the
//! order of runtime calls, the ttrpc codes of failures) is tested with a
//! recording fake instead of a real container.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

mod cnfbox;

pub use cnfbox::{find_binary, Cnfbox, RUNTIME_BINARY};

/// Errors running `cnfbox`.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{name} not found next to the shim ({shim}) nor in PATH")]
    NotFound { name: String, shim: PathBuf },
    #[error("spawning {binary} {command}")]
    Spawn {
        binary: PathBuf,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("passing input to `cnfbox {command}`")]
    Input {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`cnfbox {command}` failed (exit status {code}): {message}")]
    Failed {
        command: String,
        code: i32,
        message: String,
        /// The `kind` of the runtime's error log line (`not_found`, ...).
        kind: Option<String>,
    },
    #[error("the shim's reaper stopped before `cnfbox {command}` exited")]
    Reaper { command: String },
    #[error("reading the pid file {path} that `cnfbox {command}` wrote")]
    PidFile {
        command: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`cnfbox {command}` wrote pid file {path} without a pid: {content:?}")]
    BadPid {
        command: String,
        path: PathBuf,
        content: String,
    },
    #[error("`cnfbox {command}` printed output that is not the expected JSON")]
    Json {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

impl RuntimeError {
    /// True when the runtime said the container does not exist (its error
    /// line's `kind`, never the words of its message: "bind source ... does
    /// not exist" is a failed create, not a missing container).
    pub fn is_not_found(&self) -> bool {
        self.kind() == crate::errors::Kind::NotFound
    }
}

/// The container side of a process's stdio (`None`: /dev/null).
#[derive(Debug, Default)]
pub struct ContainerStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// What the Task service asks of the container runtime: runc's command
/// set, one container id at a time. Exit statuses never come from here:
/// the shim's reaper ([`crate::exits::Exits`]) reports them.
#[async_trait]
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Creates container `id` from `bundle` with its init's stdio (or a
    /// pty sent to `console_socket`); the init's pid.
    async fn create(
        &self,
        id: &str,
        bundle: &Path,
        console_socket: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<i32, RuntimeError>;

    /// Starts the process described by `process_json` (runtime-spec
    /// Process) in container `id`, detached; its pid (also written to
    /// `pid_file`).
    async fn exec(
        &self,
        id: &str,
        process_json: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ContainerStdio,
    ) -> Result<i32, RuntimeError>;

    /// Starts the created container's user process.
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;

    /// Sends `signal` to the init, or with `all` to every process in the
    /// container's cgroup.
    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), RuntimeError>;

    /// Deletes the container; `force` kills a container that still runs.
    async fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError>;

    async fn pause(&self, id: &str) -> Result<(), RuntimeError>;

    async fn resume(&self, id: &str) -> Result<(), RuntimeError>;

    /// Applies OCI LinuxResources (JSON) to the container's cgroup.
    async fn update(&self, id: &str, resources_json: Vec<u8>) -> Result<(), RuntimeError>;

    /// The container's cgroup statistics.
    async fn stats(&self, id: &str) -> Result<crate::stats::Stats, RuntimeError>;

    /// The pids in the container.
    async fn ps(&self, id: &str) -> Result<Vec<i32>, RuntimeError>;
}
