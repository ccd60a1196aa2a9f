//! Opening a directory without following any symlink on the way, and
//! naming it afterwards by the descriptor rather than by the path.
//!
//! `openat2(2)` with `RESOLVE_NO_SYMLINKS` fails with `ELOOP` when any
//! component of the path, the last one included (also when spelt with a
//! trailing `/`), is a symlink; it implies `RESOLVE_NO_MAGICLINKS`. The
//! descriptor is `O_PATH`: it grants no access, it only pins the dentry.
//! `/proc/self/fd/N` is a magic link to that very dentry, so a later
//! `open_tree(2)` or `statfs(2)` of it acts on what was checked, whatever
//! happened to the path since (see proc(5), "/proc/pid/fd/").

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// A directory opened without following symlinks: its descriptor and the
/// path the kernel gives for it (`d_path`: no symlink, no `..`).
#[derive(Debug)]
pub struct OpenedDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl OpenedDir {
    /// Opens `path` (relative to `at`, or absolute) as a directory,
    /// refusing a symlink anywhere in it.
    pub fn open(at: Option<BorrowedFd<'_>>, path: &Path) -> Result<Self, Errno> {
        let fd = openat2_dir_nofollow(at, path)?;
        let path = std::fs::read_link(magic_link(&fd))
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(Self { fd, path })
    }

    /// The path the kernel names the directory by, for messages and for
    /// matching the mount table (not for opening it again).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `/proc/self/fd/N`: a path that reaches the opened directory itself,
    /// valid while `self` lives, in this process.
    pub fn handle(&self) -> PathBuf {
        magic_link(&self.fd)
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `(st_dev, st_ino)` of the opened directory.
    pub fn id(&self) -> Result<(u64, u64), Errno> {
        let st = nix::sys::stat::fstat(self.fd.as_raw_fd())?;
        Ok((st.st_dev, st.st_ino))
    }
}

fn magic_link(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `openat2(at, path, O_PATH|O_DIRECTORY|O_CLOEXEC, RESOLVE_NO_SYMLINKS)`.
fn openat2_dir_nofollow(at: Option<BorrowedFd<'_>>, path: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let dirfd = at.map_or(libc::AT_FDCWD, |fd| fd.as_raw_fd());
    let raw = nix::fcntl::openat2(dirfd, path, how)?;
    // SAFETY: openat2 succeeded, so `raw` is a new descriptor that nothing
    // else owns; the OwnedFd closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn symlinks_anywhere_are_refused_and_the_handle_reaches_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir_all(real.join("rootfs")).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("via")).unwrap();
        std::os::unix::fs::symlink(real.join("rootfs"), tmp.path().join("last")).unwrap();
        for bad in ["via/rootfs", "last", "last/", "via/rootfs/"] {
            let err = OpenedDir::open(None, &tmp.path().join(bad)).unwrap_err();
            assert_eq!(err, Errno::ELOOP, "{bad}");
        }
        let dir = OpenedDir::open(None, &real.join("rootfs/")).unwrap();
        assert_eq!(dir.path(), real.canonicalize().unwrap().join("rootfs"));
        // Renamed away and replaced by a symlink: the handle still names
        // the directory that was checked.
        fs::rename(real.join("rootfs"), real.join("moved")).unwrap();
        std::os::unix::fs::symlink("/", real.join("rootfs")).unwrap();
        let handle = fs::canonicalize(dir.handle()).unwrap();
        assert_eq!(handle, real.canonicalize().unwrap().join("moved"));
    }
}
