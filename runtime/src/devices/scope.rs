//! The device rules on a systemd scope (`--systemd-cgroup`, cgroup v2).
//!
//! libcgroups 0.7's systemd manager turns the cpu, cpuset, io, memory and
//! pids settings into unit properties and drops `linux.resources.devices`:
//! it sets no `DevicePolicy`/`DeviceAllow` on the scope and attaches no
//! program (youki issue #3589), so every node the pod could reach would
//! open. cnfbox attaches the program the cgroupfs v2 manager attaches
//! (libcgroups' public `v2::devices::Devices::apply_devices`, the same
//! rules followed by the same defaults) to the scope systemd made for the
//! init, found from `/proc/<init>/cgroup`:
//!
//! - at create, once libcontainer has returned: the init waits for
//!   `start`, so nothing of the pod's has run; before the withheld-device
//!   program (`withheld`), since `apply_devices` replaces every program on
//!   the cgroup;
//! - again after every `update`, with the container's own rules (`rules`).
//!
//! Why the program and not systemd's properties: `DeviceAllow=` is an
//! allow list (a deny after an allow has no form) naming nodes by path or
//! `/proc/devices` name, and a program systemd derived from it would sit
//! next to this one. A unit with the default `DevicePolicy=auto` and no
//! `DeviceAllow=` gets no program of systemd's, and systemd only ever
//! detaches the programs it attached itself. Ours goes on with
//! `BPF_F_ALLOW_MULTI`: a program systemd has on the slice above still
//! counts (an open needs every program on the path to allow it).
//!
//! `cnfbox exec` reaches the scope by its cgroupfs path: create writes the
//! init's cgroup v2 path ([`cgroup_of_pid`]) as `linux.cgroupsPath` of the
//! spec cnfbox keeps, from which libcontainer's exec builds its cgroup
//! config. An absolute path makes libcgroups pick its cgroupfs v2 manager,
//! which joins the exec'd process by writing the scope's `cgroup.procs`
//! (as runc's exec does), and the exec keeps its kernel uid 0 in the pod's
//! user namespace, so host root's files stay writable to it. The systemd
//! manager, built in that user namespace where host root's uid reads as
//! unmapped, would take the caller for a rootless one and look for a
//! session bus. `delete` and `kill` read libcontainer's own record of the
//! systemd form, so the unit is still stopped through systemd.

use std::fs;
use std::path::{Path, PathBuf};

use libcgroups::v2::devices::controller::DevicesControllerError;
use oci_spec::runtime::LinuxDeviceCgroup;

/// Errors attaching the device program to a scope.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("read the cgroups of the container's init from {path}")]
    ReadCgroups {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} names no cgroup v2 path")]
    NoCgroup { path: PathBuf },
    #[error("attach the device program to the container's scope {path}")]
    Attach {
        path: PathBuf,
        #[source]
        source: DevicesControllerError,
    },
}

/// The cgroup v2 path (with its leading `/`) of process `pid`, read from
/// `<proc>/<pid>/cgroup`.
pub fn cgroup_of_pid(proc: &Path, pid: i32) -> Result<PathBuf, ScopeError> {
    let path = proc.join(pid.to_string()).join("cgroup");
    let text = fs::read_to_string(&path).map_err(|source| ScopeError::ReadCgroups {
        path: path.clone(),
        source,
    })?;
    let rel = crate::host::cgroup_of(&text, None).ok_or(ScopeError::NoCgroup { path })?;
    Ok(Path::new("/").join(rel))
}

/// Attaches the program built from `rules` (and libcgroups' defaults) to
/// the cgroup at `dir` (the init's scope, see [`cgroup_of_pid`]),
/// replacing what is attached to that cgroup itself.
pub fn attach(dir: &Path, rules: &Option<Vec<LinuxDeviceCgroup>>) -> Result<(), ScopeError> {
    libcgroups::v2::devices::Devices::apply_devices(dir, rules).map_err(|source| {
        ScopeError::Attach {
            path: dir.to_path_buf(),
            source,
        }
    })?;
    tracing::debug!(scope = %dir.display(), rules = rules.as_ref().map_or(0, Vec::len), "device program on the systemd scope");
    Ok(())
}

/// The directory of cgroup `rel` (as [`cgroup_of_pid`] gives it) below the
/// cgroup v2 mount.
pub fn dir_of(rel: &Path) -> PathBuf {
    Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT).join(rel.strip_prefix("/").unwrap_or(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_scope_is_read_from_its_v2_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("42")).unwrap();
        fs::write(
            dir.path().join("42/cgroup"),
            "0::/system.slice/cnfbox-c1.scope\n",
        )
        .unwrap();
        assert_eq!(
            cgroup_of_pid(dir.path(), 42).unwrap(),
            Path::new("/system.slice/cnfbox-c1.scope")
        );
        fs::write(dir.path().join("42/cgroup"), "3:devices:/x\n").unwrap();
        let err = cgroup_of_pid(dir.path(), 42).unwrap_err().to_string();
        assert!(err.contains("names no cgroup v2 path"), "{err}");
        let err = cgroup_of_pid(dir.path(), 43).unwrap_err().to_string();
        assert!(err.contains("43/cgroup"), "{err}");
    }
}
