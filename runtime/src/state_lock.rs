//! One writer or many readers of a container's `state.json`.
//!
//! libcontainer 0.7 writes `state.json` in place (open with `O_TRUNC`, then
//! write): a reader in another cnfbox process could meet the empty file
//! ("failed to parse container state file ... EOF"). Every step that makes
//! libcontainer write the file (create, start, kill, pause, resume, the
//! delete of the journal's teardown) holds an exclusive `flock(2)` on
//! `<root>/.locks/<id>`; every read of another process's container takes a
//! shared one. These are POSIX record locks (`fcntl(F_SETLKW)`), which
//! belong to the process: the container's init, forked by libcontainer
//! while create holds the lock, does not inherit it (an `flock(2)` lock
//! belongs to the open file description, which the init shares: a create
//! killed before the init closed its descriptors left the lock held by the
//! init, and the `delete --force` that must kill it waited forever). A
//! process opens a container's lock file once at a time (closing any
//! descriptor of the file drops all its locks on it), and while it holds
//! one it only ever waits for a pod's sandbox (a member's create reads its
//! sandbox; a sandbox reads no member), so no two processes wait for each
//! other.
//!
//! The lock file is made by the first writer (the create) and removed by
//! the delete that removed the container; a reader never makes one (no
//! file: no writer, so nothing to wait for).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::os::fd::AsRawFd;

use libcontainer::container::Container;

/// Where the lock files live in a state root.
const LOCK_DIR: &str = ".locks";

/// Errors taking a state lock.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    #[error("create the lock directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open the state lock {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fcntl(F_SETLKW, {mode}) on the state lock {path}")]
    Flock {
        path: PathBuf,
        mode: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("remove the state lock {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The lock file of container `id` in `root`.
pub fn path(root: &Path, id: &str) -> PathBuf {
    root.join(LOCK_DIR).join(id)
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    /// Held open: closing it releases the lock.
    _file: fs::File,
}

impl StateLock {
    /// Waits for and takes the exclusive lock of `id`, making the lock file
    /// (0600, in a 0700 directory) if needed.
    pub fn exclusive(root: &Path, id: &str) -> Result<Self, StateLockError> {
        let dir = root.join(LOCK_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| StateLockError::Dir {
                path: dir.clone(),
                source,
            })?;
        let path = path(root, id);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StateLockError::Open {
                path: path.clone(),
                source,
            })?;
        Self::take(file, path, libc::F_WRLCK, "F_WRLCK")
    }

    /// Waits for and takes a shared lock of `id`; `None` when no writer
    /// ever made its lock file (or the container was deleted).
    pub fn shared(root: &Path, id: &str) -> Result<Option<Self>, StateLockError> {
        let path = path(root, id);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateLockError::Open { path, source }),
        };
        Self::take(file, path, libc::F_RDLCK, "F_RDLCK").map(Some)
    }

    fn take(
        file: fs::File,
        path: PathBuf,
        kind: libc::c_int,
        mode: &'static str,
    ) -> Result<Self, StateLockError> {
        // The whole file (start 0, length 0 = to the end).
        // SAFETY: an all-zero `flock` is a valid value of the plain C struct.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        loop {
            match nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLKW(&lock)) {
                Ok(_) => break,
                Err(nix::Error::EINTR) => continue,
                Err(source) => return Err(StateLockError::Flock { path, mode, source }),
            }
        }
        Ok(Self { path, _file: file })
    }

    /// Removes the lock file of a container that is gone, still holding
    /// the lock (a reader waiting on it then finds no state).
    pub fn remove_file(&self) -> Result<(), StateLockError> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateLockError::Remove {
                path: self.path.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Errors reading a container under its shared lock.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Lock(#[from] StateLockError),
    #[error(transparent)]
    Load(#[from] libcontainer::error::LibcontainerError),
}

/// `Container::load` of the container in `dir` (`<root>/<id>`), under its
/// shared lock: never a half-written `state.json`; with its init checked
/// against the start time its record holds (`check_init`).
pub fn load_with(dir: &Path, init_start: Option<u64>) -> Result<Container, ReadError> {
    let _lock = match (dir.parent(), dir.file_name().and_then(|n| n.to_str())) {
        (Some(root), Some(id)) => StateLock::shared(root, id)?,
        _ => None,
    };
    let mut c = Container::load(dir.to_path_buf())?;
    check_init(&mut c, init_start, Path::new("/proc"));
    Ok(c)
}

/// libcontainer takes any live process with the recorded pid for the
/// init. One that started at another time than the init cnfbox recorded
/// (`ContainerMeta::init_start`) reused the pid after the init was reaped:
/// the container is `stopped` and has no pid, so no command signals,
/// joins or reports that process. A container of an older release, with
/// no start time recorded, keeps libcontainer's view.
pub fn check_init(c: &mut Container, init_start: Option<u64>, proc: &Path) {
    use libcontainer::container::ContainerStatus as S;
    if !matches!(c.status(), S::Created | S::Running | S::Paused) {
        return;
    }
    let (Some(pid), Some(start)) = (c.pid(), init_start) else {
        return;
    };
    if !crate::host::init::is(proc, pid.as_raw(), start) {
        tracing::warn!(id = %c.id(), pid = pid.as_raw(), start, "the init's pid names another process now: the container is stopped");
        c.set_status(S::Stopped);
        c.state.pid = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_lock_waits_for_the_exclusive_one_of_another_process() {
        let root = tempfile::tempdir().expect("tempdir");
        assert!(
            StateLock::shared(root.path(), "c1").unwrap().is_none(),
            "no file: nothing to wait for"
        );
        let ex = StateLock::exclusive(root.path(), "c1").unwrap();
        let p = path(root.path(), "c1");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        // A child process cannot take a shared lock while it is held (a
        // record lock is the process's: the child does not inherit it).
        // SAFETY: the child only calls fcntl and _exit.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let code = match fs::File::open(&p) {
                    Ok(f) => {
                        // SAFETY: as above.
                        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
                        lock.l_type = libc::F_RDLCK as libc::c_short;
                        let r =
                            nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLK(&lock));
                        i32::from(r.is_ok())
                    }
                    Err(_) => 2,
                };
                // SAFETY: ends the forked child at once.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "the child got a shared lock while the parent held the exclusive one"
                );
            }
        }
        ex.remove_file().unwrap();
        drop(ex);
        assert!(!p.exists());
        assert!(StateLock::shared(root.path(), "c1").unwrap().is_none());
    }
}
