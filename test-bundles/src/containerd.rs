//! A private, throw-away containerd for tests.
//!
//! Everything it writes stays in one temporary directory (`root`, `state`,
//! sockets, the `opt` plugin dir, its log). containerd 1.6 still puts a few
//! things under the fixed `/run/containerd` (shim sockets in
//! `/run/containerd/s`, runc state, ctr's FIFOs), so the daemon runs in its
//! own mount namespace with a tmpfs over `/run`, and `ctr` joins that
//! namespace with nsenter(1). The system's `/var/lib/containerd` and
//! `/run/containerd` are never touched, and every mount the daemon makes
//! (snapshots, the tmpfs) dies with the namespace.
//!
//! `ctr` commands use a containerd namespace unique to the instance, so the
//! cgroups runc makes for it (`/<namespace>/<id>` in every hierarchy) can be
//! told apart and removed on stop.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tracing::{debug, info, warn};

/// Tools a private containerd needs on `PATH`.
pub const REQUIRED_TOOLS: [&str; 6] = [
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "runc",
    "unshare",
    "nsenter",
];

/// Names a directory whose containerd binaries the tests use first.
pub const CONTAINERD_BIN_ENV: &str = "CNFBOX_CONTAINERD_BIN";

/// Root of the cgroup hierarchies whose `<namespace>` dirs are removed.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors while running the private containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("{tool} not found in PATH (Debian packages: containerd, runc, util-linux)")]
    ToolMissing { tool: &'static str },
    #[error("setting up containerd directory {path}")]
    Setup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spawning {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd (config {config}) did not come up within {secs}s; log:\n{log}")]
    StartTimeout {
        config: PathBuf,
        secs: u64,
        log: String,
    },
    #[error("containerd exited during startup with {status}; log:\n{log}")]
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("{CONTAINERD_BIN_ENV}={dir} but the containerd found is {running}")]
    NotTheAskedFor { dir: PathBuf, running: PathBuf },
    #[error("`ctr {args}` failed with {status}: {stderr}")]
    Ctr {
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("signalling pid {pid}")]
    Signal {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("removing containerd directory {path}")]
    Cleanup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounts under {path} survived containerd: {mounts:?}")]
    MountsLeft { path: PathBuf, mounts: Vec<String> },
}

/// Directories Debian puts daemons and runc in, often missing from a
/// non-login `PATH`.
const SBIN_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// `PATH` plus [`SBIN_DIRS`]: where tools are looked up, and the `PATH`
/// containerd (and so its shim, which looks for runc) runs with.
///
/// With `CNFBOX_CONTAINERD_BIN` set (a directory holding `containerd`,
/// `ctr` and `containerd-shim-runc-v2`, e.g. containerd 2.x unpacked by
/// `scripts/containerd2.sh`), that directory comes first: the tests then
/// run against that containerd instead of the system's.
pub fn search_path() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let first = std::env::var_os(CONTAINERD_BIN_ENV).map(PathBuf::from);
    let dirs = first
        .into_iter()
        .chain(std::env::split_paths(&path))
        .chain(SBIN_DIRS.map(PathBuf::from));
    // Only fails for a dir containing ':', which split_paths cannot yield.
    std::env::join_paths(dirs).unwrap_or(path)
}

/// The first `name` in [`search_path`].
pub fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&search_path())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The first required tool that is missing, if any.
pub fn missing_tool() -> Option<&'static str> {
    REQUIRED_TOOLS.into_iter().find(|t| find_tool(t).is_none())
}

/// `containerd --version` of the first containerd on [`search_path`]
/// (e.g. `2.4.2+unknown`), empty when there is none or it does not answer.
pub fn installed_version() -> String {
    let out = find_tool("containerd")
        .and_then(|bin| Command::new(bin).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "containerd github.com/containerd/containerd/v2 2.1.9+unknown <rev>"
    out.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .trim_start_matches('v')
        .to_string()
}

/// Why cnfbox's shim cannot be tested on the containerd found here, if it
/// cannot: a required tool is missing, or the containerd first on
/// [`search_path`] is older than 2.0 (the shim serves the task API v3,
/// which containerd 1.x does not speak).
pub fn unsupported_for_cnfbox_shim() -> Option<String> {
    if let Some(tool) = missing_tool() {
        return Some(format!(
            "{tool} not installed (scripts/go-tools.sh containerd, apt-get install runc util-linux)"
        ));
    }
    let version = installed_version();
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 2 => None,
        _ => Some(format!(
            "containerd {version:?} at {} is not 2.x (cnfbox's shim needs containerd 2.0+): \
             set {CONTAINERD_BIN_ENV}=$(bash scripts/go-tools.sh containerd v2.4.2)",
            find_tool("containerd").unwrap_or_default().display()
        )),
    }
}

