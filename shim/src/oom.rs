//! TaskOOM: cgroup v1 memory OOM notifications (cgroup-v1/memory.rst,
//! "Memory thresholds"/"OOM Control": an eventfd registered through
//! `cgroup.event_control` with the fd of `memory.oom_control`), and on a
//! unified host the `oom_kill` count of cgroup v2's `memory.events`
//! (cgroup-v2.rst: a value change raises a file modified event, which
//! poll(2) reports as POLLPRI).
//!
//! The kernel also signals the eventfd when the cgroup is removed, so the
//! v1 watcher ends by itself with the container; the v2 watcher ends when
//! `memory.events` is gone.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

/// Errors registering for OOM notifications.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error("the memory cgroup of pid {pid} was not found in {path}")]
    NoMemoryCgroup { pid: i32, path: PathBuf },
    #[error("eventfd(2)")]
    EventFd(#[source] std::io::Error),
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registering the OOM eventfd in {path}")]
    Register {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The cgroups of `pid` (procfs' parse of `<proc_root>/<pid>/cgroup`);
/// none when it cannot be read (the process is gone).
fn cgroups_of(path: &Path) -> Vec<procfs::ProcessCGroup> {
    use procfs::FromRead as _;
    procfs::ProcessCGroups::from_file(path).map_or_else(|_| Vec::new(), |c| c.0)
}

/// The v1 memory cgroup directory of `pid`.
pub fn memory_cgroup(proc_root: &Path, cgroup_root: &Path, pid: i32) -> Result<PathBuf, OomError> {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    cgroups_of(&path)
        .into_iter()
        .filter(|cg| cg.controllers.iter().any(|c| c == "memory"))
        .map(|cg| {
            cgroup_root
                .join("memory")
                .join(cg.pathname.trim_start_matches('/'))
        })
        .find(|d| d.is_dir())
        .ok_or(OomError::NoMemoryCgroup { pid, path })
}

/// Watches `dir` (a v1 memory cgroup); sends `()` on `tx` for every OOM
/// event until the cgroup goes away or the receiver is dropped.
pub fn watch(dir: &Path, tx: mpsc::UnboundedSender<()>) -> Result<(), OomError> {
    // SAFETY: eventfd takes no pointers; the result is checked below and
    // owned by the OwnedFd right after.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if raw < 0 {
        return Err(OomError::EventFd(std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh eventfd nothing else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    let control = dir.join("memory.oom_control");
    let oom = File::open(&control).map_err(|source| OomError::Open {
        path: control.clone(),
        source,
    })?;
    let event_control = dir.join("cgroup.event_control");
    let mut ec = std::fs::OpenOptions::new()
        .write(true)
        .open(&event_control)
        .map_err(|source| OomError::Open {
            path: event_control.clone(),
            source,
        })?;
    ec.write_all(format!("{} {}", efd.as_raw_fd(), oom.as_raw_fd()).as_bytes())
        .map_err(|source| OomError::Register {
            path: event_control.clone(),
            source,
        })?;
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        let _oom = oom; // the registration lives as long as this fd
        let mut efd = File::from(efd);
        let mut buf = [0u8; 8];
        while efd.read_exact(&mut buf).is_ok() {
            // Removal of the cgroup signals the eventfd too.
            if !dir.join("memory.oom_control").exists() {
                break;
            }
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// The cgroup v2 directory of `pid` (its `0::` line), when it has the
/// memory controller.
pub fn memory_cgroup_v2(
    proc_root: &Path,
    cgroup_root: &Path,
    pid: i32,
) -> Result<PathBuf, OomError> {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    cgroups_of(&path)
        .into_iter()
        .find(|cg| cg.hierarchy == 0 && cg.controllers.is_empty())
        .map(|cg| cgroup_root.join(cg.pathname.trim_start_matches('/')))
        .filter(|d| d.join("memory.events").exists())
        .ok_or(OomError::NoMemoryCgroup { pid, path })
}

/// `oom_kill` of a `memory.events` text.
fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Watches `dir` (a cgroup v2 cgroup); sends `()` on `tx` for every OOM
/// kill counted in its `memory.events` from now on, until the cgroup goes
/// away or the receiver is dropped.
pub fn watch_v2(dir: &Path, tx: mpsc::UnboundedSender<()>) -> Result<(), OomError> {
    let events = dir.join("memory.events");
    let file = File::open(&events).map_err(|source| OomError::Open {
        path: events.clone(),
        source,
    })?;
    let read = |f: &File| -> Option<u64> {
        let mut buf = [0u8; 512];
        let n = std::os::unix::fs::FileExt::read_at(f, &mut buf, 0).ok()?;
        Some(oom_kills(&String::from_utf8_lossy(&buf[..n])))
    };
    let mut seen = read(&file).unwrap_or(0);
    std::thread::spawn(move || loop {
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd on this stack frame; the fd stays
        // open (owned by `file`) for the call. The timeout bounds the wait so
        // a missed notification costs at most a second.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        let Some(now) = read(&file) else {
            break;
        };
        if !events.exists() {
            break;
        }
        for _ in seen..now {
            if tx.send(()).is_err() {
                return;
            }
        }
        seen = seen.max(now);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_memory_cgroup() {
        let t = tempfile::tempdir().expect("tempdir");
        let proc = t.path().join("proc");
        let cg = t.path().join("cg");
        std::fs::create_dir_all(proc.join("5")).expect("mkdir");
        std::fs::write(
            proc.join("5/cgroup"),
            "3:cpu,cpuacct:/a\n2:memory:/ns/c\n0::/a\n",
        )
        .expect("write");
        std::fs::create_dir_all(cg.join("memory/ns/c")).expect("mkdir");
        assert_eq!(
            memory_cgroup(&proc, &cg, 5).expect("found"),
            cg.join("memory/ns/c")
        );
        assert!(matches!(
            memory_cgroup(&proc, &cg, 6),
            Err(OomError::NoMemoryCgroup { pid: 6, .. })
        ));
    }

    #[test]
    fn finds_the_v2_cgroup_and_counts_oom_kills() {
        let t = tempfile::tempdir().expect("tempdir");
        let proc = t.path().join("proc");
        let cg = t.path().join("cg");
        std::fs::create_dir_all(proc.join("5")).expect("mkdir");
        std::fs::write(proc.join("5/cgroup"), "0::/cnfbox/c\n").expect("write");
        std::fs::create_dir_all(cg.join("cnfbox/c")).expect("mkdir");
        assert!(
            memory_cgroup_v2(&proc, &cg, 5).is_err(),
            "no memory controller"
        );
        let events = cg.join("cnfbox/c/memory.events");
        std::fs::write(&events, "low 0\noom 1\noom_kill 1\n").expect("write");
        let dir = memory_cgroup_v2(&proc, &cg, 5).expect("found");
        assert_eq!(dir, cg.join("cnfbox/c"));

        // Only kills after the watch started are reported, one per kill.
        let (tx, mut rx) = mpsc::unbounded_channel();
        watch_v2(&dir, tx).expect("watch");
        std::fs::write(&events, "low 0\noom 3\noom_kill 3\n").expect("write");
        for _ in 0..2 {
            rx.blocking_recv().expect("an OOM event");
        }
        // The cgroup goes: the watcher ends and drops its sender.
        std::fs::remove_file(&events).expect("rm");
        assert!(rx.blocking_recv().is_none());
    }
}
