//! Where a container's host-side mounts live, and who may reach them.
//!
//! The container's init binds its rootfs view, volume views and hugetlbfs
//! and opens a member's namespace pin *after* it entered the pod's user
//! namespace, i.e. as the pod's host root uid, before `pivot_root`. So these
//! cannot live under a root-only directory, yet other host users must not
//! reach them: through a view they would read the pod's files as the view's
//! id-mapping shows them, overwrite what the pod runs, run the image's
//! setuid binaries as the pod's host uid, or plant files through a view's
//! mapping. The layout under `MOUNT_BASE/<hash of the state root>/`:
//!
//! | path | mode, owner | holds |
//! |---|---|---|
//! | `<hash>`, `rootfs`, `volumes`, `hugepages` | 0711 root | (traversal only) |
//! | `rootfs/<id>/` | 0700, the pod's host root uid:gid | `root` (the rootfs view), `layers/` (overlay layer staging, during create), `net` (a member's netns pin, during create) |
//! | `volumes/<id>/` | 0700, the pod's host root | `<n>`, the view of `mounts[n]` |
//! | `hugepages/<id>/` | 0700, the pod's host root | `<i>`, the container's hugetlbfs |
//! | `devices/<id>/` (a tmpfs) | 0700, the pod's host root | `<i>`, the node of `linux.devices[i]` (see `devices`) |
//! | `netpins/` | 0700 root | `<id>-hostnet`, `<id>-podnet`: netns pins only cnfbox (host root) opens |
//!
//! Only host root and the pod's own host root uid can walk into a
//! container's directory; the init walks it as the owner (no capability
//! needed). Members of a pod share the sandbox's mapping, hence the owner.
//!
//! `nosuid,nodev` on the host side. Measured on Linux 6.18 (and documented
//! in mount_namespaces(7), "locked mounts"): a bind of a `nosuid` mount is
//! `nosuid`, and in a mount namespace owned by the pod's user namespace the
//! flag is locked (`mount -o remount,bind,suid` gets EPERM). A rootfs or
//! volume view attached with `nosuid` would therefore take setuid binaries
//! away from the container whatever its spec says. But the init's mount
//! namespace is a copy made when it unshared, and mount attributes do not
//! propagate between copies (not even shared/slave peers): cnfbox sets
//! `nosuid,nodev` on the host's copy of each view right after the init
//! reported ready (`harden`), and the container keeps the spec's options.
//! Until then the 0700 directory is what keeps other users out. Overlay
//! layer staging binds get `nosuid,nodev` when they are made: overlayfs
//! honours setuid according to its own mount, not its layers' (measured:
//! a setuid binary in a `nosuid` lower layer runs setuid through the
//! overlay). The hugetlbfs is mounted `nosuid,nodev,noexec` already.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use idmap::PodMapping;

/// Where cnfbox attaches the mounts a container's init must reach after it
/// entered the pod's user namespace.
///
/// Not under `--root`: the init could not traverse a state root inside a
/// 0700 directory. One subdirectory per state root (named by a hash of its
/// path) keeps ids of different roots apart. Also outside the container's
/// state dir on purpose: libcontainer removes that dir recursively on a
/// failed create, and must never walk into the image.
pub const MOUNT_BASE: &str = "/run/cnfbox-mnt";

/// The rootfs view's name in the container's `rootfs/<id>/` directory.
pub const VIEW: &str = "root";
/// Overlay layer staging in the container's `rootfs/<id>/` directory.
pub const LAYERS: &str = "layers";
/// A member's network namespace pin in the container's `rootfs/<id>/`.
pub const MEMBER_PIN: &str = "net";

