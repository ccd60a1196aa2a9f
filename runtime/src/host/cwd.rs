//! The working directory the processes libcontainer forks inherit.
//!
//! A container's init and an exec'd process start with the cwd of the
//! cnfbox that forked them (the shim runs cnfbox from the bundle
//! directory, which only host root may read) until they change to
//! `process.cwd` at the very end. Meanwhile they run as the pod's root, an
//! unprivileged host uid, and pathrs (libcontainer's and libcgroups' path
//! resolver) probes `openat2(2)` with `openat2(AT_FDCWD, ".", O_RDONLY)`
//! when a lookup fails: from an unreadable cwd that probe fails with
//! `EACCES`, pathrs marks `openat2(2)` unsupported for the life of the
//! process, and the whole rootfs setup runs on its emulated resolvers
//! (about twice the syscalls). cnfbox forks them from `/`, which everyone
//! may read, and goes back to its own cwd after. (The cwd is the
//! process's: unit tests leave it alone; the syscall budget's run from an
//! unreadable cwd, `lifecycle::syscall_count_of_a_run_stays_within_budget`,
//! is the test.)

use std::io;
use std::path::PathBuf;

/// Errors entering `/`.
#[derive(Debug, thiserror::Error)]
pub enum CwdError {
    #[error("chdir(/) before forking the container's processes")]
    Chdir(#[source] io::Error),
}

/// The cwd is `/` while this lives; the previous one is restored on drop.
#[must_use = "the cwd goes back when this is dropped"]
pub struct AtRoot {
    back: Option<PathBuf>,
}

impl AtRoot {
    /// Changes to `/`, remembering the cwd (none if it was removed).
    pub fn enter() -> Result<Self, CwdError> {
        let back = std::env::current_dir().ok();
        std::env::set_current_dir("/").map_err(CwdError::Chdir)?;
        Ok(Self { back })
    }
}

impl Drop for AtRoot {
    fn drop(&mut self) {
        let Some(back) = self.back.take() else {
            return;
        };
        if let Err(err) = std::env::set_current_dir(&back) {
            tracing::warn!(cwd = %back.display(), %err, "chdir back after forking the container's processes");
        }
    }
}
