//! The staged spec at a path that names the user's bundle.
//!
//! libcontainer 0.7 takes one bundle path for two things: it reads
//! `BUNDLE/config.json` and it records `realpath(BUNDLE)` as the bundle in
//! the container state that every hook gets on its stdin. cnfbox must hand
//! it the staged spec, so the state would name the staging directory. The
//! hooks that libcontainer runs from the container's init (`createContainer`
//! and `startContainer`, in the container's namespaces) take that state from
//! the init's memory, where no relay can reach: a relay would be a host
//! binary run inside the container.
//!
//! So the spec is given at `/proc/self/fd/N`, N an `O_PATH` descriptor of a
//! directory on a private tmpfs that is never attached to any mount tree
//! (fsopen/fsmount, root-only, `nosuid,nodev,noexec`), at the same path
//! inside it as the user's bundle on the host. The kernel follows the magic
//! link to read `config.json` from the tmpfs; readlink(2) of the link prints
//! the directory's path within its detached mount, which is the user's
//! bundle path, and realpath(3) resolves that on the host to the user's
//! bundle itself. Nothing is written on the host. The descriptors are
//! close-on-exec: the init holds copies only until it executes the hooks
//! and the payload (libcontainer's own code), and the tmpfs goes with the
//! last of them.

use std::io::Write as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};

/// Errors building the alias; `create` then falls back to the staged path.
#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("fsopen(tmpfs) for the bundle alias: {0}")]
    Fsopen(#[source] Errno),
    #[error("fsconfig({step}) of the bundle alias tmpfs: {source}")]
    Fsconfig {
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("fsmount of the bundle alias tmpfs: {0}")]
    Fsmount(#[source] Errno),
    #[error("bundle alias: {path} is not an absolute path of plain components")]
    NotPlain { path: PathBuf },
    #[error("bundle alias: make {path} in the tmpfs: {source}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("bundle alias: write config.json: {0}")]
    Write(#[source] std::io::Error),
    #[error("bundle alias: {link} reads {got}, not {want}")]
    Mismatch {
        link: PathBuf,
        got: PathBuf,
        want: PathBuf,
    },
}

/// A staged spec reachable at [`BundleAlias::path`], which realpath(3)
/// turns into the user's bundle. Dropping it closes the tmpfs.
#[derive(Debug)]
pub struct BundleAlias {
    dir: OwnedFd,
    _mount: OwnedFd,
}

impl BundleAlias {
    /// Puts `spec_json` as `config.json` in a private tmpfs directory at
    /// `bundle` (the user's canonical bundle path) and checks that the
    /// kernel names it so.
    pub fn new(bundle: &Path, spec_json: &[u8]) -> Result<Self, AliasError> {
        let mount = private_tmpfs()?;
        let not_plain = || AliasError::NotPlain {
            path: bundle.to_owned(),
        };
        let mut parts = bundle.components();
        if parts.next() != Some(Component::RootDir) {
            return Err(not_plain());
        }
        let mut dir: Option<OwnedFd> = None;
        let mut made = PathBuf::from("/");
        for c in parts {
            let name = match c {
                Component::Normal(n) => n,
                _ => return Err(not_plain()),
            };
            made.push(name);
            let at = dir.as_ref().unwrap_or(&mount).as_raw_fd();
            let mkdir_err = |source| AliasError::Mkdir {
                path: made.clone(),
                source,
            };
            mkdirat(Some(at), name, Mode::S_IRWXU).map_err(mkdir_err)?;
            let fd = openat(
                Some(at),
                name,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(mkdir_err)?;
            // SAFETY: openat(2) just returned `fd`; nothing else owns it.
            dir = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let dir = dir.ok_or_else(not_plain)?;
        let file = openat(
            Some(dir.as_raw_fd()),
            "config.json",
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| AliasError::Write(e.into()))?;
        // SAFETY: openat(2) just returned `file`; nothing else owns it.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(file) });
        file.write_all(spec_json).map_err(AliasError::Write)?;
        let alias = Self { dir, _mount: mount };
        let link = alias.path();
        let got = std::fs::read_link(&link).map_err(AliasError::Write)?;
        if got != bundle {
            return Err(AliasError::Mismatch {
                link,
                got,
                want: bundle.to_owned(),
            });
        }
        Ok(alias)
    }

    /// The bundle path to give libcontainer.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))
    }
}

/// A tmpfs (root 0700) mounted nowhere: reachable only through the
/// returned descriptor.
fn private_tmpfs() -> Result<OwnedFd, AliasError> {
    let fstype = c"tmpfs";
    // SAFETY: `fstype` is a NUL-terminated string that outlives the call;
    // fsopen(2) takes (const char *fsname, unsigned int flags) and returns
    // a new fd or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) };
    let fs = owned(fs).map_err(AliasError::Fsopen)?;
    let key = c"mode";
    let value = c"0700";
    // SAFETY: `fs` is an open fs context; `key` and `value` are
    // NUL-terminated strings that outlive the call; the aux argument is
    // unused (0) for FSCONFIG_SET_STRING.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    check(ret).map_err(|source| AliasError::Fsconfig {
        step: "mode=0700",
        source,
    })?;
    // SAFETY: `fs` is an open fs context; FSCONFIG_CMD_CREATE takes no key,
    // value or aux (NULL, NULL, 0).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    check(ret).map_err(|source| AliasError::Fsconfig {
        step: "create",
        source,
    })?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    // SAFETY: `fs` is a created fs context; fsmount(2) takes (int fsfd,
    // unsigned int flags, unsigned int attr_flags) and returns a new fd or
    // -1.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    };
    owned(ret).map_err(AliasError::Fsmount)
}

fn check(ret: libc::c_long) -> Result<(), Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn owned(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    check(ret)?;
    let fd = libc::c_int::try_from(ret).map_err(|_| Errno::EOVERFLOW)?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_read_through_the_alias_whose_realpath_is_the_bundle() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipping: fsopen(tmpfs) needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().canonicalize().unwrap().join("my bundle");
        std::fs::create_dir(&bundle).unwrap();
        std::fs::write(bundle.join("config.json"), b"the user's").unwrap();
        let alias = BundleAlias::new(&bundle, b"staged").unwrap();
        let path = alias.path();
        assert_eq!(std::fs::read(path.join("config.json")).unwrap(), b"staged");
        assert_eq!(std::fs::canonicalize(&path).unwrap(), bundle);
        // Nothing of it is on the host.
        assert_eq!(
            std::fs::read(bundle.join("config.json")).unwrap(),
            b"the user's"
        );
        assert_eq!(std::fs::read_dir(&bundle).unwrap().count(), 1);
        assert!(matches!(
            BundleAlias::new(Path::new("relative"), b"{}"),
            Err(AliasError::NotPlain { .. })
        ));
    }
}
