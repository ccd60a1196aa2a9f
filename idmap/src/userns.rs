//! User-namespace file descriptors that carry a mapping, made without any
//! container: an id-mapped mount needs a user namespace only as a carrier of
//! its uid_map/gid_map (mount_setattr(2), `MOUNT_ATTR_IDMAP`).
//!
//! Recipe (as in util-linux `mount -o X-mount.idmap`): fork a child that
//! unshares `CLONE_NEWUSER` and blocks on a pipe; the parent writes the
//! child's `uid_map` and `gid_map`, opens `/proc/PID/ns/user`, then closes
//! the pipe and reaps the child. The open fd keeps the namespace alive.
//!
//! The parent writes `gid_map` without `setgroups deny`: user_namespaces(7)
//! only requires that when the writer lacks `CAP_SETGID` in the parent
//! namespace, and the runtime runs as root there.

use std::collections::HashMap;
use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::range::PodMapping;

/// Errors making a user-namespace fd, one per step.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// `pipe2(2)` for the parent/child handshake.
    #[error("pipe2 for the user-namespace helper")]
    Pipe {
        #[source]
        source: Errno,
    },
    /// `fork(2)` of the helper.
    #[error("fork of the user-namespace helper")]
    Fork {
        #[source]
        source: Errno,
    },
    /// `close_range(2)` of inherited fds in the helper.
    #[error("close_range of inherited fds in helper {pid}")]
    CloseRange {
        pid: i32,
        #[source]
        source: Errno,
    },
    /// `unshare(CLONE_NEWUSER)` in the helper (errno sent back on the pipe).
    #[error("unshare(CLONE_NEWUSER) in helper {pid}")]
    Unshare {
        pid: i32,
        #[source]
        source: Errno,
    },
    /// Reading the helper's readiness byte.
    #[error("waiting for user-namespace helper {pid}")]
    Handshake {
        pid: i32,
        #[source]
        source: io::Error,
    },
    /// Writing `uid_map` or `gid_map`.
    #[error("writing {path} ({line:?})")]
    WriteMap {
        path: PathBuf,
        line: String,
        #[source]
        source: io::Error,
    },
    /// Opening `/proc/PID/ns/user`.
    #[error("opening {path}")]
    OpenNs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `waitpid(2)` of the helper.
    #[error("reaping user-namespace helper {pid}")]
    Reap {
        pid: i32,
        #[source]
        source: Errno,
    },
    /// `dup(2)` of a cached fd.
    #[error("dup of the cached user-namespace fd for {mapping}")]
    Dup {
        mapping: PodMapping,
        #[source]
        source: io::Error,
    },
}

/// The helper child; on drop (error paths) it is told to exit, killed and
/// reaped, so no path leaves a zombie or a stray process.
struct Helper {
    pid: Pid,
    /// Write end of the "hold" pipe; the child exits when it reads EOF.
    hold: Option<OwnedFd>,
    reaped: bool,
}

impl Helper {
    fn finish(mut self) -> Result<(), UsernsError> {
        self.hold = None;
        self.reaped = true;
        reap(self.pid)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        self.hold = None;
        if let Err(errno) = kill(self.pid, Signal::SIGKILL) {
            tracing::debug!(pid = self.pid.as_raw(), ?errno, "kill of userns helper");
        }
        if let Err(e) = reap(self.pid) {
            tracing::warn!(pid = self.pid.as_raw(), error = %e, "userns helper not reaped");
        }
    }
}

