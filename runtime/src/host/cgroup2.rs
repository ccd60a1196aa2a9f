//! A cgroup2 tree cnfbox writes itself (the hugetlb cgroup of a hybrid
//! host): controller lists, making a cgroup with a controller enabled on
//! the way down, moving a process in, reading a counter, removing it.
//! Paths are given, so tests run on a fake tree.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

/// Errors of [`create_below`], each naming the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum Cgroup2Error {
    #[error("enable the {controller} controller in {path}")]
    Enable {
        controller: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create cgroup {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether the space-separated controller list in `file`
/// (`cgroup.controllers`, `cgroup.subtree_control`) names `controller`.
pub fn lists(file: &Path, controller: &str) -> bool {
    fs::read_to_string(file)
        .map(|s| s.split_whitespace().any(|c| c == controller))
        .unwrap_or(false)
}

/// Creates cgroup `rel` below `mount`, enabling `controller` in the
/// `cgroup.subtree_control` of each level on the way down; a level that
/// exists is fine. Returns the cgroup's directory.
pub fn create_below(mount: &Path, rel: &Path, controller: &str) -> Result<PathBuf, Cgroup2Error> {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let mut dir = mount.to_path_buf();
    for part in rel.components() {
        let control = dir.join("cgroup.subtree_control");
        if !lists(&control, controller) {
            fs::write(&control, format!("+{controller}")).map_err(|source| {
                Cgroup2Error::Enable {
                    controller: controller.to_string(),
                    path: control.clone(),
                    source,
                }
            })?;
        }
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Cgroup2Error::Mkdir { path: dir, source }),
        }
    }
    Ok(dir)
}

/// Moves process `pid` (0: the caller) into the cgroup at `dir`.
pub fn join(dir: &Path, pid: i32) -> io::Result<()> {
    fs::write(dir.join("cgroup.procs"), pid.to_string())
}

/// The number in `dir/file`, if it has one.
pub fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    fs::read_to_string(dir.join(file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Removes the cgroup at `dir` once its processes are gone (they may take
/// a moment to leave after a kill: EBUSY is retried for about 5 s); one
/// already gone is fine.
pub fn remove(dir: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 500 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_is_made_with_its_controller_enabled_above_it() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("cgroup.subtree_control"), "cpu").unwrap();
        let dir = create_below(tmp.path(), Path::new("/a/b"), "hugetlb").unwrap();
        assert_eq!(dir, tmp.path().join("a/b"));
        // A fake tree's files take the write as it is.
        let top = fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(top, "+hugetlb");
        assert!(tmp.path().join("a/cgroup.subtree_control").is_file());
        fs::write(dir.join("n"), "42\n").unwrap();
        assert_eq!(read_u64(&dir, "n"), Some(42));
        assert_eq!(read_u64(&dir, "missing"), None);
        fs::remove_file(dir.join("n")).unwrap();
        remove(&dir).unwrap();
        remove(&dir).unwrap();
        assert!(!dir.exists());
        let controllers = tmp.path().join("cgroup.controllers");
        fs::write(&controllers, "cpu hugetlb memory\n").unwrap();
        assert!(lists(&controllers, "hugetlb"));
        assert!(!lists(&controllers, "huge"));
        assert!(!lists(&tmp.path().join("none"), "hugetlb"));
    }
}
