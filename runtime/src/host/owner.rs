//! Whether a directory whose files root acts on is root's alone: owned by
//! the effective uid and writable by nobody else. Another user who can
//! write there can plant what root later reads and acts on (a journal that
//! `delete --force` undoes, a lock file it flocks).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Errors checking a directory's owner and mode.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("{what} {path}: stat")]
    Stat {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is {reason}: another user could plant files there that root acts on; give a directory owned by uid {euid} and writable by it only")]
    NotPrivate {
        what: &'static str,
        path: PathBuf,
        reason: String,
        euid: u32,
    },
}

/// Why `m` is not a directory only `euid` can write, or `None` if it is.
pub fn unsafe_reason(m: &fs::Metadata, euid: u32) -> Option<String> {
    if m.uid() != euid {
        Some(format!("owned by uid {}, not {euid}", m.uid()))
    } else if m.mode() & 0o022 != 0 {
        Some(format!(
            "mode {:04o}, writable by group or others",
            m.mode() & 0o7777
        ))
    } else {
        None
    }
}

/// Checks that `path` (`what`: "state root", for messages) is owned by this
/// process's effective uid and writable by no one else.
pub fn check_private(what: &'static str, path: &Path) -> Result<(), OwnerError> {
    let m = fs::metadata(path).map_err(|source| OwnerError::Stat {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let euid = nix::unistd::geteuid().as_raw();
    match unsafe_reason(&m, euid) {
        None => Ok(()),
        Some(reason) => Err(OwnerError::NotPrivate {
            what,
            path: path.to_path_buf(),
            reason,
            euid,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_or_other_writable_and_foreign_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("root");
        fs::create_dir(&dir).unwrap();
        for mode in [0o700, 0o711, 0o755] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            check_private("state root", &dir).unwrap();
        }
        for mode in [0o777, 0o775, 0o1777, 0o730] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            let err = check_private("state root", &dir).unwrap_err().to_string();
            assert!(err.contains("writable by group or others"), "{err}");
            assert!(err.contains(dir.to_str().unwrap()), "{err}");
        }
        let m = fs::metadata(&dir).unwrap();
        let other = m.uid().wrapping_add(1);
        assert!(unsafe_reason(&m, other)
            .unwrap()
            .starts_with("owned by uid"));
    }
}
