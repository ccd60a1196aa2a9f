//! A minimal busybox root filesystem on disk.
//!
//! Layout: `/bin/busybox` plus one symlink per applet in `/bin`, the
//! mount-point directories a runtime expects (`/proc`, `/sys`, `/dev`, ...),
//! `/etc/{passwd,group,hosts,resolv.conf}`, the checker and pause scripts,
//! and optionally N filler files for rootfs-size benchmarks.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{debug, info};

use crate::busybox::{Busybox, BusyboxError};

/// Path of the checker script inside the rootfs.
pub const CHECKER_PATH: &str = "/bin/cnfbox-check";
/// Path of the pause script inside the rootfs.
pub const PAUSE_PATH: &str = "/bin/cnfbox-pause";
/// Directory holding the filler files inside the rootfs.
pub const FILLER_DIR: &str = "/usr/share/filler";
/// Filler files per subdirectory of [`FILLER_DIR`].
pub const FILLER_PER_DIR: usize = 1000;

/// Text of `/bin/cnfbox-check`; see [`crate::CheckReport`] for its output.
pub const CHECKER_SCRIPT: &str = include_str!("scripts/cnfbox-check.sh");
/// Text of `/bin/cnfbox-pause`.
pub const PAUSE_SCRIPT: &str = include_str!("scripts/cnfbox-pause.sh");

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
// gid 5 is the devpts `gid=5` of the default spec's /dev/pts mount.
const GROUP: &str = "root:x:0:\ntty:x:5:\nnobody:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Directories created in every rootfs, with their modes.
const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("var", 0o755),
];

/// Errors while writing a rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Busybox(#[from] BusyboxError),
    #[error("rootfs {path} already exists and is not empty")]
    NotEmpty { path: PathBuf },
    #[error("creating directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting mode {mode:o} on {path}")]
    Chmod {
        path: PathBuf,
        mode: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("copying busybox {from} to {to}")]
    CopyBusybox {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating symlink {path} -> {target}")]
    Symlink {
        path: PathBuf,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a finished rootfs holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    /// Root directory on the host.
    pub path: PathBuf,
    /// Number of applet symlinks in `/bin`.
    pub applets: usize,
    /// Number of filler files under [`FILLER_DIR`].
    pub filler_files: usize,
}

/// Builds a rootfs directory.
#[derive(Debug, Clone)]
pub struct RootfsBuilder {
    path: PathBuf,
    busybox: Option<PathBuf>,
    files: usize,
    allow_hard_link: bool,
}

impl RootfsBuilder {
    /// A rootfs at `path` (created if missing; must be empty if present).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            busybox: None,
            files: 0,
            allow_hard_link: true,
        }
    }

    /// Use this busybox instead of `CNFBOX_BUSYBOX` / `/bin/busybox`.
    pub fn busybox(mut self, path: impl Into<PathBuf>) -> Self {
        self.busybox = Some(path.into());
        self
    }

    /// Add `n` small filler files under [`FILLER_DIR`], [`FILLER_PER_DIR`]
    /// per subdirectory.
    pub fn files(mut self, n: usize) -> Self {
        self.files = n;
        self
    }

    /// Whether `/bin/busybox` may be a hard link to the host binary (the
    /// default, when on the same filesystem). Turn off for tests that
    /// chown or modify the rootfs: a hard link shares the host's inode.
    pub fn hard_link_busybox(mut self, allow: bool) -> Self {
        self.allow_hard_link = allow;
        self
    }

    /// Writes the rootfs.
    pub fn build(self) -> Result<Rootfs, RootfsError> {
        let busybox = match &self.busybox {
            Some(p) => Busybox::at(p)?,
            None => Busybox::locate()?,
        };
        let root = &self.path;
        if root.exists() {
            let mut entries = fs::read_dir(root).map_err(|source| RootfsError::CreateDir {
                path: root.clone(),
                source,
            })?;
            if entries.next().is_some() {
                return Err(RootfsError::NotEmpty { path: root.clone() });
            }
        }
        mkdir(root, 0o755)?;
        for (dir, mode) in DIRS {
            mkdir(&root.join(dir), *mode)?;
        }

        install_busybox(&busybox, &root.join("bin/busybox"), self.allow_hard_link)?;
        let mut applets = 0;
        for applet in busybox.applets()? {
            if applet == "busybox" {
                continue;
            }
            let link = root.join("bin").join(&applet);
            symlink("busybox", &link).map_err(|source| RootfsError::Symlink {
                path: link.clone(),
                target: "busybox".into(),
                source,
            })?;
            applets += 1;
        }

        write_file(&root.join("etc/passwd"), PASSWD, 0o644)?;
        write_file(&root.join("etc/group"), GROUP, 0o644)?;
        write_file(&root.join("etc/hosts"), HOSTS, 0o644)?;
        write_file(&root.join("etc/resolv.conf"), "", 0o644)?;
        write_file(&inside(root, CHECKER_PATH), CHECKER_SCRIPT, 0o755)?;
        write_file(&inside(root, PAUSE_PATH), PAUSE_SCRIPT, 0o755)?;

        let filler_files = write_filler(root, self.files)?;
        info!(rootfs = %root.display(), applets, filler_files, "rootfs written");
        Ok(Rootfs {
            path: self.path,
            applets,
            filler_files,
        })
    }
}

