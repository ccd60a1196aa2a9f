//! What is left of a container when its init exits.
//!
//! A container with a PID namespace of its own loses every process when its
//! init (the namespace's PID 1) dies: the kernel kills them (pid_namespaces(7)).
//! A container that joined another's PID namespace (a pod with
//! `shareProcessNamespace`) or the host's has no such guarantee: a daemon
//! its init started outlives it, is re-parented to the namespace's init,
//! and keeps the container's stdout open. containerd 2.x waits for that
//! pipe to close before it reports the exit, so the pod never stops. As
//! containerd's runc shim does for a shared PID namespace, the shim then
//! SIGKILLs whatever is left in the container's cgroup before it closes
//! the IO and publishes the exit.

use std::path::Path;

use serde::Deserialize;

use crate::runtime::Runtime;

/// SIGKILL, as `cnfbox kill` reads it.
const SIGKILL: u32 = 9;

#[derive(Deserialize, Default)]
struct Spec {
    #[serde(default)]
    linux: Option<Linux>,
}

#[derive(Deserialize, Default)]
struct Linux {
    #[serde(default)]
    namespaces: Option<Vec<Namespace>>,
}

#[derive(Deserialize)]
struct Namespace {
    #[serde(rename = "type")]
    typ: String,
    #[serde(default)]
    path: Option<String>,
}

/// True unless the bundle's spec gives the container a new PID namespace
/// (a `pid` namespace without a path). A spec that cannot be read counts
/// as shared: killing the cgroup's leftovers is harmless when there are
/// none, and a left-over process hangs the pod's stop.
pub fn kill_all_on_exit(bundle: &Path) -> bool {
    let config = bundle.join("config.json");
    let spec = std::fs::read(&config)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Spec>(&b).map_err(|e| e.to_string()));
    let spec = match spec {
        Ok(s) => s,
        Err(err) => {
            log::warn!(
                "reading {}: {err}; its leftovers get killed when its init exits",
                config.display()
            );
            return true;
        }
    };
    let own_pid_ns = spec
        .linux
        .and_then(|l| l.namespaces)
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ == "pid" && n.path.as_deref().is_none_or(str::is_empty));
    !own_pid_ns
}

/// SIGKILLs every process left in container `id`'s cgroup (its init has
/// exited). A failure is logged: the exit is reported regardless.
pub async fn kill_leftovers(runtime: &impl Runtime, id: &str) {
    match runtime.kill(id, SIGKILL, true).await {
        Ok(()) => log::info!("container {id}: init exited, killed what was left in its cgroup"),
        Err(err) if err.is_not_found() => {}
        Err(err) => log::warn!("container {id}: killing what its init left: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.json"), config).expect("write config");
        dir
    }

    #[test]
    fn own_pid_namespace_needs_no_kill() {
        let b = bundle_with(
            r#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid"},{"type":"network","path":"/x"}]}}"#,
        );
        assert!(!kill_all_on_exit(b.path()));
        let b = bundle_with(r#"{"linux":{"namespaces":[{"type":"pid","path":""}]}}"#);
        assert!(!kill_all_on_exit(b.path()));
    }

    #[test]
    fn joined_host_or_unknown_pid_namespace_kills_all() {
        let joined = bundle_with(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid","path":"/proc/42/ns/pid"}]}}"#,
        );
        assert!(kill_all_on_exit(joined.path()));
        let host = bundle_with(r#"{"linux":{"namespaces":[{"type":"mount"}]}}"#);
        assert!(kill_all_on_exit(host.path()));
        let no_linux = bundle_with(r#"{"process":{}}"#);
        assert!(kill_all_on_exit(no_linux.path()));
        let garbage = bundle_with("not json");
        assert!(kill_all_on_exit(garbage.path()));
        let missing = tempfile::tempdir().expect("tempdir");
        assert!(kill_all_on_exit(missing.path()));
    }
}
