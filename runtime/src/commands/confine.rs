//! The container's seccomp filter for the processes `cnfbox exec` starts.
//!
//! libcontainer 0.7's tenant builder (`exec`) rebuilds the spec's `linux`
//! section from the namespaces, cgroups path, personality and time offsets
//! only, so its init code never sees the container's `linux.seccomp`: an
//! exec'd process ran unconfined (`Seccomp: 0`) where runc applies the
//! container's filter to every process it execs. cnfbox hands libcontainer
//! an [`Executor`] that loads the container's filter itself, as the very
//! last step before `execve`, the place libcontainer's own init loads it
//! for a process with `no_new_privileges`.
//!
//! Without `no_new_privileges` the kernel lets a process load a filter only
//! while it holds `CAP_SYS_ADMIN` in its user namespace (seccomp(2)), and
//! by the time the executor runs libcontainer has dropped the process to
//! its own capability sets. runc loads the filter before it drops them;
//! cnfbox cannot run code there, so it keeps `CAP_SYS_ADMIN` in the
//! process's *effective and permitted* sets only (never in bounding,
//! inheritable or ambient), loads the filter, drops the capability again,
//! and execs. Even if that drop were refused (a filter that denies
//! `capset`), `execve` cannot carry it over: the new permitted set is made
//! of the bounding, inheritable and ambient sets (capabilities(7)), and
//! none of them holds it.

use libcontainer::capabilities::CapabilityExt as _;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{Capability, LinuxSeccomp, LinuxSeccompAction, Process, Spec};

/// Why an exec'd process cannot be confined as its container is.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("linux.seccomp: the container's profile hands syscalls to a seccomp agent (listenerPath or SCMP_ACT_NOTIFY), which cnfbox does not support for exec'd processes")]
    Notify,
}

/// The container's seccomp filter, loaded by the exec'd process right
/// before it runs its program.
#[derive(Clone)]
pub struct Confined {
    seccomp: Option<LinuxSeccomp>,
    /// Held by the process only to load the filter.
    loader_caps: Vec<Capability>,
}

impl Confined {
    /// The confinement of `spec`'s container for `process`, whose
    /// capabilities gain what loading the filter takes (see the module doc).
    pub fn new(spec: &Spec, process: &mut Process) -> Result<Self, ConfineError> {
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let Some(profile) = &seccomp else {
            return Ok(Self {
                seccomp,
                loader_caps: Vec::new(),
            });
        };
        let notify = profile.listener_path().is_some()
            || profile.default_action() == LinuxSeccompAction::ScmpActNotify
            || profile
                .syscalls()
                .iter()
                .flatten()
                .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
        if notify {
            return Err(ConfineError::Notify);
        }
        let loader_caps = if process.no_new_privileges() == Some(true) {
            Vec::new()
        } else {
            hold_for_loading(process, Capability::SysAdmin)
        };
        Ok(Self {
            seccomp,
            loader_caps,
        })
    }
}

/// Adds `cap` to the effective and permitted sets of `process` if it is
/// not there; returns it when it was added (to be dropped again).
fn hold_for_loading(process: &mut Process, cap: Capability) -> Vec<Capability> {
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let has = |set: &Option<oci_spec::runtime::Capabilities>| {
        set.as_ref().is_some_and(|s| s.contains(&cap))
    };
    if has(caps.effective()) && has(caps.permitted()) {
        return Vec::new();
    }
    let add = |set: &Option<oci_spec::runtime::Capabilities>| {
        let mut s = set.clone().unwrap_or_default();
        s.insert(cap);
        Some(s)
    };
    caps.set_effective(add(caps.effective()));
    caps.set_permitted(add(caps.permitted()));
    process.set_capabilities(Some(caps));
    vec![cap]
}

impl Executor for Confined {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(profile) = &self.seccomp {
            // `Confined::new` refused agent profiles: no notify fd comes back.
            libcontainer::seccomp::initialize_seccomp(profile).map_err(|err| {
                ExecutorError::Other(format!("load the container's seccomp filter: {err}"))
            })?;
        }
        for cap in &self.loader_caps {
            let cap = cap.to_cap();
            // Best effort: execve drops it in any case (module doc).
            for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
                if let Err(err) = caps::drop(None, set, cap) {
                    tracing::debug!(?cap, %err, "drop the filter loader's capability before exec");
                }
            }
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
