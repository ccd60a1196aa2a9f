//! Setting a resource limit of another process, also where host root lacks
//! `CAP_SYS_RESOURCE`.
//!
//! prlimit(2) on another process needs either `CAP_SYS_RESOURCE` in the
//! target's user namespace or the caller's uid and gid to equal the
//! target's real, effective and saved ids (`check_prlimit_permission` in
//! kernel/sys.c). Some hosts drop `CAP_SYS_RESOURCE` from root's bounding
//! set; a container's init in a user namespace, or one that runs as a
//! non-root user, then has other host ids than cnfbox. [`set_limit`]
//! tries as cnfbox, and on `EPERM` from a short-lived child that has taken
//! the target's host ids (cnfbox holds `CAP_SETUID`/`CAP_SETGID`), which
//! the kernel lets lower a limit (raising one above the hard limit needs
//! the capability, whoever asks).

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};

/// Errors setting another process's limit.
#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error("prlimit(resource {resource}) of pid {pid}")]
    Prlimit {
        pid: i32,
        resource: u32,
        #[source]
        source: Errno,
    },
    #[error("reading the ids of pid {pid} from /proc/{pid}/status")]
    Ids {
        pid: i32,
        #[source]
        source: procfs::ProcError,
    },
    #[error("fork for prlimit(resource {resource}) of pid {pid} as uid {uid} gid {gid}")]
    Fork {
        pid: i32,
        resource: u32,
        uid: u32,
        gid: u32,
        #[source]
        source: Errno,
    },
    #[error("prlimit(resource {resource}) of pid {pid} as uid {uid} gid {gid}: {step}")]
    AsOwner {
        pid: i32,
        resource: u32,
        uid: u32,
        gid: u32,
        step: &'static str,
        #[source]
        source: Errno,
    },
}

