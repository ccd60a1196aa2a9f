//! Crash-safe file replacement: write a temporary file, fsync it, rename it
//! over the target, fsync the directory.
//!
//! rename(2) is atomic, so a reader sees either the old or the new file. The
//! first fsync makes the new data durable before the rename can be; the
//! directory fsync makes the rename itself durable (ext4 with
//! `data=ordered` usually gets this right without it, but POSIX does not
//! promise it and other filesystems do not).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One error per step of [`write_atomic`], each naming the file it acted on.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// The target path has no parent directory or file name.
    #[error("{path} has no parent directory or file name")]
    BadPath { path: PathBuf },
    /// `open(O_CREAT|O_TRUNC)` of the temporary file.
    #[error("creating temporary file {path}")]
    CreateTemp {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `write(2)` to the temporary file.
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `fsync(2)` of the temporary file.
    #[error("fsync of {path}")]
    Fsync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `rename(2)` of the temporary file over the target.
    #[error("renaming {from} to {to}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `open(O_DIRECTORY)` of the parent directory.
    #[error("opening directory {path}")]
    OpenDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `fsync(2)` of the parent directory.
    #[error("fsync of directory {path}")]
    FsyncDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The temporary name used for `path`: same directory (rename(2) cannot
/// cross filesystems), a name no reader looks at.
pub(crate) fn temp_path(path: &Path) -> Result<PathBuf, AtomicWriteError> {
    let name = path.file_name().ok_or_else(|| AtomicWriteError::BadPath {
        path: path.to_owned(),
    })?;
    let mut tmp = name.to_owned();
    tmp.push(".tmp");
    Ok(path.with_file_name(tmp))
}

/// Replaces `path` with `bytes` durably and atomically, creating it with
/// `mode` (permissions of an existing file are not carried over: callers
/// pass the mode they want).
///
/// Callers must serialise writers of one path (the temporary name is fixed,
/// so that a crash leaves one stale file to overwrite, not a heap of them).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AtomicWriteError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = temp_path(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|source| AtomicWriteError::CreateTemp {
            path: tmp.clone(),
            source,
        })?;
    // A stale temporary file from a crash keeps its old mode: set ours.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|source| AtomicWriteError::CreateTemp {
            path: tmp.clone(),
            source,
        })?;
    file.write_all(bytes)
        .map_err(|source| AtomicWriteError::Write {
            path: tmp.clone(),
            source,
        })?;
    // fdatasync is enough: the size is data for this purpose, and the
    // timestamps do not matter.
    file.sync_data().map_err(|source| AtomicWriteError::Fsync {
        path: tmp.clone(),
        source,
    })?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|source| AtomicWriteError::Rename {
        from: tmp.clone(),
        to: path.to_owned(),
        source,
    })?;
    fsync_dir(dir)
}

/// fsync(2) of a directory, so that entries created or renamed in it survive
/// a crash.
pub fn fsync_dir(dir: &Path) -> Result<(), AtomicWriteError> {
    let d = File::open(dir).map_err(|source| AtomicWriteError::OpenDir {
        path: dir.to_owned(),
        source,
    })?;
    d.sync_all().map_err(|source| AtomicWriteError::FsyncDir {
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_and_sets_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(temp_path(&p).expect("tmp"), b"stale garbage").expect("stale");
        write_atomic(&p, b"one", 0o600).expect("write");
        write_atomic(&p, b"two", 0o644).expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(!temp_path(&p).expect("tmp").exists());
    }
}
