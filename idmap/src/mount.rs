//! Id-mapped bind mounts with the new mount API (Linux >= 5.12):
//! `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)` makes a detached copy of a
//! tree, `mount_setattr(MOUNT_ATTR_IDMAP)` attaches a user namespace's
//! mapping to it, and `move_mount` attaches it at the target.
//!
//! Through such a mount, an on-disk ID `k` appears as the host ID the
//! namespace maps `k` to, and a write by host ID `h` is stored as the ID `h`
//! maps back to (Documentation/filesystems/idmappings.rst). With the mapping
//! `0 -> 100000`, root-owned files look owned by host uid 100000, i.e. by
//! root inside a pod whose user namespace has the same mapping.
//!
//! nix 0.29 wraps none of these three syscalls, so they are issued with
//! `libc::syscall` here, once each.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::range::PodMapping;
use crate::userns::{UsernsCache, UsernsError};

// From include/uapi/linux/mount.h; spelled out because not every libc
// release exports them for every target.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `MOUNT_ATTR_RDONLY`: the mount is read-only.
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
/// `MOUNT_ATTR_NOSUID`: setuid/setgid bits and file capabilities are ignored.
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
/// `MOUNT_ATTR_NODEV`: device nodes cannot be opened.
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
/// What cnfbox sets on every mount it leaves on the host side (a view's
/// copy in the host's mount namespace, an overlay layer's staging bind):
/// no host user gains privileges or device access through it.
pub const HOST_SIDE_ATTRS: u64 = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0, 32 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Errors of id-mapped mounts, one per step.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A path with an interior NUL byte.
    #[error("path {path} contains a NUL byte")]
    NulInPath { path: PathBuf },
    /// `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)` of the source.
    #[error("open_tree(OPEN_TREE_CLONE|AT_RECURSIVE) on {path}: {source:?}")]
    OpenTree {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    /// `mount_setattr(MOUNT_ATTR_IDMAP)` on the detached tree; `hint` says
    /// why the kernel refused, e.g. "hugetlbfs cannot be id-mapped".
    #[error("mount_setattr(MOUNT_ATTR_IDMAP) on {path}: {source:?} ({hint})")]
    SetIdmap {
        path: PathBuf,
        hint: String,
        #[source]
        source: Errno,
    },
    /// `mount_setattr` of other attributes (`nosuid`, `nodev`) on a
    /// detached tree or an attached mount.
    #[error("mount_setattr({attrs}) on {path}: {source:?}")]
    SetAttr {
        path: PathBuf,
        attrs: &'static str,
        #[source]
        source: Errno,
    },
    /// `move_mount(MOVE_MOUNT_F_EMPTY_PATH)` of the tree onto the target.
    #[error("move_mount of {source_path} onto {target}: {source:?}")]
    MoveMount {
        source_path: PathBuf,
        target: PathBuf,
        #[source]
        source: Errno,
    },
    /// Getting a user namespace with the mapping.
    #[error("user namespace for the id-mapped mount of {path}")]
    Userns {
        path: PathBuf,
        #[source]
        source: UsernsError,
    },
}

fn cpath(path: &Path) -> Result<CString, MountError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| MountError::NulInPath {
        path: path.to_owned(),
    })
}

/// A detached recursive copy of the mount tree at `path`, closed (and so
/// lazily unmounted) when dropped unless attached with [`move_mount`].
pub fn open_tree_clone(path: &Path) -> Result<OwnedFd, MountError> {
    let c = cpath(path)?;
    let flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // open_tree(2) takes (dirfd, const char *path, unsigned int flags) and
    // returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if ret < 0 {
        return Err(MountError::OpenTree {
            path: path.to_owned(),
            source: Errno::last(),
        });
    }
    let fd = libc::c_int::try_from(ret).map_err(|_| MountError::OpenTree {
        path: path.to_owned(),
        source: Errno::EOVERFLOW,
    })?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Marks the detached tree `tree` (from `path`, named in errors) as
/// id-mapped through the user namespace `userns`, recursively.
pub fn set_idmap(
    tree: BorrowedFd<'_>,
    userns: BorrowedFd<'_>,
    path: &Path,
) -> Result<(), MountError> {
    set_idmap_with_attrs(tree, userns, path, 0)
}

/// [`set_idmap`], setting `attrs` (e.g. [`HOST_SIDE_ATTRS`]) in the same
/// mount_setattr(2) call.
pub fn set_idmap_with_attrs(
    tree: BorrowedFd<'_>,
    userns: BorrowedFd<'_>,
    path: &Path,
    attrs: u64,
) -> Result<(), MountError> {
    let fd = u64::try_from(userns.as_raw_fd()).map_err(|_| MountError::SetIdmap {
        path: path.to_owned(),
        hint: "negative user namespace fd".into(),
        source: Errno::EBADF,
    })?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | attrs,
        userns_fd: fd,
        ..MountAttr::default()
    };
    mount_setattr(tree.as_raw_fd(), c"", libc::AT_EMPTY_PATH, true, &attr).map_err(|errno| {
        MountError::SetIdmap {
            path: path.to_owned(),
            hint: refusal_hint(path, errno),
            source: errno,
        }
    })
}

