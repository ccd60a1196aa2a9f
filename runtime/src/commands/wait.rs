//! Foreground waiting for `run` and `exec`: forward signals, reap, report.

use anyhow::Context as _;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals runc forwards to the container's process.
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGALRM,
];

/// Blocks the forwarded signals and SIGCHLD in this process, returning the set
/// to wait on. Call it only after the container process was cloned, so its
/// signal mask is not affected.
pub fn block_forwarded_signals() -> anyhow::Result<SigSet> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .context("sigprocmask(SIG_BLOCK)")?;
    Ok(set)
}

/// Waits for `pid` to exit, forwarding signals to it; returns its exit code
/// (128 + signal number when it was killed, as a shell reports it).
pub fn forward_until_exit(pid: Pid, set: &SigSet) -> anyhow::Result<u8> {
    loop {
        if let Some(code) = reap(pid)? {
            return Ok(code);
        }
        let sig = set.wait().context("sigwait")?;
        if sig != Signal::SIGCHLD {
            // The process may have exited meanwhile; ESRCH is then harmless.
            let _ = kill(pid, sig);
        }
    }
}

/// Reaps every exited child; returns `pid`'s exit code once it is gone.
fn reap(pid: Pid) -> anyhow::Result<Option<u8>> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Ok(Some(code as u8)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                return Ok(Some(128u8.wrapping_add(sig as u8)))
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::errno::Errno::ECHILD) => {
                anyhow::bail!("process {pid} is not a child of cnfbox; cannot wait for it")
            }
            Err(err) => return Err(err).context("waitpid"),
        }
    }
}
