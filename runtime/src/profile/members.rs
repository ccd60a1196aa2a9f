//! A pod member joins its sandbox: its user namespace by path, its network
//! namespace through a pin, once the sandbox's init runs its program.

use std::fs;
use std::path::{Path, PathBuf};

use idmap::PodMapping;
use libcontainer::container::ContainerStatus;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

use super::{container_dir, ProfileError};
use crate::views;

/// A member joins its sandbox's user and network namespaces by path. The
/// joined namespace's mappings apply; libcontainer ignores mappings given
/// with a joined user namespace, so they are dropped from the spec.
///
/// libcontainer joins the user namespace first; from then on the process
/// may no longer open `/proc/<sandbox>/ns/net` (ptrace access check as an
/// unmapped uid), so the network namespace is pinned by a bind mount on a
/// world-readable file, as `ip netns` does, and joined through that.
pub(super) fn join_sandbox(
    root: &Path,
    id: &str,
    spec: &mut Spec,
    pod: &str,
) -> Result<(PodMapping, PathBuf), ProfileError> {
    let (pid, mapping, started) =
        find_sandbox(root, pod).ok_or_else(|| ProfileError::NoSandbox {
            pod: pod.to_string(),
        })?;
    if started {
        wait_for_exec(&format!("pod {pod}: the sandbox"), pid)?;
    }
    let dir = container_dir(root, id, &mapping)?;
    let pin = pin_netns(&dir, pid).inspect_err(|_| {
        let _ = fs::remove_dir(&dir);
    })?;
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let user = crate::host::ns::of_pid(pid, "user");
    for (typ, path) in [
        (LinuxNamespaceType::User, user),
        (LinuxNamespaceType::Network, pin.clone()),
    ] {
        namespaces.retain(|n| n.typ() != typ);
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ);
        ns.set_path(Some(path));
        namespaces.push(ns);
    }
    linux.set_namespaces(Some(namespaces));
    Ok((mapping, pin))
}

/// Waits until the started init `pid` of a sandbox (or of a container
/// `cnfbox exec` enters) runs its own program.
///
/// A member (or an exec'd process) joins the sandbox's pid, ipc and uts namespaces through
/// `/proc/PID/ns/*` after entering the pod's user namespace, and the kernel
/// lets it open them only once the init has exec'd (ptrace access mode
/// READ, `proc_ns_get_link`): until then libcontainer's init is
/// non-dumpable, with a memory map of the host's user namespace. CRI may
/// create a member right after the sandbox's start returned, which on a
/// loaded node came before the init's exec (EACCES in libcontainer's
/// intermediate process). A sandbox that was only created (its init waits
/// for `start`) can be joined. Until it execs, the init's `/proc/PID/exe`
/// is this binary.
pub fn wait_for_exec(what: &str, pid: i32) -> Result<(), ProfileError> {
    use std::os::unix::fs::MetadataExt;
    const TRIES: u32 = 2000;
    let id = |p: &str| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let Some(me) = id("/proc/self/exe") else {
        return Ok(());
    };
    let exe = format!("/proc/{pid}/exe");
    for _ in 0..TRIES {
        match id(&exe) {
            Some(its) if its == me => std::thread::sleep(std::time::Duration::from_millis(5)),
            // Its own program, or gone (libcontainer's setns names it).
            _ => return Ok(()),
        }
    }
    Err(ProfileError::NotStarted {
        what: what.to_string(),
        pid,
    })
}

/// Bind-mounts `/proc/PID/ns/net` on `DIR/net` (the member's container
/// directory, which only host root and the pod's root may walk).
fn pin_netns(dir: &Path, pid: i32) -> Result<PathBuf, ProfileError> {
    let to = dir.join(views::MEMBER_PIN);
    let from = crate::host::ns::of_pid(pid, "net");
    crate::host::pin(&from, &to).map_err(ProfileError::PinNetns)?;
    Ok(to)
}

/// The init pid and mapping of pod `pod`'s live sandbox container.
fn find_sandbox(root: &Path, pod: &str) -> Option<(i32, PodMapping, bool)> {
    for found in crate::journal::records(root) {
        let meta = found.record;
        if !meta.sandbox || meta.pod.as_deref() != Some(pod) {
            continue;
        }
        let Ok(c) = crate::state_lock::load_with(&root.join(&found.id), meta.init_start) else {
            continue;
        };
        if matches!(
            c.status(),
            ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused
        ) {
            let started = c.status() != ContainerStatus::Created;
            return Some((c.pid()?.as_raw(), meta.mapping?, started));
        }
    }
    None
}