/// Sets [`HOST_SIDE_ATTRS`] (`nosuid,nodev`) recursively on the mount tree
/// attached at `path` (which is not followed if it is a symlink).
pub fn set_host_side_attrs(path: &Path) -> Result<(), MountError> {
    let c = cpath(path)?;
    let attr = MountAttr {
        attr_set: HOST_SIDE_ATTRS,
        ..MountAttr::default()
    };
    mount_setattr(libc::AT_FDCWD, &c, libc::AT_SYMLINK_NOFOLLOW, true, &attr).map_err(|source| {
        MountError::SetAttr {
            path: path.to_owned(),
            attrs: "nosuid,nodev",
            source,
        }
    })
}

/// The atime behaviour of a mount (mount_setattr(2)): one mode, and
/// whether directories skip it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Atime {
    /// `MOUNT_ATTR_RELATIME` (0), `_NOATIME` (0x10) or `_STRICTATIME` (0x20).
    pub mode: Option<u64>,
    /// `MOUNT_ATTR_NODIRATIME`.
    pub nodiratime: bool,
}

/// `MOUNT_ATTR__ATIME`: the atime mode bits.
const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
/// `MOUNT_ATTR_NODIRATIME`.
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

/// Sets `atime` on the mount at `path` (and, if `recursive`, its
/// submounts). Done on a host-side view before a container's user
/// namespace exists: in a mount namespace owned by a user namespace the
/// kernel locks a mount's atime flags (`MNT_LOCK_ATIME`), so the container's
/// runtime may then only repeat them, never change them.
pub fn set_atime(path: &Path, atime: Atime, recursive: bool) -> Result<(), MountError> {
    let c = cpath(path)?;
    let mut attr = MountAttr::default();
    if let Some(mode) = atime.mode {
        attr.attr_set |= mode;
        attr.attr_clr |= MOUNT_ATTR_ATIME_MASK;
    }
    if atime.nodiratime {
        attr.attr_set |= MOUNT_ATTR_NODIRATIME;
    }
    mount_setattr(
        libc::AT_FDCWD,
        &c,
        libc::AT_SYMLINK_NOFOLLOW,
        recursive,
        &attr,
    )
    .map_err(|source| MountError::SetAttr {
        path: path.to_owned(),
        attrs: "atime",
        source,
    })
}

/// mount_setattr(2) on `(dirfd, path)` with `flags`, plus `AT_RECURSIVE`
/// when `recursive`.
fn mount_setattr(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    recursive: bool,
    attr: &MountAttr,
) -> Result<(), Errno> {
    let flags = if recursive {
        flags | libc::AT_RECURSIVE
    } else {
        flags
    };
    // SAFETY: `attr` is a live, properly aligned `struct mount_attr` whose
    // size we pass; `path` is a NUL-terminated string that outlives the
    // call; `dirfd` is AT_FDCWD or a descriptor the caller keeps open for
    // the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags as libc::c_uint,
            std::ptr::from_ref(attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Attaches the detached tree `tree` (from `source_path`) at `target`.
pub fn move_mount(
    tree: BorrowedFd<'_>,
    source_path: &Path,
    target: &Path,
) -> Result<(), MountError> {
    let c = cpath(target)?;
    // SAFETY: valid NUL-terminated strings outlive the call; `tree` is an
    // open fd from open_tree(2); move_mount(2) takes (from_dfd, from_path,
    // to_dfd, to_path, flags).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(MountError::MoveMount {
            source_path: source_path.to_owned(),
            target: target.to_owned(),
            source: Errno::last(),
        });
    }
    Ok(())
}

/// Bind-mounts `source` at `target` (an existing directory or file) so that
/// IDs on disk are seen through `mapping`: the container's IDs of the
/// mapping become the on-disk IDs. Uses the process-wide user-namespace
/// cache.
pub fn idmapped_bind(source: &Path, target: &Path, mapping: &PodMapping) -> Result<(), MountError> {
    idmapped_bind_with_attrs(source, target, mapping, 0)
}

/// [`idmapped_bind`] with a user namespace the caller already has.
pub fn idmapped_bind_with(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
) -> Result<(), MountError> {
    idmapped_bind_attrs_with(source, target, userns, 0)
}

