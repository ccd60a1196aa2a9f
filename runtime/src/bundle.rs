//! Loading, validating and staging an OCI bundle.
//!
//! libcontainer 0.7 reads the spec only from `BUNDLE/config.json`, so every
//! change cnfbox makes to a spec (default cgroup path, later the pod policy)
//! is written to a staged bundle whose `root.path` is absolute. The staged
//! bundle is kept in the container's state directory because libcontainer's
//! `exec` re-reads `config.json` from the bundle recorded in its state.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use oci_spec::runtime::Spec;

use crate::host::nofollow::OpenedDir;

/// Errors met while reading or staging a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {path}: no such directory")]
    MissingBundle { path: PathBuf },
    #[error("read {path}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed {path}: field `{field}`: {reason}")]
    ParseConfig {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{path}: unsupported ociVersion {version:?} (cnfbox runs 1.x specs)")]
    UnsupportedVersion { path: PathBuf, version: String },
    #[error("{path}: field `{field}` is required")]
    MissingField { path: PathBuf, field: &'static str },
    #[error("{path}: root.path {rootfs} does not exist")]
    MissingRootfs { path: PathBuf, rootfs: PathBuf },
    #[error("{path}: root.path {rootfs} is not a directory")]
    RootfsNotDir { path: PathBuf, rootfs: PathBuf },
    #[error("{path}: root.path {rootfs} is or passes through a symlink; give the real directory")]
    RootfsSymlink { path: PathBuf, rootfs: PathBuf },
    #[error("{path}: root.path {rootfs}: openat2(RESOLVE_NO_SYMLINKS)")]
    OpenRootfs {
        path: PathBuf,
        rootfs: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{path}: root.path resolves to the host's / : container root would own the host's files through the id-mapped rootfs")]
    RootfsIsHostRoot { path: PathBuf },
    #[error("write staged spec {path}")]
    WriteStaged {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encode staged spec {path}")]
    EncodeStaged {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A bundle as the user gave it: its directory, its parsed spec and its
/// rootfs, opened (see `open_rootfs`). Create reaches the rootfs through
/// the descriptor (`OpenedDir::handle`), so a path component swapped for a
/// symlink after the check changes nothing.
#[derive(Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: OpenedDir,
}

impl Bundle {
    /// Reads and validates `DIR/config.json`. Every error names the file and,
    /// for parse errors, the JSON field that was wrong.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let dir = fs::canonicalize(dir).map_err(|_| BundleError::MissingBundle {
            path: dir.to_path_buf(),
        })?;
        if !dir.is_dir() {
            return Err(BundleError::MissingBundle { path: dir });
        }
        let path = dir.join("config.json");
        let raw = fs::read(&path).map_err(|source| BundleError::ReadConfig {
            path: path.clone(),
            source,
        })?;
        let spec = parse_spec(&path, &raw)?;
        if !spec.version().starts_with("1.") {
            return Err(BundleError::UnsupportedVersion {
                path,
                version: spec.version().clone(),
            });
        }
        if spec.process().is_none() {
            return Err(BundleError::MissingField {
                path,
                field: "process",
            });
        }
        if spec.linux().is_none() {
            return Err(BundleError::MissingField {
                path,
                field: "linux",
            });
        }
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| BundleError::MissingField {
                path: path.clone(),
                field: "root",
            })?;
        let rootfs = open_rootfs(&dir, &path, root.path())?;
        Ok(Self { dir, spec, rootfs })
    }
}

/// Opens `root.path` (relative to the bundle `dir`, or absolute) without
/// following a symlink in any component, the last one included however it
/// is spelt (`rootfs/`): a hostile bundle may point it through a symlink
/// at `/`, `/etc` or any host directory, and the id-mapped rootfs view
/// makes container root the owner of every file of host uid 0 below it.
/// The host's `/` itself (`..` enough times) is refused by identity.
fn open_rootfs(dir: &Path, config: &Path, root_path: &Path) -> Result<OpenedDir, BundleError> {
    let bundle = OpenedDir::open(None, dir).map_err(|_| BundleError::MissingBundle {
        path: dir.to_path_buf(),
    })?;
    let rootfs = OpenedDir::open(Some(bundle.as_fd()), root_path).map_err(|errno| {
        let (path, rootfs) = (config.to_path_buf(), root_path.to_path_buf());
        match errno {
            Errno::ELOOP => BundleError::RootfsSymlink { path, rootfs },
            Errno::ENOENT => BundleError::MissingRootfs { path, rootfs },
            Errno::ENOTDIR => BundleError::RootfsNotDir { path, rootfs },
            source => BundleError::OpenRootfs {
                path,
                rootfs,
                source,
            },
        }
    })?;
    let host_root = nix::sys::stat::stat("/").map(|st| (st.st_dev, st.st_ino));
    if host_root.is_ok() && rootfs.id().ok() == host_root.ok() {
        return Err(BundleError::RootfsIsHostRoot {
            path: config.to_path_buf(),
        });
    }
    Ok(rootfs)
}

