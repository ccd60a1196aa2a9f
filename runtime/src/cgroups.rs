//! Where a container's cgroup lives.
//!
//! `linux.cgroupsPath` is either a plain path or, for the systemd driver,
//! `slice:prefix:name` (runtime-spec config-linux.md, "Cgroups path"). When
//! the cgroupfs driver is in use, the systemd form is expanded to the path
//! systemd would have created, so both forms land in the same place, and an
//! absent path gets `/cnfbox/<id>` rather than libcontainer's literal
//! `:youki:<id>` directory.

use std::path::{Path, PathBuf};

use libcgroups::common::CgroupSetup;

/// Errors resolving a cgroup path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupPathError {
    #[error("--systemd-cgroup: systemd is not running on this host ({marker} is missing); drop the flag to use the cgroupfs driver")]
    NoSystemd { marker: PathBuf },
    #[error(
        "linux.cgroupsPath {path:?}: with --systemd-cgroup it must have the form slice:prefix:name"
    )]
    NotSystemdForm { path: String },
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    Invalid { path: String, reason: &'static str },
    #[error("detect the host's cgroup layout")]
    Detect(#[source] libcgroups::common::GetCgroupSetupError),
}

/// The cgroup driver a container is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

/// Chooses the driver: systemd only when asked for and systemd runs.
pub fn driver(systemd_flag: bool, host_root: &Path) -> Result<Driver, CgroupPathError> {
    if !systemd_flag {
        return Ok(Driver::Cgroupfs);
    }
    // sd_booted(3): systemd is running iff /run/systemd/system exists.
    let marker = host_root.join("run/systemd/system");
    if marker.is_dir() {
        Ok(Driver::Systemd)
    } else {
        Err(CgroupPathError::NoSystemd { marker })
    }
}

/// Host cgroup layout (legacy, hybrid or unified).
pub fn setup() -> Result<CgroupSetup, CgroupPathError> {
    libcgroups::common::get_cgroup_setup().map_err(CgroupPathError::Detect)
}

/// Resolves the path given to libcontainer for container `id`.
///
/// libcgroups only drives systemd on a unified host; everywhere else the
/// systemd form is expanded so the v1/v2 cgroupfs managers never see it.
pub fn resolve(
    spec_path: Option<&Path>,
    id: &str,
    driver: Driver,
    setup: CgroupSetup,
) -> Result<PathBuf, CgroupPathError> {
    let systemd_native = driver == Driver::Systemd && matches!(setup, CgroupSetup::Unified);
    let Some(raw) = spec_path else {
        return Ok(if systemd_native {
            PathBuf::from(format!("system.slice:cnfbox:{id}"))
        } else {
            PathBuf::from("/cnfbox").join(id)
        });
    };
    let text = raw.to_string_lossy().into_owned();
    if text.is_empty() {
        return Err(CgroupPathError::Invalid {
            path: text,
            reason: "empty path",
        });
    }
    if raw
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(CgroupPathError::Invalid {
            path: text,
            reason: "`..` is not allowed",
        });
    }
    match systemd_parts(&text) {
        Some(_) if systemd_native => Ok(raw.to_path_buf()),
        Some((slice, prefix, name)) => expand_systemd(slice, prefix, name, &text),
        None if driver == Driver::Systemd => Err(CgroupPathError::NotSystemdForm { path: text }),
        None if raw.is_absolute() => Ok(raw.to_path_buf()),
        // runtime-spec: a relative path is relative to the runtime's cgroup
        // hierarchy root as cnfbox sees it; anchor it there.
        None => Ok(Path::new("/").join(raw)),
    }
}

/// Where cgroup path `path` (as `resolve` returned it) lives below a
/// cgroup2 mount: a systemd `slice:prefix:name` is expanded as systemd
/// expands it, a plain path is itself.
pub fn fs_path(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    match systemd_parts(&text) {
        Some((slice, prefix, name)) => {
            expand_systemd(slice, prefix, name, &text).unwrap_or_else(|_| path.to_path_buf())
        }
        None => path.to_path_buf(),
    }
}

