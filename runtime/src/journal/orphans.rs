//! What a killed create left running.
//!
//! libcontainer's create clones its intermediate process, which clones the
//! container's init; neither execs until the init runs the container's
//! process, and neither dies with the create: SIGKILLed, the create leaves
//! them running. The intermediate then goes on putting itself into the
//! container's cgroup, hierarchy by hierarchy (libcgroups' `add_task`
//! makes each directory), before it finds its parent gone: a `delete
//! --force` right after the kill removed the cgroup while the orphan was
//! still making it, and a freezer directory made after that stayed on the
//! host for good.
//!
//! The teardown of a killed create kills them first. They are found as the
//! clones they are: they hold the descriptors the create had open, the
//! container's state-lock file among them (`<root>/.locks/<id>`, opened by
//! the create before libcontainer forks, in a directory only host root can
//! reach), they were started after the create, and libcontainer names them
//! `youki:[1:INTER]` and `youki:[2:INIT]`. A cnfbox reading the state waits
//! for the same lock with the file open, but under its own name; the
//! container's init let go of every inherited descriptor at its exec.
//! Each is signalled through a pidfd opened before it is checked, so a pid
//! reused in between is never hit, and waited for until it is gone.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

/// The name libcontainer gives the processes it clones (`prctl(PR_SET_NAME)`).
const CLONE_NAME: &str = "youki:[";

/// How long a SIGKILLed orphan may take to exit before teardown says so.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// Errors killing a killed create's processes.
#[derive(Debug, thiserror::Error)]
pub enum OrphanError {
    #[error("stat the state lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("list processes in {path}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pidfd_open({pid})")]
    PidfdOpen {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("pidfd_send_signal({pid}, SIGKILL)")]
    Kill {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("wait for pid {pid} to exit")]
    Wait {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("pid {pid}, left by the killed create, still runs {}s after SIGKILL", EXIT_WAIT.as_secs())]
    StillRuns { pid: i32 },
}

/// Kills and waits for every process cloned by a create started at
/// `since` (clock ticks after boot) that still holds `lock` open; `proc`
/// is the procfs to look in. Returns their pids.
pub fn kill(proc: &Path, lock: &Path, since: u64) -> Result<Vec<i32>, OrphanError> {
    let meta = match fs::metadata(lock) {
        Ok(m) => m,
        // No lock file: no create of this container got as far as forking.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(OrphanError::Lock {
                path: lock.to_path_buf(),
                source,
            })
        }
    };
    let file = (meta.dev(), meta.ino());
    let mut killed = Vec::new();
    // The intermediate may clone the init between a listing and its kill:
    // look again until a listing finds none.
    loop {
        let found = clones(proc, file, since)?;
        if found.is_empty() {
            return Ok(killed);
        }
        for (pid, pidfd) in found {
            tracing::warn!(pid, "killing a process the killed create left running");
            pidfd_send_signal(&pidfd, Signal::KILL).map_err(|e| OrphanError::Kill {
                pid,
                source: e.into(),
            })?;
            wait_gone(pid, &pidfd)?;
            killed.push(pid);
        }
    }
}

/// The processes of `proc` that match (with a pidfd each, opened before
/// the process was checked).
fn clones(proc: &Path, file: (u64, u64), since: u64) -> Result<Vec<(i32, OwnedFd)>, OrphanError> {
    let entries = fs::read_dir(proc).map_err(|source| OrphanError::List {
        path: proc.to_path_buf(),
        source,
    })?;
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some(raw) = Pid::from_raw(pid) else {
            continue;
        };
        // Open first: what is checked below is then this very process.
        let pidfd = match pidfd_open(raw, PidfdFlags::empty()) {
            Ok(fd) => fd,
            // Gone already (or a kernel thread's pid is a thread's).
            Err(rustix::io::Errno::SRCH) | Err(rustix::io::Errno::INVAL) => continue,
            Err(e) => {
                return Err(OrphanError::PidfdOpen {
                    pid,
                    source: e.into(),
                })
            }
        };
        if is_orphan(&entry.path(), file, since) {
            found.push((pid, pidfd));
        }
    }
    Ok(found)
}

/// Whether the process at `/proc/<pid>` is a clone of the create: named
/// by libcontainer, started after the create, holding the lock file open.
fn is_orphan(dir: &Path, file: (u64, u64), since: u64) -> bool {
    let Ok(stat) =
        procfs::process::Process::new_with_root(dir.to_path_buf()).and_then(|p| p.stat())
    else {
        return false;
    };
    if !stat.comm.starts_with(CLONE_NAME) || stat.starttime < since {
        return false;
    }
    let Ok(fds) = fs::read_dir(dir.join("fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| fs::metadata(fd.path()).is_ok_and(|m| (m.dev(), m.ino()) == file))
}

/// Waits until the process behind `pidfd` has exited (its pidfd reads
/// ready then).
fn wait_gone(pid: i32, pidfd: &OwnedFd) -> Result<(), OrphanError> {
    let timeout = Timespec {
        tv_sec: EXIT_WAIT.as_secs() as i64,
        tv_nsec: 0,
    };
    loop {
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Err(OrphanError::StillRuns { pid }),
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                return Err(OrphanError::Wait {
                    pid,
                    source: e.into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, Stdio};

    fn start_of(pid: u32) -> u64 {
        procfs::process::Process::new(pid as i32)
            .unwrap()
            .stat()
            .unwrap()
            .starttime
    }

    /// A shell named `name` (its own `comm`, set by the builtin `printf`),
    /// holding `lock` open as fd 3 or not, blocked in the builtin `read`
    /// (no child of its own); ready once its name shows.
    fn process(name: &str, lock: Option<&Path>) -> Child {
        let open = lock.map_or(String::new(), |l| format!("exec 3<'{}'; ", l.display()));
        let mut child = Command::new("sh")
            .args([
                "-c",
                &format!("{open}printf '%s' '{name}' > /proc/self/comm; read x"),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let comm = format!("/proc/{}/comm", child.id());
        while fs::read_to_string(&comm).unwrap_or_default().trim() != name {
            assert!(child.try_wait().unwrap().is_none(), "{name} exited early");
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    /// The named holder is killed and reaped; a holder under another name,
    /// a named process without the file, and a named holder started before
    /// the create are left alone.
    #[test]
    fn kills_the_named_holders_of_the_lock_only() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock");
        fs::write(&lock, "").unwrap();
        let mut early = process("youki:[1:INTER]", Some(&lock));
        let since = start_of(early.id()) + 1;
        std::thread::sleep(Duration::from_millis(20));
        let mut orphan = process("youki:[1:INTER]", Some(&lock));
        assert!(
            start_of(orphan.id()) >= since,
            "clock ticks did not advance"
        );
        let mut reader = process("cnfbox", Some(&lock));
        let mut other = process("youki:[2:INIT]", None);
        let killed = kill(Path::new("/proc"), &lock, since).unwrap();
        assert_eq!(killed, vec![orphan.id() as i32]);
        let status = orphan.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        for (what, c) in [
            ("an earlier holder", &mut early),
            ("the reader", &mut reader),
            ("a process without the lock", &mut other),
        ] {
            assert!(c.try_wait().unwrap().is_none(), "{what} was killed");
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    #[test]
    fn no_lock_file_kills_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let killed = kill(Path::new("/proc"), &dir.path().join("none"), 0).unwrap();
        assert!(killed.is_empty());
    }
}