/// Environment of a private containerd (inherited by its shims and the
/// runtimes they run).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Directories put in front of `PATH` (e.g. one holding a shim binary).
    pub path_prepend: Vec<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, std::ffi::OsString)>,
    /// Keep the CRI plugin enabled (disabled by default).
    pub cri: bool,
}

/// A running private containerd; stopped and cleaned up on drop.
#[derive(Debug)]
pub struct PrivateContainerd {
    dir: Option<TempDir>,
    child: Option<Child>,
    pid: u32,
    /// The private mount namespace, held open: while held, its inode
    /// number cannot be reused by a new namespace (a container's), so
    /// "processes in this namespace" stays exactly the daemon's own.
    mnt_ns: Option<MntNs>,
    namespace: String,
    socket: PathBuf,
    log: PathBuf,
    config: PathBuf,
    /// The environment containerd was started with (for `restart`).
    env_path: std::ffi::OsString,
    env: Vec<(String, std::ffi::OsString)>,
}

impl PrivateContainerd {
    /// Starts containerd with the default private config.
    pub fn start() -> Result<Self, ContainerdError> {
        Self::start_with_config("")
    }

    /// Starts containerd with `extra` TOML appended to the private config
    /// (e.g. runtime or plugin sections).
    pub fn start_with_config(extra: &str) -> Result<Self, ContainerdError> {
        Self::start_with(extra, &StartOptions::default())
    }