fn reap(pid: Pid) -> Result<(), UsernsError> {
    loop {
        match waitpid(pid, None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            // A containerd shim reaps every child with waitpid(-1) from its
            // own thread, or SIGCHLD may be ignored: the child is gone either
            // way.
            Err(Errno::ECHILD) => {
                tracing::debug!(pid = pid.as_raw(), "userns helper reaped elsewhere");
                return Ok(());
            }
            Err(source) => {
                return Err(UsernsError::Reap {
                    pid: pid.as_raw(),
                    source,
                })
            }
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| UsernsError::Pipe { source })
}

/// Steps of the helper child, reported with an errno on the ready pipe.
const STEP_OK: i32 = 0;
const STEP_CLOSE_RANGE: i32 = 1;
const STEP_UNSHARE: i32 = 2;

/// Body of the forked child. Only async-signal-safe calls: the parent may be
/// multi-threaded, and after fork(2) only such calls are defined. Never
/// returns.
///
/// It first closes every inherited fd but stdio and its two pipe ends:
/// helpers forked at the same time by other threads would otherwise hold
/// each other's pipe ends open, and none would ever see the EOF that tells
/// it to exit.
fn child_main(ready: RawFd, hold: RawFd) -> ! {
    // SAFETY: plain syscalls on fds this process owns (inherited across
    // fork), with valid pointers to stack variables of the right sizes;
    // `_exit` never returns and runs no Rust destructors or atexit handlers.
    unsafe {
        let (lo, hi) = (ready.min(hold), ready.max(hold));
        let mut step = STEP_OK;
        for (first, last) in [(3, lo - 1), (lo + 1, hi - 1), (hi + 1, i32::MAX)] {
            if first <= last
                && libc::syscall(
                    libc::SYS_close_range,
                    first as libc::c_uint,
                    last as libc::c_uint,
                    0 as libc::c_uint,
                ) != 0
            {
                step = STEP_CLOSE_RANGE;
                break;
            }
        }
        if step == STEP_OK && libc::unshare(libc::CLONE_NEWUSER) != 0 {
            step = STEP_UNSHARE;
        }
        let errno = if step == STEP_OK {
            0
        } else {
            *libc::__errno_location()
        };
        let report: [i32; 2] = [step, errno];
        let n = libc::write(
            ready,
            report.as_ptr().cast::<c_void>(),
            std::mem::size_of_val(&report),
        );
        if n == 8 && step == STEP_OK {
            let mut b = 0u8;
            // Blocks until the parent closes its end: EOF, or an error.
            libc::read(hold, std::ptr::from_mut(&mut b).cast::<c_void>(), 1);
        }
        libc::_exit(0)
    }
}

/// Makes a new user namespace with `mapping` and returns an fd to it.
/// `proc_root` is `/proc` on a host.
pub fn create_userns_fd(proc_root: &Path, mapping: &PodMapping) -> Result<OwnedFd, UsernsError> {
    let (ready_r, ready_w) = pipe()?;
    let (hold_r, hold_w) = pipe()?;
    let (ready_raw, hold_raw) = (ready_w.as_raw_fd(), hold_r.as_raw_fd());
    // The child runs only `child_main` (async-signal-safe syscalls, then
    // `_exit`), so other threads' locks in the copied address space do not
    // matter.
    // SAFETY: fork(2) has no memory-safety preconditions; see above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(UsernsError::Fork {
            source: Errno::last(),
        });
    }
    if pid == 0 {
        child_main(ready_raw, hold_raw);
    }
    let helper = Helper {
        pid: Pid::from_raw(pid),
        hold: Some(hold_w),
        reaped: false,
    };
    drop((ready_w, hold_r));
    let mut report = [0u8; 8];
    let mut file = std::fs::File::from(ready_r);
    io::Read::read_exact(&mut file, &mut report)
        .map_err(|source| UsernsError::Handshake { pid, source })?;
    let [s0, s1, s2, s3, e0, e1, e2, e3] = report;
    let (step, errno) = (
        i32::from_ne_bytes([s0, s1, s2, s3]),
        Errno::from_raw(i32::from_ne_bytes([e0, e1, e2, e3])),
    );
    match step {
        STEP_OK => {}
        STEP_CLOSE_RANGE => return Err(UsernsError::CloseRange { pid, source: errno }),
        _ => return Err(UsernsError::Unshare { pid, source: errno }),
    }
    let dir = proc_root.join(pid.to_string());
    for (name, line) in [
        ("uid_map", mapping.uid.to_proc_line()),
        ("gid_map", mapping.gid.to_proc_line()),
    ] {
        // The kernel takes the whole map in one write(2); `fs::write` of a
        // short buffer is one write.
        let path = dir.join(name);
        std::fs::write(&path, line.as_bytes()).map_err(|source| UsernsError::WriteMap {
            path,
            line,
            source,
        })?;
    }
    let ns_path = dir.join("ns").join("user");
    let fd = std::fs::File::open(&ns_path)
        .map(OwnedFd::from)
        .map_err(|source| UsernsError::OpenNs {
            path: ns_path,
            source,
        })?;
    helper.finish()?;
    tracing::debug!(%mapping, "created user namespace for id-mapped mounts");
    Ok(fd)
}

/// A process-wide cache of user-namespace fds, one per mapping; callers get
/// a `dup` and may close it freely.
#[derive(Debug)]
pub struct UsernsCache {
    proc_root: PathBuf,
    fds: Mutex<HashMap<PodMapping, OwnedFd>>,
}

impl UsernsCache {
    /// A cache that reads `/proc` at `proc_root`.
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        UsernsCache {
            proc_root: proc_root.into(),
            fds: Mutex::new(HashMap::new()),
        }
    }

    /// The shared cache over the host's `/proc`.
    pub fn global() -> &'static UsernsCache {
        static GLOBAL: OnceLock<UsernsCache> = OnceLock::new();
        GLOBAL.get_or_init(|| UsernsCache::new("/proc"))
    }

    /// An fd to a user namespace with `mapping`, made on first use.
    pub fn get(&self, mapping: &PodMapping) -> Result<OwnedFd, UsernsError> {
        // A panic while holding the lock cannot leave the map half-updated
        // (insert is the only mutation), so a poisoned lock is still usable.
        let mut fds = self.fds.lock().unwrap_or_else(|p| p.into_inner());
        let fd = match fds.get(mapping) {
            Some(fd) => fd,
            None => {
                let fd = create_userns_fd(&self.proc_root, mapping)?;
                fds.entry(*mapping).or_insert(fd)
            }
        };
        fd.try_clone().map_err(|source| UsernsError::Dup {
            mapping: *mapping,
            source,
        })
    }

    /// Drops the cached fd for `mapping` (call when the pod's range is
    /// released, so the namespace can go away).
    pub fn evict(&self, mapping: &PodMapping) {
        let mut fds = self.fds.lock().unwrap_or_else(|p| p.into_inner());
        fds.remove(mapping);
    }

    /// Number of cached namespaces.
    pub fn len(&self) -> usize {
        self.fds.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `(st_dev, st_ino)` of a namespace fd: two fds refer to the same
/// namespace exactly when these match (namespaces(7)).
pub fn ns_id(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(io::Error::from)?;
    Ok((st.st_dev, st.st_ino))
}
