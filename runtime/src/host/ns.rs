//! Namespace files under `/proc`: their paths, spelled once, and whether
//! two name the same namespace.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `/proc/<pid>/ns/<kind>` (`kind`: `net`, `user`, `pid`, ...).
pub fn of_pid(pid: i32, kind: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/{kind}"))
}

/// `/proc/self/ns/<kind>`: this process's (the host's, for cnfbox).
pub fn own(kind: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/ns/{kind}"))
}

/// The namespace a file names: `(st_dev, st_ino)` of `/proc/*/ns/*` links
/// and of bind-mounted namespace files alike.
pub fn id(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `a` and `b` name the same namespace (`false` if either cannot
/// be read).
pub fn same(a: &Path, b: &Path) -> bool {
    matches!((id(a), id(b)), (Some(x), Some(y)) if x == y)
}

/// Whether `path` names this process's namespace of `kind`.
pub fn is_own(path: &Path, kind: &str) -> bool {
    same(path, &own(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespaces_are_the_same_and_differ_by_kind() {
        let pid = std::process::id() as i32;
        assert!(same(&of_pid(pid, "net"), &own("net")));
        assert!(is_own(&of_pid(pid, "user"), "user"));
        assert!(!same(&own("net"), &own("user")));
        assert!(!same(&own("net"), Path::new("/nonexistent")));
        assert_eq!(of_pid(7, "pid"), Path::new("/proc/7/ns/pid"));
    }
}