/// [`idmapped_bind`] that also sets `attrs` (e.g. [`HOST_SIDE_ATTRS`]) on
/// the tree before it is attached, so it is never reachable without them.
///
/// A bind of such a mount inherits them, and in a mount namespace owned by
/// a pod's user namespace they are locked (MNT_LOCK_NOSUID, ...): use this
/// only for a tree the container does not bind itself (overlay layers:
/// overlayfs checks `nosuid` on its own mount, not on its layers').
pub fn idmapped_bind_with_attrs(
    source: &Path,
    target: &Path,
    mapping: &PodMapping,
    attrs: u64,
) -> Result<(), MountError> {
    let userns = UsernsCache::global()
        .get(mapping)
        .map_err(|e| MountError::Userns {
            path: source.to_owned(),
            source: e,
        })?;
    idmapped_bind_attrs_with(source, target, userns.as_fd(), attrs)
}

fn idmapped_bind_attrs_with(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    attrs: u64,
) -> Result<(), MountError> {
    let tree = open_tree_clone(source)?;
    set_idmap_with_attrs(tree.as_fd(), userns, source, attrs)?;
    move_mount(tree.as_fd(), source, target)?;
    tracing::info!(source = %source.display(), target = %target.display(), attrs, "id-mapped bind mount attached");
    Ok(())
}

/// Whether a filesystem type accepts id-mapped mounts (`FS_ALLOW_IDMAP` in
/// its `file_system_type`), as far as this table knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdmapSupport {
    /// Allowed since Linux 5.15 or earlier, on every kernel this runtime
    /// supports.
    Always,
    /// Depends on the kernel (tmpfs and hugetlbfs gained it in 6.x) or never
    /// allowed (proc, sysfs, ramfs, ...).
    Varies,
}

/// The name and id-map support of a filesystem magic number (statfs(2)
/// `f_type`, values from include/uapi/linux/magic.h).
pub fn fs_type_info(magic: u64) -> (&'static str, IdmapSupport) {
    use IdmapSupport::{Always, Varies};
    match magic {
        0xef53 => ("ext4", Always),
        0x5846_5342 => ("xfs", Always),
        0x9123_683e => ("btrfs", Always),
        0x4d44 => ("vfat", Always),
        0x0102_1994 => ("tmpfs", Varies),
        0x794c_7630 => ("overlayfs", Varies),
        0xf2f5_2010 => ("f2fs", Varies),
        0x9584_58f6 => ("hugetlbfs", Varies),
        0x8584_58f6 => ("ramfs", Varies),
        0x9fa0 => ("proc", Varies),
        0x6265_6572 => ("sysfs", Varies),
        0x6969 => ("nfs", Varies),
        0x1cd1 => ("devpts", Varies),
        0x6367_7270 => ("cgroup2", Varies),
        0x0027_e0eb => ("cgroup", Varies),
        0x6573_5546 => ("fuse", Varies),
        _ => ("this filesystem", Varies),
    }
}

/// statfs(2) `f_type` of `path`.
pub fn fs_magic(path: &Path) -> Result<u64, Errno> {
    let st = nix::sys::statfs::statfs(path)?;
    // `f_type` is a signed long holding a 32-bit magic; keep its bit pattern.
    Ok(u64::from(st.filesystem_type().0 as u32))
}

/// Why mount_setattr(MOUNT_ATTR_IDMAP) on `path` failed with `errno`, in
/// words an operator can act on (see can_idmap_mount() and
/// build_mount_idmapped() in fs/namespace.c).
fn refusal_hint(path: &Path, errno: Errno) -> String {
    let fs = match fs_magic(path) {
        Ok(m) => Some(fs_type_info(m)),
        Err(e) => {
            tracing::debug!(path = %path.display(), errno = ?e, "statfs for mount_setattr hint");
            None
        }
    };
    match (errno, fs) {
        // can_idmap_mount(): EINVAL when the superblock's type lacks
        // FS_ALLOW_IDMAP (or, for a filesystem that has it, when a submount
        // of the recursive tree lacks it).
        (Errno::EINVAL, Some((name, IdmapSupport::Always))) => format!(
            "{name} supports id-mapped mounts; a submount on a filesystem that does not is refused"
        ),
        (Errno::EINVAL, Some((name, IdmapSupport::Varies))) => {
            format!("{name} cannot be id-mapped")
        }
        (Errno::EINVAL, None) => "the filesystem cannot be id-mapped".into(),
        (Errno::EPERM, _) => "the mount is already id-mapped, or the user namespace is the \
                               initial one or not ours"
            .into(),
        (Errno::EBADF, _) => "the user namespace fd is not open".into(),
        (Errno::ENOSYS, _) => "the kernel lacks mount_setattr(2) (needs Linux 5.12)".into(),
        (e, _) => e.desc().to_owned(),
    }
}

/// The source's filesystem, for logs and tests: `"ext4"`, `"tmpfs"`, ...
pub fn fs_name(path: &Path) -> Result<&'static str, Errno> {
    fs_magic(path).map(|m| fs_type_info(m).0)
}
