//! TaskOOM: cgroup v1 memory OOM notifications (cgroup-v1/memory.rst,
//! "Memory thresholds"/"OOM Control": an eventfd registered through
//! `cgroup.event_control` with the fd of `memory.oom_control`).
//!
//! The kernel also signals the eventfd when the cgroup is removed, so the
//! watcher ends by itself with the container.

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

/// The v1 memory cgroup directory of `pid`.
pub fn memory_cgroup(proc_root: &Path, cgroup_root: &Path, pid: i32) -> Result<PathBuf, OomError> {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, ctrls, cg) = (p.next()?, p.next()?, p.next()?);
            ctrls
                .split(',')
                .any(|c| c == "memory")
                .then(|| cg.trim_start_matches('/').to_owned())
        })
        .map(|cg| cgroup_root.join("memory").join(cg))
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
}