/// Parses a spec, naming the JSON path of the first field that fails.
pub fn parse_spec(path: &Path, raw: &[u8]) -> Result<Spec, BundleError> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        BundleError::ParseConfig {
            path: path.to_path_buf(),
            field: if field == "." {
                "(document)".into()
            } else {
                field
            },
            reason: inner.to_string(),
        }
    })
}

/// Writes `spec` as `DIR/config.json`, creating `DIR`.
///
/// Private to root (directories 0700, the file 0600): the spec carries the
/// process environment, where Kubernetes puts secrets, and the state root
/// is traversable (0711). cnfbox reads it back as uid 0, also from `exec`
/// after it joined the pod's user namespace (owner permission, no
/// capability needed).
pub fn write_staged(dir: &Path, spec: &Spec) -> Result<(), BundleError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = dir.join("config.json");
    let wrap = |source| BundleError::WriteStaged {
        path: path.clone(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(wrap)?;
    let body = serde_json::to_vec(spec).map_err(|source| BundleError::EncodeStaged {
        path: path.clone(),
        source,
    })?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(wrap)?;
    file.write_all(&body).map_err(wrap)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_the_field() {
        let raw = br#"{"ociVersion":"1.0.2","process":{"args":"notalist","cwd":"/","user":{"uid":0,"gid":0}}}"#;
        let err = parse_spec(Path::new("/b/config.json"), raw).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("process.args"), "{msg}");
        assert!(msg.contains("/b/config.json"), "{msg}");
    }

    #[test]
    fn truncated_document_is_reported() {
        let err = parse_spec(Path::new("/c.json"), br#"{"ociVersion":"1.0"#).unwrap_err();
        assert!(err.to_string().contains("malformed /c.json"), "{err}");
    }

    #[test]
    fn unsupported_version_and_missing_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::default();
        spec.set_version("2.0.0".into());
        write_staged(dir.path(), &spec).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, BundleError::UnsupportedVersion { .. }),
            "{err}"
        );

        let spec = Spec::default();
        write_staged(dir.path(), &spec).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(matches!(err, BundleError::MissingRootfs { .. }), "{err}");
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        let bundle = Bundle::load(dir.path()).unwrap();
        assert_eq!(
            bundle.rootfs.path(),
            dir.path().canonicalize().unwrap().join("rootfs")
        );
    }

    #[test]
    fn staged_spec_is_private_to_root() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join(".staging/x.1");
        write_staged(&stage, &Spec::default()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&stage), 0o700);
        assert_eq!(mode(&dir.path().join(".staging")), 0o700);
        assert_eq!(mode(&stage.join("config.json")), 0o600);
    }

    #[test]
    fn symlinked_rootfs_and_host_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir_all(real.join("rootfs")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("via")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("slash")).unwrap();
        let via_abs = dir.path().join("via/rootfs");
        let via_abs = via_abs.to_str().unwrap();
        for (root, want) in [
            ("via/rootfs", "symlink"),
            ("via", "symlink"),
            ("via/", "symlink"),
            ("via/rootfs/", "symlink"),
            (via_abs, "symlink"),
            ("slash", "symlink"),
            ("slash/", "symlink"),
            ("/", "host's /"),
            ("real/../../../../../../..", "host's /"),
        ] {
            let mut spec = Spec::default();
            spec.root_mut().as_mut().unwrap().set_path(root.into());
            write_staged(dir.path(), &spec).unwrap();
            let err = Bundle::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains(want), "{root}: {err}");
        }
        let mut spec = Spec::default();
        spec.root_mut()
            .as_mut()
            .unwrap()
            .set_path("./real/../real/rootfs/".into());
        write_staged(dir.path(), &spec).unwrap();
        Bundle::load(dir.path()).expect("`..` without symlinks is fine");
    }
}