/// The directories under a state root's `MOUNT_BASE/<hash>/`: every
/// on-disk name cnfbox gives them, spelled here once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `rootfs/<id>/`: the container's directory (see the module doc).
    Rootfs,
    /// `volumes/<id>/<n>`: id-mapped views of the spec's bind mounts.
    Volumes,
    /// `hugepages/<id>/<i>`: the container's hugetlbfs mounts.
    Hugepages,
    /// `devices/<id>/`: the tmpfs holding the container's device nodes.
    Devices,
    /// `netpins/`: network namespace pins only host root opens.
    Netpins,
    /// `ns/<id>-net`: a member's netns pin as an older cnfbox kept it.
    OldNs,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::Rootfs,
        Kind::Volumes,
        Kind::Hugepages,
        Kind::Devices,
        Kind::Netpins,
        Kind::OldNs,
    ];

    /// The directory's name on disk.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Rootfs => "rootfs",
            Kind::Volumes => "volumes",
            Kind::Hugepages => "hugepages",
            Kind::Devices => "devices",
            Kind::Netpins => "netpins",
            Kind::OldNs => "ns",
        }
    }
}

/// Every host-side path of container `id` of a state root, by name (see
/// the module doc); none is created here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `rootfs/<id>/`.
    pub dir: PathBuf,
    /// `rootfs/<id>/root`, the rootfs view.
    pub view: PathBuf,
    /// `rootfs/<id>/layers/`, overlay layer staging.
    pub layers: PathBuf,
    /// `rootfs/<id>/net`, a member's netns pin during create.
    pub member_pin: PathBuf,
    /// `ns/<id>-net`, the same pin as an older cnfbox kept it.
    pub old_member_pin: PathBuf,
    /// `volumes/<id>/`.
    pub volumes: PathBuf,
    /// `hugepages/<id>/`.
    pub hugepages: PathBuf,
    /// `devices/<id>/`.
    pub devices: PathBuf,
    /// `netpins/<id>-hostnet` and `netpins/<id>-podnet`.
    pub host_pin: PathBuf,
    pub pod_pin: PathBuf,
    /// `netpins/<id>-relaynet`: the pod's relay namespace (`net::relay`).
    pub relay_pin: PathBuf,
}

impl Paths {
    pub fn of(root: &Path, id: &str) -> Self {
        let base = mount_base(root);
        let dir = base.join(Kind::Rootfs.name()).join(id);
        let pins = base.join(Kind::Netpins.name());
        Self {
            view: dir.join(VIEW),
            layers: dir.join(LAYERS),
            member_pin: dir.join(MEMBER_PIN),
            old_member_pin: base.join(Kind::OldNs.name()).join(format!("{id}-net")),
            volumes: base.join(Kind::Volumes.name()).join(id),
            hugepages: base.join(Kind::Hugepages.name()).join(id),
            devices: base.join(Kind::Devices.name()).join(id),
            host_pin: pins.join(format!("{id}-hostnet")),
            pod_pin: pins.join(format!("{id}-podnet")),
            relay_pin: pins.join(format!("{id}-relaynet")),
            dir,
        }
    }
}

/// Errors creating the mount directories.
#[derive(Debug, thiserror::Error)]
pub enum ViewsError {
    #[error("create mount directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("set nosuid,nodev on the host side of {path}")]
    Harden {
        path: PathBuf,
        #[source]
        source: idmap::MountError,
    },
}

/// `MOUNT_BASE/<hash of the state root>`, without creating it: where every
/// view, mount and pin of the state root's containers lives.
pub fn mount_base(root: &Path) -> PathBuf {
    use sha2::Digest;
    let canonical = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Path::new(MOUNT_BASE).join(tag)
}

/// `MOUNT_BASE/<hash of the state root>/<kind>`, without creating it.
pub fn mount_path(root: &Path, kind: Kind) -> PathBuf {
    mount_base(root).join(kind.name())
}

/// Creates `MOUNT_BASE/<hash>/<kind>` (mode 0711 for every level) and
/// returns it; for [`Kind::Netpins`] the last level is 0700.
pub fn mount_dir(root: &Path, kind: Kind) -> Result<PathBuf, ViewsError> {
    let dir = mount_path(root, kind);
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ViewsError::Dir { path, source }
    };
    let base = dir.parent().unwrap_or(Path::new(MOUNT_BASE));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(base)
        .map_err(err(base))?;
    let mode = if kind == Kind::Netpins { 0o700 } else { 0o711 };
    match fs::DirBuilder::new().mode(mode).create(&dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if kind == Kind::Netpins {
                // Made by a cnfbox that kept these pins elsewhere? Make sure.
                fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(err(&dir))?;
            }
        }
        other => other.map_err(err(&dir))?,
    }
    Ok(dir)
}