    /// Starts containerd with `extra` TOML appended to the private config
    /// and the environment changes of `opts`.
    pub fn start_with(extra: &str, opts: &StartOptions) -> Result<Self, ContainerdError> {
        if let Some(tool) = missing_tool() {
            return Err(ContainerdError::ToolMissing { tool });
        }
        let dir = tempfile::Builder::new()
            .prefix("cnfbox-containerd-")
            .tempdir()
            .map_err(|source| ContainerdError::Setup {
                path: std::env::temp_dir(),
                source,
            })?;
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = d.join("config.toml");
        let log = d.join("containerd.log");
        let toml = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
{disabled}

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = "{d}/debug.sock"
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
{extra}
"#,
            disabled = if opts.cri {
                ""
            } else {
                r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#
            },
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            d = d.display(),
        );
        fs::write(&config, toml).map_err(|source| ContainerdError::Setup {
            path: config.clone(),
            source,
        })?;
        let log_file = fs::File::create(&log).map_err(|source| ContainerdError::Setup {
            path: log.clone(),
            source,
        })?;
        let log_err = log_file
            .try_clone()
            .map_err(|source| ContainerdError::Setup {
                path: log.clone(),
                source,
            })?;
        let own_ns = MntNs::id_of("self");
        // unshare(1) and sh exec into containerd: the pid stays the same.
        let script = format!(
            // /run/containerd as containerd makes it on a host (0711): its
            // state is elsewhere here, and a shim creating it first would
            // leave it 0600, untraversable from a pod's user namespace.
            "mount -t tmpfs -o mode=0755 cnfbox-private-run /run && mkdir -m 0711 /run/containerd && exec containerd --config '{}'",
            config.display()
        );
        let mut path: Vec<PathBuf> = opts.path_prepend.clone();
        path.extend(std::env::split_paths(&search_path()));
        let path = std::env::join_paths(path).unwrap_or_else(|_| search_path());
        let env_path = path.clone();
        let child = Command::new("unshare")
            .env("PATH", path)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|source| ContainerdError::Spawn {
                what: "unshare containerd".into(),
                source,
            })?;
        let pid = child.id();
        let mut me = Self {
            dir: Some(dir),
            child: Some(child),
            pid,
            mnt_ns: None,
            namespace: format!("cnfbox-tb-{pid}"),
            socket,
            log,
            config: config.clone(),
            env_path,
            env: opts.env.clone(),
        };
        me.wait_ready(&config, own_ns)?;
        let version = me.version();
        if let Some(dir) = std::env::var_os(CONTAINERD_BIN_ENV) {
            let bin = find_tool("containerd");
            if bin != Some(PathBuf::from(&dir).join("containerd")) {
                return Err(ContainerdError::NotTheAskedFor {
                    dir: dir.into(),
                    running: bin.unwrap_or_default(),
                });
            }
        }
        info!(pid, %version, socket = %me.socket.display(), "private containerd up");
        Ok(me)
    }

    /// Stops containerd (SIGTERM, shims keep running) and starts it again
    /// with the same config, in the same private mount namespace.
    pub fn restart(&mut self) -> Result<(), ContainerdError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(Pid::from_raw(self.pid as i32), Signal::SIGTERM)?;
        let _ = child.wait(); // reaps; the status of a stopped daemon is moot
        let ns_fd = self
            .mnt_ns
            .as_ref()
            .map(|ns| std::os::fd::AsRawFd::as_raw_fd(&ns._file))
            .ok_or_else(|| ContainerdError::Spawn {
                what: "containerd restart: the mount namespace is gone".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        let log_file = fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .map_err(|source| ContainerdError::Setup {
                path: self.log.clone(),
                source,
            })?;
        let log_err = log_file
            .try_clone()
            .map_err(|source| ContainerdError::Setup {
                path: self.log.clone(),
                source,
            })?;
        let child = Command::new("nsenter")
            .env("PATH", &self.env_path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg(format!("--mount=/proc/{}/fd/{ns_fd}", std::process::id()))
            .args(["--", "containerd", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|source| ContainerdError::Spawn {
                what: "nsenter containerd (restart)".into(),
                source,
            })?;
        self.pid = child.id();
        self.child = Some(child);
        let config = self.config.clone();
        self.wait_ready(&config, None)?;
        info!(pid = self.pid, "private containerd restarted");
        Ok(())
    }

    fn wait_ready(
        &mut self,
        config: &Path,
        own_ns: Option<(u64, u64)>,
    ) -> Result<(), ContainerdError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(ContainerdError::Exited {
                        status,
                        log: self.log(),
                    });
                }
            }
            if self.mnt_ns.is_none() {
                self.mnt_ns = MntNs::open(self.pid).filter(|ns| Some(ns.id) != own_ns);
            }
            if self.mnt_ns.is_some() && self.socket.exists() {
                let ok = self
                    .ctr()
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(ContainerdError::StartTimeout {
                    config: config.to_owned(),
                    secs: START_TIMEOUT.as_secs(),
                    log: self.log(),
                });
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// `containerd --version` of the binary this instance runs (the first
    /// on [`search_path`]), e.g. `2.1.9+unknown`.
    pub fn version(&self) -> String {
        installed_version()
    }

    /// The gRPC socket (`ctr --address`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The private temporary directory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(TempDir::path)
    }

    /// The containerd namespace `ctr()` uses (`ctr --namespace`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's pid (its mount namespace is the private one).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A `ctr --address SOCK --namespace NS` command inside containerd's
    /// mount namespace; add the subcommand and run it. stdin is null.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.env("PATH", search_path())
            .arg("--target")
            .arg(self.pid.to_string())
            .args(["--mount", "--", "ctr", "--address"])
            .arg(&self.socket)
            .arg("--namespace")
            .arg(&self.namespace)
            .stdin(Stdio::null());
        c
    }

    /// Runs `ctr ARGS`; an error (with stderr) when it exits non-zero.
    pub fn ctr_ok<I, S>(&self, args: I) -> Result<Output, ContainerdError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        debug!(args = %shown, "ctr");
        let out = self
            .ctr()
            .args(&args)
            .output()
            .map_err(|source| ContainerdError::Spawn {
                what: format!("ctr {shown}"),
                source,
            })?;
        if !out.status.success() {
            return Err(ContainerdError::Ctr {
                args: shown,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(out)
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s); // best effort: for messages only
        }
        s
    }

    /// Kills and deletes every task, stops containerd, kills what is left
    /// in its mount namespace, checks no mount survived, removes the dir.
    pub fn stop(mut self) -> Result<(), ContainerdError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ContainerdError> {
        let Some(mut child) = self.child.take() else {
            return self.remove_dir();
        };
        self.remove_tasks();
        let pid = Pid::from_raw(self.pid as i32);
        signal(pid, Signal::SIGTERM)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        if matches!(child.try_wait(), Ok(None)) {
            warn!(pid = self.pid, "containerd ignored SIGTERM, killing it");
            signal(pid, Signal::SIGKILL)?;
            let _ = child.wait(); // reaps; the status of a killed daemon is moot
        }
        let killed = self.kill_namespace_leftovers();
        // Releasing the namespace frees its mounts (tmpfs, snapshots).
        self.mnt_ns = None;
        killed?;
        self.remove_cgroups();
        self.remove_dir()
    }

    /// Removes the (empty) `<namespace>` cgroup dirs runc left in each
    /// hierarchy; runc removes only the per-container leaves.
    fn remove_cgroups(&self) {
        let Ok(hierarchies) = fs::read_dir(CGROUP_ROOT) else {
            return;
        };
        let mut dirs: Vec<PathBuf> = hierarchies
            .filter_map(Result::ok)
            .map(|h| h.path().join(&self.namespace))
            .collect();
        // cgroup2 mounted directly at the root.
        dirs.push(Path::new(CGROUP_ROOT).join(&self.namespace));
        for dir in dirs.into_iter().filter(|d| d.is_dir()) {
            if let Err(err) = fs::remove_dir(&dir) {
                warn!(%err, path = %dir.display(), "removing the private containerd's cgroup");
            }
        }
    }

    /// Force-deletes the tasks and containers of every namespace.
    fn remove_tasks(&self) {
        let lines = |args: &[&str]| -> Vec<String> {
            self.ctr_ok(args)
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(|l| l.trim().to_owned())
                        .filter(|l| !l.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        for ns in lines(&["namespaces", "ls", "-q"]) {
            for task in lines(&["-n", &ns, "tasks", "ls", "-q"]) {
                if let Err(err) = self.ctr_ok(["-n", &ns, "tasks", "delete", "-f", &task]) {
                    warn!(%err, ns, task, "deleting leftover task");
                }
            }
            for c in lines(&["-n", &ns, "containers", "ls", "-q"]) {
                if let Err(err) = self.ctr_ok(["-n", &ns, "containers", "rm", &c]) {
                    warn!(%err, ns, container = c, "removing leftover container");
                }
            }
        }
    }

    /// SIGKILLs the processes still in the private mount namespace (shims
    /// this containerd started), and waits for them to go.
    fn kill_namespace_leftovers(&self) -> Result<(), ContainerdError> {
        let Some(ns) = &self.mnt_ns else {
            return Ok(());
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let left = ns.pids();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                warn!(?left, "processes survive in the private mount namespace");
                return Ok(());
            }
            for p in left {
                warn!(
                    pid = p,
                    "killing leftover process of the private containerd"
                );
                // It may exit between the scan and the kill.
                match kill(Pid::from_raw(p), Signal::SIGKILL) {
                    Ok(()) | Err(nix::Error::ESRCH) => {}
                    Err(source) => return Err(ContainerdError::Signal { pid: p, source }),
                }
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn remove_dir(&mut self) -> Result<(), ContainerdError> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let path = dir.path().to_owned();
        let mounts = mounts_under(&path);
        if !mounts.is_empty() {
            // Removing the dir would descend into live mounts: keep it.
            let _ = dir.keep();
            return Err(ContainerdError::MountsLeft { path, mounts });
        }
        dir.close()
            .map_err(|source| ContainerdError::Cleanup { path, source })
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            warn!(%err, "stopping private containerd");
            eprintln!("cnfbox: stopping private containerd: {err}");
        }
    }
}

fn signal(pid: Pid, sig: Signal) -> Result<(), ContainerdError> {
    match kill(pid, sig) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(source) => Err(ContainerdError::Signal {
            pid: pid.as_raw(),
            source,
        }),
    }
}

/// An open handle on a mount namespace and its (device, inode) identity.
#[derive(Debug)]
struct MntNs {
    _file: fs::File,
    id: (u64, u64),
}

impl MntNs {
    /// The namespace of `pid`, held open.
    fn open(pid: u32) -> Option<Self> {
        let file = fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
        let meta = file.metadata().ok()?;
        Some(Self {
            id: (meta.dev(), meta.ino()),
            _file: file,
        })
    }

    /// (device, inode) of `/proc/<pid>/ns/mnt`.
    fn id_of(pid: &str) -> Option<(u64, u64)> {
        let meta = fs::metadata(format!("/proc/{pid}/ns/mnt")).ok()?;
        Some((meta.dev(), meta.ino()))
    }

    /// Pids of the processes in this namespace.
    fn pids(&self) -> Vec<i32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter(|p| Self::id_of(&p.to_string()) == Some(self.id))
            .collect()
    }
}

/// Mount points (of this process's namespace) at or below `path`.
fn mounts_under(path: &Path) -> Vec<String> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(path))
        .map(str::to_owned)
        .collect()
}
