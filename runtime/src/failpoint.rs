//! Named crash points for the fault tests.
//!
//! `CNFBOX_FAILPOINT=<step>` makes `cnfbox` SIGKILL itself when it reaches
//! `<step>`, exactly as a power cut, an OOM kill or `kill -9` from an
//! operator would stop it there. The fault tests use it to prove that
//! `delete --force` and `ranges gc` recover from a `create` killed at each
//! step.
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
];

/// Dies by SIGKILL if `CNFBOX_FAILPOINT` names `step`.
pub fn hit(step: &'static str) {
    debug_assert!(STEPS.contains(&step), "unknown failpoint {step}");
    if std::env::var_os(ENV).is_some_and(|v| v == step) {
        tracing::warn!(step, "failpoint reached: SIGKILL self");
        // raise(3) of SIGKILL does not return; if it somehow failed the
        // process simply carries on, as without the variable.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