/// Host path of the absolute in-container path `p` under `root`.
fn inside(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

fn mkdir(path: &Path, mode: u32) -> Result<(), RootfsError> {
    fs::create_dir_all(path).map_err(|source| RootfsError::CreateDir {
        path: path.to_owned(),
        source,
    })?;
    // create_dir_all applies the umask and cannot set the sticky bit.
    chmod(path, mode)
}

fn chmod(path: &Path, mode: u32) -> Result<(), RootfsError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
        RootfsError::Chmod {
            path: path.to_owned(),
            mode,
            source,
        }
    })
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), RootfsError> {
    fs::write(path, text).map_err(|source| RootfsError::WriteFile {
        path: path.to_owned(),
        source,
    })?;
    chmod(path, mode)
}

/// Hard-links busybox when allowed and possible (same filesystem), else
/// copies it.
fn install_busybox(busybox: &Busybox, to: &Path, allow_link: bool) -> Result<(), RootfsError> {
    if allow_link {
        match fs::hard_link(busybox.path(), to) {
            Ok(()) => {
                debug!(from = %busybox.path().display(), to = %to.display(), "hard-linked busybox");
                return Ok(());
            }
            Err(err) => {
                debug!(%err, from = %busybox.path().display(), "hard link failed, copying busybox");
            }
        }
    }
    fs::copy(busybox.path(), to).map_err(|source| RootfsError::CopyBusybox {
        from: busybox.path().to_owned(),
        to: to.to_owned(),
        source,
    })?;
    chmod(to, 0o755)
}

/// Writes `n` filler files; returns how many were written.
fn write_filler(root: &Path, n: usize) -> Result<usize, RootfsError> {
    if n == 0 {
        return Ok(0);
    }
    let base = inside(root, FILLER_DIR);
    for i in 0..n {
        let dir = base.join(format!("d{:05}", i / FILLER_PER_DIR));
        if i % FILLER_PER_DIR == 0 {
            mkdir(&dir, 0o755)?;
        }
        let path = dir.join(format!("f{:05}", i % FILLER_PER_DIR));
        fs::write(&path, format!("cnfbox filler {i}\n"))
            .map_err(|source| RootfsError::WriteFile { path, source })?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn rootfs_has_shell_etc_and_scripts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("rootfs");
        let rootfs = RootfsBuilder::new(&root).build().expect("build rootfs");
        assert!(rootfs.applets > 100, "{rootfs:?}");
        assert_eq!(
            fs::read_link(root.join("bin/sh")).expect("readlink bin/sh"),
            Path::new("busybox")
        );
        assert!(root
            .join("bin/busybox")
            .metadata()
            .expect("busybox")
            .is_file());
        for d in ["proc", "sys", "dev", "tmp", "etc", "root", "var", "run"] {
            assert!(root.join(d).is_dir(), "{d}");
        }
        let tmp_mode = root.join("tmp").metadata().expect("tmp").mode() & 0o7777;
        assert_eq!(tmp_mode, 0o1777);
        let passwd = fs::read_to_string(root.join("etc/passwd")).expect("passwd");
        assert!(passwd.contains("root:x:0:0:"), "{passwd}");
        assert!(passwd.contains(":65534:65534:"), "{passwd}");
        let group = fs::read_to_string(root.join("etc/group")).expect("group");
        assert!(group.contains("nobody:x:65534:"), "{group}");
        assert!(root.join("etc/hosts").is_file());
        assert_eq!(
            fs::metadata(root.join("etc/resolv.conf"))
                .expect("resolv")
                .len(),
            0
        );
        let checker = inside(&root, CHECKER_PATH);
        assert_eq!(checker.metadata().expect("checker").mode() & 0o777, 0o755);
        assert!(!root.join(FILLER_DIR.trim_start_matches('/')).exists());
    }

    #[test]
    fn files_creates_exactly_n_spread_over_subdirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("rootfs");
        let rootfs = RootfsBuilder::new(&root)
            .files(2500)
            .build()
            .expect("build rootfs");
        assert_eq!(rootfs.filler_files, 2500);
        let base = inside(&root, FILLER_DIR);
        let mut dirs = 0;
        let mut files = 0;
        for d in fs::read_dir(&base).expect("filler dir") {
            let d = d.expect("entry").path();
            dirs += 1;
            let here = fs::read_dir(&d).expect("subdir").count();
            assert!(here <= FILLER_PER_DIR, "{} has {here}", d.display());
            files += here;
        }
        assert_eq!(dirs, 3);
        assert_eq!(files, 2500);
    }

    #[test]
    fn non_empty_target_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("x"), "").expect("write");
        let err = RootfsBuilder::new(tmp.path())
            .build()
            .expect_err("not empty");
        assert!(matches!(err, RootfsError::NotEmpty { .. }), "{err}");
    }

    #[test]
    fn copy_mode_does_not_share_the_host_inode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("rootfs");
        RootfsBuilder::new(&root)
            .hard_link_busybox(false)
            .build()
            .expect("build rootfs");
        let host = Busybox::locate().expect("busybox");
        let host_ino = host.path().metadata().expect("host busybox").ino();
        let ino = root.join("bin/busybox").metadata().expect("busybox").ino();
        assert_ne!(host_ino, ino);
    }
}
