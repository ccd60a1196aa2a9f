//! `linux.resources.memory.disableOOMKiller`, which libcontainer 0.7 never
//! writes (its v1 memory controller hard-codes the OOM killer on).
//!
//! On cgroup v1 the memory controller's `memory.oom_control` takes `1`
//! (Documentation/admin-guide/cgroup-v1/memory.rst, "OOM Control"): a task
//! that hits the limit then waits instead of being killed, as runc's v1
//! manager sets it. cgroup v2 has no such switch; runc ignores the field
//! there, and so does cnfbox, saying so in its log.

use std::fs;
use std::path::{Path, PathBuf};

use libcgroups::common::CgroupSetup;
use oci_spec::runtime::Spec;

/// Errors applying `disableOOMKiller`.
#[derive(Debug, thiserror::Error)]
pub enum OomKillerError {
    #[error("find the host's cgroup layout")]
    Setup(#[source] libcgroups::common::GetCgroupSetupError),
    #[error("read the cgroups of the container's init from {path}")]
    ReadCgroups {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} names no memory cgroup")]
    NoMemoryCgroup { path: PathBuf },
    #[error("find the cgroup v1 memory hierarchy")]
    MemoryMount(#[source] libcgroups::v1::util::V1MountPointError),
    #[error("linux.resources.memory.disableOOMKiller: write 1 to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What became of the field.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The spec does not ask for it.
    NotAsked,
    /// `memory.oom_control` of this v1 cgroup says `1`.
    Disabled(PathBuf),
    /// cgroup v1 memory is not in use: nothing can disable the killer.
    Unsupported,
}

/// Whether `spec` asks to disable the OOM killer.
pub fn asked(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.disable_oom_killer())
        .unwrap_or(false)
}

/// Disables the OOM killer for the cgroup of `pid` (the created init) when
/// `spec` asks, reading `/proc/<pid>/cgroup` under `proc`.
pub fn apply(proc: &Path, pid: i32, spec: &Spec) -> Result<Applied, OomKillerError> {
    if !asked(spec) {
        return Ok(Applied::NotAsked);
    }
    let setup = libcgroups::common::get_cgroup_setup().map_err(OomKillerError::Setup)?;
    if matches!(setup, CgroupSetup::Unified) {
        tracing::warn!(
            pid,
            "linux.resources.memory.disableOOMKiller: cgroup v2 cannot disable the OOM killer (ignored, as runc does)"
        );
        return Ok(Applied::Unsupported);
    }
    let cgroups_file = proc.join(pid.to_string()).join("cgroup");
    let text = fs::read_to_string(&cgroups_file).map_err(|source| OomKillerError::ReadCgroups {
        path: cgroups_file.clone(),
        source,
    })?;
    let Some(rel) = crate::host::cgroup_of(&text, Some("memory")) else {
        return Err(OomKillerError::NoMemoryCgroup { path: cgroups_file });
    };
    let mount =
        libcgroups::v1::util::get_subsystem_mount_point(&libcgroups::v1::ControllerType::Memory)
            .map_err(OomKillerError::MemoryMount)?;
    let path = mount.join(rel).join("memory.oom_control");
    fs::write(&path, "1").map_err(|source| OomKillerError::Write {
        path: path.clone(),
        source,
    })?;
    tracing::debug!(pid, path = %path.display(), "OOM killer disabled");
    Ok(Applied::Disabled(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder, SpecBuilder};

    fn spec(disable: Option<bool>) -> Spec {
        let mut memory = LinuxMemoryBuilder::default();
        if let Some(d) = disable {
            memory = memory.disable_oom_killer(d);
        }
        let resources = LinuxResourcesBuilder::default()
            .memory(memory.build().unwrap())
            .build()
            .unwrap();
        SpecBuilder::default()
            .linux(
                LinuxBuilder::default()
                    .resources(resources)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn only_true_asks() {
        assert!(asked(&spec(Some(true))));
        assert!(!asked(&spec(Some(false))));
        assert!(!asked(&spec(None)));
        assert_eq!(
            apply(Path::new("/nonexistent"), 1, &spec(Some(false))).unwrap(),
            Applied::NotAsked,
            "not asked: nothing is read"
        );
    }
}