/// Removes the state root's empty directories under [`MOUNT_BASE`] (each
/// kind's, then its own) once the root holds no container, no create in
/// progress and no journal: what the root's last pod leaves. Only empty
/// directories go (rmdir), so anything a container still has there stays;
/// a create that begins meanwhile has its journal first and makes them
/// again ([`mount_dir`]).
pub fn prune_empty(root: &Path) {
    let busy = |dir: &Path| {
        fs::read_dir(dir).is_ok_and(|mut entries| {
            entries.any(|e| {
                e.is_ok_and(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    // The state root's own dot directories count by what
                    // they hold (locks are left by design).
                    !name.starts_with('.')
                })
            })
        })
    };
    let has_any = |dir: &Path| fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some());
    if busy(root) || has_any(&root.join(".journal")) || has_any(&root.join(".staging")) {
        return;
    }
    remove_mount_dirs(root);
}

/// Removes the state root's directories under [`MOUNT_BASE`] that are
/// empty: each kind's, then the root's own (rmdir only).
pub fn remove_mount_dirs(root: &Path) {
    let base = mount_base(root);
    for kind in Kind::ALL {
        let dir = base.join(kind.name());
        if let Err(err) = fs::remove_dir(&dir) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::debug!(dir = %dir.display(), %err, "kept");
            }
        }
    }
    if fs::remove_dir(&base).is_ok() {
        tracing::debug!(dir = %base.display(), "removed the state root's empty mount directory");
    }
}

/// The root-only directory of the pins `net::attach` makes.
pub fn pins_dir(root: &Path) -> Result<PathBuf, ViewsError> {
    mount_dir(root, Kind::Netpins)
}

/// Host uid and gid owning a container's directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// Host root (a container in the host's user namespace).
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };

    /// The host ids the pod's root (container id 0) maps to. A mapping
    /// without container id 0 gets root: its init could not run anyway.
    pub fn pod_root(mapping: &PodMapping) -> Owner {
        let host = |m: &idmap::Mapping| (m.container_id() == 0).then(|| m.host_id());
        match (host(&mapping.uid), host(&mapping.gid)) {
            (Some(uid), Some(gid)) => Owner { uid, gid },
            _ => Owner::ROOT,
        }
    }
}

/// Creates the container directory `dir` (its parent exists): mode 0700,
/// owned by `owner`. One left by a killed create is taken over.
pub fn guard(dir: &Path, owner: Owner) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !fs::symlink_metadata(dir)?.is_dir() {
                return Err(e);
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        other => other?,
    }
    std::os::unix::fs::lchown(dir, Some(owner.uid), Some(owner.gid))
}

/// `rootfs/<id>/` of container `id`, without creating it.
pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    mount_path(root, Kind::Rootfs).join(id)
}

/// Sets `nosuid,nodev` on the host's copy of each view, once the init has
/// its own copies (see the module doc): call after the init reported ready.
pub fn harden<'a>(views: impl IntoIterator<Item = &'a Path>) -> Result<(), ViewsError> {
    for v in views {
        idmap::mount::set_host_side_attrs(v).map_err(|source| ViewsError::Harden {
            path: v.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_guard_is_private_to_its_owner_and_taken_over() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIP guard: chown needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let owner = Owner {
            uid: 3_000_000_000,
            gid: 3_000_000_001,
        };
        guard(&dir, owner).unwrap();
        let m = fs::metadata(&dir).unwrap();
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (0o700, owner.uid, owner.gid)
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        guard(&dir, owner).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(guard(&link, owner).is_err(), "a symlink is not a guard");
    }

    #[test]
    fn the_pod_root_owns_its_directories() {
        let m = |c, h| idmap::Mapping::new(c, h, 65_536).unwrap();
        let pod = PodMapping {
            uid: m(0, 200_000),
            gid: m(0, 300_000),
        };
        assert_eq!(
            Owner::pod_root(&pod),
            Owner {
                uid: 200_000,
                gid: 300_000
            }
        );
        let shifted = PodMapping {
            uid: m(1, 200_000),
            gid: m(0, 300_000),
        };
        assert_eq!(Owner::pod_root(&shifted), Owner::ROOT);
    }
}