/// prlimit(2) with a new limit and no old one.
fn prlimit(pid: Pid, resource: u32, limit: &libc::rlimit) -> Result<(), Errno> {
    // SAFETY: `limit` is a valid rlimit that outlives the call; the old
    // limit is not asked for (null), so prlimit only reads `limit`.
    let ret = unsafe {
        libc::prlimit(
            pid.as_raw(),
            resource as libc::__rlimit_resource_t,
            limit,
            std::ptr::null_mut(),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Sets `resource` of `pid` to `limit` (see the module doc).
pub fn set_limit(pid: Pid, resource: u32, limit: libc::rlimit) -> Result<(), RlimitError> {
    match prlimit(pid, resource, &limit) {
        Ok(()) => return Ok(()),
        Err(Errno::EPERM) => {}
        Err(source) => {
            return Err(RlimitError::Prlimit {
                pid: pid.as_raw(),
                resource,
                source,
            })
        }
    }
    let status = procfs::process::Process::new(pid.as_raw())
        .and_then(|p| p.status())
        .map_err(|source| RlimitError::Ids {
            pid: pid.as_raw(),
            source,
        })?;
    // The real uid/gid: the kernel wants all three of each to match, and a
    // target whose ids differ among themselves gets EPERM below, as it should.
    let (uid, gid) = (status.ruid, status.rgid);
    as_owner(pid, resource, limit, uid, gid)
}

/// The second try: a child with the target's ids sets the limit.
fn as_owner(
    pid: Pid,
    resource: u32,
    limit: libc::rlimit,
    uid: u32,
    gid: u32,
) -> Result<(), RlimitError> {
    let err = |step: &'static str, source: Errno| RlimitError::AsOwner {
        pid: pid.as_raw(),
        resource,
        uid,
        gid,
        step,
        source,
    };
    // SAFETY: cnfbox is single-threaded when it sets up a container, and
    // the child calls only async-signal-safe functions (setgroups,
    // setresgid, setresuid, prlimit, _exit) before it exits.
    match unsafe { fork() } {
        Err(source) => Err(RlimitError::Fork {
            pid: pid.as_raw(),
            resource,
            uid,
            gid,
            source,
        }),
        Ok(ForkResult::Child) => {
            let code = child_steps(pid, resource, &limit, uid, gid)
                .map(|()| 0)
                .unwrap_or_else(|(step, e)| (step as i32) << 8 | (e as i32 & 0xff));
            // SAFETY: _exit ends the forked child without running the
            // parent's atexit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(WaitStatus::Exited(_, code)) => {
                let step = CHILD_STEPS
                    .get((code >> 8) as usize)
                    .copied()
                    .unwrap_or("child");
                Err(err(step, Errno::from_raw(code & 0xff)))
            }
            Ok(_) => Err(err("child killed", Errno::EINTR)),
            Err(source) => Err(err("waitpid", source)),
        },
    }
}

/// The child's steps, by the index its exit code carries.
const CHILD_STEPS: [&str; 3] = ["setgroups/setresgid", "setresuid", "prlimit"];

fn child_steps(
    pid: Pid,
    resource: u32,
    limit: &libc::rlimit,
    uid: u32,
    gid: u32,
) -> Result<(), (usize, Errno)> {
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::setgroups(&[])
        .and_then(|()| nix::unistd::setresgid(g, g, g))
        .map_err(|e| (0, e))?;
    nix::unistd::setresuid(u, u, u).map_err(|e| (1, e))?;
    prlimit(pid, resource, limit).map_err(|e| (2, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::resource::{getrlimit, Resource};
    use std::os::fd::AsRawFd;

    /// A child running as `uid`/`gid`, waiting on a pipe until the test has
    /// looked at it; returns once the child has switched users.
    fn sleeper(uid: u32, gid: u32) -> (Pid, std::os::fd::OwnedFd) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let (ready_r, ready_w) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the test child only calls setresgid/setresuid, write,
        // read and _exit before it exits.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                drop(w);
                drop(ready_r);
                let g = Gid::from_raw(gid);
                let u = Uid::from_raw(uid);
                let ok = nix::unistd::setresgid(g, g, g).is_ok()
                    && nix::unistd::setresuid(u, u, u).is_ok();
                let _ = nix::unistd::write(&ready_w, &[u8::from(ok)]);
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(r.as_raw_fd(), &mut b);
                // SAFETY: ends the forked child at once.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                drop(r);
                drop(ready_w);
                let mut b = [0u8; 1];
                let n = nix::unistd::read(ready_r.as_raw_fd(), &mut b).expect("read ready");
                assert_eq!((n, b[0]), (1, 1), "the child could not switch users");
                (child, w)
            }
        }
    }

    fn memlock_of(pid: Pid) -> (u64, u64) {
        let limits = procfs::process::Process::new(pid.as_raw())
            .and_then(|p| p.limits())
            .expect("limits");
        let l = limits.max_locked_memory;
        let v = |x: procfs::process::LimitValue| match x {
            procfs::process::LimitValue::Value(v) => v,
            procfs::process::LimitValue::Unlimited => u64::MAX,
        };
        (v(l.soft_limit), v(l.hard_limit))
    }

    #[test]
    fn lowers_the_memlock_limit_of_a_process_of_another_user() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP lowers_the_memlock_limit_of_a_process_of_another_user: needs root (setresuid of a child)");
            return;
        }
        let (cur, max) = getrlimit(Resource::RLIMIT_MEMLOCK).expect("getrlimit");
        let lower = libc::rlimit {
            rlim_cur: (cur / 2).min(max / 2),
            rlim_max: max / 2,
        };
        let (pid, release) = sleeper(60123, 60123);
        let set = set_limit(pid, libc::RLIMIT_MEMLOCK, lower);
        let seen = memlock_of(pid);
        drop(release);
        let _ = waitpid(pid, None);
        set.expect("set_limit");
        assert_eq!(seen, (lower.rlim_cur, lower.rlim_max));
    }
}
