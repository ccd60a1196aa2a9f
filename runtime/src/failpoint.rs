//! Named crash points for the fault tests.
//!
//! `CNFBOX_FAILPOINT=<step>` makes `cnfbox` SIGKILL itself when it reaches
//! `<step>`, exactly as a power cut, an OOM kill or `kill -9` from an
//! operator would stop it there; `CNFBOX_FAILPOINT=fail:<step>` makes the
//! step fail with an error instead, as a full disk or a refused syscall
//! would. The fault tests use them to prove that a failed `create` undoes
//! itself and that `delete --force` recovers from one killed at each step
//! (both through the create journal, see `journal`).
//!
//! Why an environment variable rather than the `fail` crate behind a cargo
//! feature: the integration tests drive the very binary that ships, so a
//! feature would mean a second build of `cnfbox` (and feature unification
//! across the workspace would leak it into the normal one); and the only
//! thing a failpoint can do here is kill its own process, which a runtime
//! must survive anyway, so having it in production builds grants nobody
//! anything they could not do with `kill -9`.

/// The variable naming the step to die at.
pub const ENV: &str = "CNFBOX_FAILPOINT";

/// Steps of `create`, in order.
pub const STEPS: &[&str] = &[
    "create:before-range",
    "create:after-range",
    "create:after-mounts",
    "create:after-hugepages",
    "create:after-devices",
    "create:after-stage",
    "create:after-init",
    "create:after-state",
    // `run` between its create and its start.
    "run:before-start",
];

/// The error a `fail:<step>` failpoint makes its step return.
#[derive(Debug, thiserror::Error)]
#[error("failpoint {step} ({ENV}=fail:{step})")]
pub struct Injected {
    pub step: &'static str,
}

/// Dies by SIGKILL if `CNFBOX_FAILPOINT` names `step`; fails with
/// [`Injected`] if it names `fail:<step>`.
pub fn hit(step: &'static str) -> Result<(), Injected> {
    debug_assert!(STEPS.contains(&step), "unknown failpoint {step}");
    let Some(v) = std::env::var_os(ENV) else {
        return Ok(());
    };
    if v == step {
        tracing::warn!(step, "failpoint reached: SIGKILL self");
        // raise(3) of SIGKILL does not return; if it somehow failed the
        // process simply carries on, as without the variable.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    if v.to_str().and_then(|v| v.strip_prefix("fail:")) == Some(step) {
        tracing::warn!(step, "failpoint reached: fail the step");
        return Err(Injected { step });
    }
    Ok(())
}