/// Splits `slice:prefix:name`; a plain path (which may not contain `:`) is `None`.
fn systemd_parts(text: &str) -> Option<(&str, &str, &str)> {
    let mut it = text.splitn(3, ':');
    let (slice, prefix, name) = (it.next()?, it.next()?, it.next()?);
    if slice.contains('/') || prefix.contains('/') || name.contains('/') {
        return None;
    }
    Some((slice, prefix, name))
}

/// The cgroupfs path systemd would give `slice:prefix:name`
/// (systemd.slice(5): `a-b.slice` nests under `a.slice`).
fn expand_systemd(
    slice: &str,
    prefix: &str,
    name: &str,
    text: &str,
) -> Result<PathBuf, CgroupPathError> {
    if name.is_empty() {
        return Err(CgroupPathError::Invalid {
            path: text.to_string(),
            reason: "the name part of slice:prefix:name is empty",
        });
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(CgroupPathError::Invalid {
            path: text.to_string(),
            reason: "the slice part must end in .slice",
        });
    };
    let mut path = PathBuf::from("/");
    if stem != "-" {
        let mut acc = String::new();
        for part in stem.split('-') {
            if part.is_empty() {
                return Err(CgroupPathError::Invalid {
                    path: text.to_string(),
                    reason: "the slice name has an empty component",
                });
            }
            if !acc.is_empty() {
                acc.push('-');
            }
            acc.push_str(part);
            path.push(format!("{acc}.slice"));
        }
    }
    if name.ends_with(".slice") {
        path.push(name);
    } else if prefix.is_empty() {
        path.push(format!("{name}.scope"));
    } else {
        path.push(format!("{prefix}-{name}.scope"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(p: Option<&str>) -> Result<PathBuf, CgroupPathError> {
        resolve(
            p.map(Path::new),
            "c1",
            Driver::Cgroupfs,
            CgroupSetup::Hybrid,
        )
    }

    #[test]
    fn default_is_not_the_youki_literal() {
        assert_eq!(fs(None).unwrap(), PathBuf::from("/cnfbox/c1"));
        let v2 = resolve(None, "c1", Driver::Systemd, CgroupSetup::Unified).unwrap();
        assert_eq!(v2, PathBuf::from("system.slice:cnfbox:c1"));
    }

    #[test]
    fn plain_paths() {
        assert_eq!(fs(Some("/a/b")).unwrap(), PathBuf::from("/a/b"));
        assert_eq!(fs(Some("a/b")).unwrap(), PathBuf::from("/a/b"));
        assert!(fs(Some("/a/../b")).is_err());
        assert!(fs(Some("")).is_err());
    }

    #[test]
    fn systemd_form_expands_for_cgroupfs() {
        assert_eq!(
            fs(Some("system.slice:cri-containerd:abc")).unwrap(),
            PathBuf::from("/system.slice/cri-containerd-abc.scope")
        );
        assert_eq!(
            fs(Some("kubepods-besteffort-pod1.slice:cri:x")).unwrap(),
            PathBuf::from(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-x.scope"
            )
        );
        assert_eq!(fs(Some("-.slice::n")).unwrap(), PathBuf::from("/n.scope"));
        assert!(fs(Some("bad:cri:x")).is_err());
        assert!(fs(Some("a.slice:p:")).is_err());
    }

    #[test]
    fn fs_path_expands_only_the_systemd_form() {
        assert_eq!(
            fs_path(Path::new("system.slice:cnfbox:c1")),
            PathBuf::from("/system.slice/cnfbox-c1.scope")
        );
        assert_eq!(
            fs_path(Path::new("/cnfbox/c1")),
            PathBuf::from("/cnfbox/c1")
        );
    }

    #[test]
    fn systemd_driver_wants_systemd_form() {
        let e = resolve(
            Some(Path::new("/x")),
            "c",
            Driver::Systemd,
            CgroupSetup::Unified,
        );
        assert!(matches!(e, Err(CgroupPathError::NotSystemdForm { .. })));
    }

    #[test]
    fn systemd_flag_without_systemd_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = driver(true, dir.path()).unwrap_err();
        assert!(err.to_string().contains("systemd is not running"), "{err}");
        std::fs::create_dir_all(dir.path().join("run/systemd/system")).unwrap();
        assert_eq!(driver(true, dir.path()).unwrap(), Driver::Systemd);
        assert_eq!(driver(false, dir.path()).unwrap(), Driver::Cgroupfs);
    }
}
