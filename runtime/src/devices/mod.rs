//! Device nodes for user-namespaced pods (`linux.devices`).
//!
//! No process may mknod(2) a device inside a user namespace (the kernel
//! wants CAP_MKNOD in the initial one), so libcontainer, like runc and
//! crun, bind-mounts the host's node at the entry's path instead. Inside
//! the pod that node shows up as `nobody:nogroup` with the host's mode, and
//! an entry whose node is not at the same path on the host fails the
//! create. cnfbox runs as host root before the pod's user namespace exists,
//! so it makes each node itself, by type, major and minor (never by
//! looking up a host path), on a tmpfs of the container's own
//! (`/run/cnfbox-mnt/<root hash>/devices/<id>`, mounted without `nodev`,
//! its root mode 0700 and owned by the pod's root; `nodev` is set on the
//! host's copy once the init has bound its nodes, see `views`), owned by
//! the host ids
//! the entry's `uid`/`gid` map to, with the entry's `fileMode`, and hands
//! each to libcontainer as a bind mount at the entry's path.
//!
//! The device cgroup still decides what may be opened, on v1 and v2 (see
//! `rules`): the entries' `linux.resources.devices` rules are kept as they
//! are. libcontainer 0.7 (unlike runc) adds no allow rule per
//! `linux.devices` entry (libcgroups applies the spec's rules and its
//! defaults only), so cnfbox adds none either: a node without an allow
//! rule stays unusable, exactly as without cnfbox. containerd's CRI writes
//! the allow rule of each CreateContainer device itself.

pub mod policy;
pub mod rules;
pub mod scope;
pub mod withheld;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDeviceType, Mount, Spec};
use serde::{Deserialize, Serialize};

pub use policy::{Dev, Policy, PolicyError};

/// `fileMode` when an entry gives none (libcontainer's `mknod_dev`).
const DEFAULT_MODE: u32 = 0o666;
/// The largest major and minor a `dev_t` holds (`new_encode_dev`: 12 and
/// 20 bits).
const MAX_MAJOR: i64 = 0xfff;
const MAX_MINOR: i64 = 0xf_ffff;

/// The device nodes libcontainer itself provides for every container, at
/// these paths (`libcontainer::rootfs::utils::default_devices`). An entry
/// that names one of them exactly is left to libcontainer, which binds the
/// host's (mode 0666) node after the spec's mounts and would cover ours.
const LIBCONTAINER_DEFAULTS: &[(&str, i64, i64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/tty", 5, 0),
    ("/dev/urandom", 1, 9),
    ("/dev/random", 1, 8),
];

/// Errors of the container's device nodes.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("linux.devices[{index}] ({path}): {reason}")]
    Entry {
        index: usize,
        path: PathBuf,
        reason: String,
    },
    #[error("linux.devices[{index}] ({path}): device {dev} is not allowed for user-namespaced pods (allowed beyond containerd's default set: {rules}; see [devices] allow in {config})")]
    NotAllowed {
        index: usize,
        path: PathBuf,
        dev: Dev,
        rules: String,
        config: PathBuf,
    },
    #[error("the device mount directory")]
    Dir(#[source] crate::views::ViewsError),
    #[error("create device mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount the device tmpfs on {path}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("mknod {path} ({what})")]
    Mknod {
        path: PathBuf,
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("set owner {uid}:{gid} of {path}")]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("set mode {mode:04o} of {path}")]
    Chmod {
        path: PathBuf,
        mode: u32,
        #[source]
        source: std::io::Error,
    },
}

/// One node cnfbox makes: what the entry asked for, in container ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Index in `linux.devices`.
    pub index: usize,
    /// Where the container sees it.
    pub path: PathBuf,
    /// `c`, `b` or `p` (FIFO).
    pub typ: char,
    pub major: i64,
    pub minor: i64,
    /// Permission bits (`fileMode & 0o777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What cnfbox made for a container (kept in its record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The container's device tmpfs on the host.
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
}

/// One node, as made on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Where the container sees it.
    pub path: PathBuf,
    /// The node on the host (under `Record::dir`).
    pub host_path: PathBuf,
    /// `c`, `b` or `p`.
    pub typ: char,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    /// The host uid and gid that own it.
    pub host_uid: u32,
    pub host_gid: u32,
}

impl Node {
    /// `c 10:232`, or `p` for a FIFO.
    pub fn device(&self) -> String {
        match self.typ {
            'p' => "p".into(),
            t => format!("{t} {}:{}", self.major, self.minor),
        }
    }
}

/// Decides which `linux.devices` entries cnfbox makes itself, checking
/// each against `policy`. Pure: nothing on the host changes.
pub fn plan(spec: &Spec, policy: &Policy) -> Result<Vec<Planned>, DevicesError> {
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_deref())
        .unwrap_or_default();
    let mut out: Vec<Planned> = Vec::new();
    for (index, d) in devices.iter().enumerate() {
        let path = d.path().clone();
        let bad = |reason: String| DevicesError::Entry {
            index,
            path: path.clone(),
            reason,
        };
        // libcontainer's rule for device paths (`create_devices`).
        if !path.is_absolute() || !path.starts_with("/dev") || path == Path::new("/dev") {
            return Err(bad("a device path must be under /dev".into()));
        }
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(bad("a device path must not contain ..".into()));
        }
        if let Some(earlier) = out.iter().find(|p| p.path == path) {
            return Err(bad(format!(
                "the same path as linux.devices[{}]",
                earlier.index
            )));
        }
        let (major, minor) = (d.major(), d.minor());
        let typ = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::P => 'p',
            LinuxDeviceType::A => return Err(bad("type \"a\" names no single device node".into())),
        };
        if typ != 'p' && !((0..=MAX_MAJOR).contains(&major) && (0..=MAX_MINOR).contains(&minor)) {
            return Err(bad(format!(
                "major {major} / minor {minor} out of range (0-{MAX_MAJOR} / 0-{MAX_MINOR})"
            )));
        }
        let mode = d.file_mode().unwrap_or(DEFAULT_MODE);
        if mode & !0o777 != 0 {
            return Err(bad(format!(
                "fileMode {mode:o}: only permission bits (at most 0777) are allowed"
            )));
        }
        if let Some(default) = LIBCONTAINER_DEFAULTS
            .iter()
            .find(|(p, _, _)| Path::new(p) == path)
        {
            if (typ, major, minor) == ('c', default.1, default.2) {
                // libcontainer binds the host's own (mode 0666) node here.
                continue;
            }
            return Err(bad(format!(
                "the path of libcontainer's own c {}:{} node",
                default.1, default.2
            )));
        }
        if let Some(dev) = Dev::of(d.typ(), major, minor) {
            if policy.allows(&dev).is_none() {
                return Err(DevicesError::NotAllowed {
                    index,
                    path,
                    dev,
                    rules: policy.rules(),
                    config: policy.config().to_path_buf(),
                });
            }
        }
        out.push(Planned {
            index,
            path,
            typ,
            major,
            minor,
            mode,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    Ok(out)
}

/// Whether the spec lists any `linux.devices`.
pub fn wanted(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .is_some_and(|d| !d.is_empty())
}

/// The devices step of `create` for container `id` of state root `root`:
/// checks the spec's `linux.devices` against the `[devices]` policy of
/// `config`, makes the nodes and rewrites the spec. A container in the
/// host's user namespace (`mapping` `None`) is left to libcontainer, which
/// mknods there as host root.
pub fn setup(
    root: &Path,
    id: &str,
    spec: &mut Spec,
    mapping: Option<&idmap::PodMapping>,
    config: &Path,
) -> Result<Option<Record>, DevicesError> {
    let Some(mapping) = mapping else {
        return Ok(None);
    };
    if !wanted(spec) {
        return Ok(None);
    }
    let planned = plan(spec, &Policy::load(config)?)?;
    if planned.is_empty() {
        return Ok(None);
    }
    // Ownership is checked before the tmpfs exists.
    owners(&planned, mapping)?;
    let dir = crate::views::mount_dir(root, crate::views::Kind::Devices)
        .map_err(DevicesError::Dir)?
        .join(id);
    make(spec, &planned, &dir, mapping).map(Some)
}

/// The host id that container id `id` maps to under `m`.
fn to_host(m: &idmap::Mapping, id: u32) -> Option<u32> {
    let offset = id.checked_sub(m.container_id())?;
    (offset < m.size())
        .then(|| m.host_id().checked_add(offset))
        .flatten()
}

/// Host ownership of each planned node under the pod's mapping, checked
/// before anything is made.
pub fn owners(
    planned: &[Planned],
    mapping: &idmap::PodMapping,
) -> Result<Vec<(u32, u32)>, DevicesError> {
    planned
        .iter()
        .map(|p| {
            let unmapped = |what: &str, id: u32| DevicesError::Entry {
                index: p.index,
                path: p.path.clone(),
                reason: format!("{what} {id} is not mapped by the pod's user namespace"),
            };
            Ok((
                to_host(&mapping.uid, p.uid).ok_or_else(|| unmapped("uid", p.uid))?,
                to_host(&mapping.gid, p.gid).ok_or_else(|| unmapped("gid", p.gid))?,
            ))
        })
        .collect()
}

/// Makes the planned nodes on a fresh tmpfs at `dir` and points the spec
/// at them: the entries leave `linux.devices` (so libcontainer binds no
/// host node) and become bind mounts. On error whatever was made is gone.
pub fn make(
    spec: &mut Spec,
    planned: &[Planned],
    dir: &Path,
    mapping: &idmap::PodMapping,
) -> Result<Record, DevicesError> {
    let owners = owners(planned, mapping)?;
    let root_owner = owners_of_root(mapping, planned)?;
    let nodes = make_nodes(planned, &owners, root_owner, dir).inspect_err(|_| detach(dir))?;
    let made: Vec<usize> = planned.iter().map(|p| p.index).collect();
    if let Some(linux) = spec.linux_mut() {
        if let Some(devices) = linux.devices().clone() {
            let kept: Vec<_> = devices
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !made.contains(i))
                .map(|(_, d)| d)
                .collect();
            linux.set_devices((!kept.is_empty()).then_some(kept));
        }
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for n in &nodes {
        let mut bind = Mount::default();
        bind.set_destination(n.path.clone());
        bind.set_typ(Some("bind".into()));
        bind.set_source(Some(n.host_path.clone()));
        // No `nodev`: the node is what this mount is for.
        bind.set_options(Some(
            ["bind", "nosuid", "noexec"].map(String::from).to_vec(),
        ));
        mounts.push(bind);
    }
    spec.set_mounts(Some(mounts));
    Ok(Record {
        dir: dir.to_path_buf(),
        nodes,
    })
}

/// The host uid and gid of the pod's root (who owns the tmpfs root).
fn owners_of_root(
    mapping: &idmap::PodMapping,
    planned: &[Planned],
) -> Result<(u32, u32), DevicesError> {
    match (to_host(&mapping.uid, 0), to_host(&mapping.gid, 0)) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => Err(DevicesError::Entry {
            index: planned.first().map_or(0, |p| p.index),
            path: planned.first().map(|p| p.path.clone()).unwrap_or_default(),
            reason: "the pod's root (uid/gid 0) is not mapped: nobody could reach the node".into(),
        }),
    }
}

fn make_nodes(
    planned: &[Planned],
    owners: &[(u32, u32)],
    root_owner: (u32, u32),
    dir: &Path,
) -> Result<Vec<Node>, DevicesError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|source| DevicesError::MountPoint {
            path: dir.to_path_buf(),
            source,
        })?;
    // Host root only while the nodes are made; nosuid and noexec, but not
    // nodev. A few inodes and no data blocks: nodes need none.
    let options = format!(
        "mode=0700,uid=0,gid=0,size=4k,nr_inodes={}",
        planned.len() + 2
    );
    mount(
        Some("cnfbox-dev"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|source| DevicesError::Mount {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut nodes = Vec::with_capacity(planned.len());
    for (i, (p, &(uid, gid))) in planned.iter().zip(owners).enumerate() {
        let host_path = dir.join(i.to_string());
        let (kind, what) = match p.typ {
            'b' => (SFlag::S_IFBLK, format!("b {}:{}", p.major, p.minor)),
            'p' => (SFlag::S_IFIFO, "fifo".to_string()),
            _ => (SFlag::S_IFCHR, format!("c {}:{}", p.major, p.minor)),
        };
        // Made with no permission bits at all, then owned, then opened up:
        // never usable by anyone but host root before it has its owner.
        // The numbers were range-checked in `plan`.
        let rdev = makedev(p.major as u64, p.minor as u64);
        mknod(&host_path, kind, Mode::empty(), rdev).map_err(|source| DevicesError::Mknod {
            path: host_path.clone(),
            what,
            source,
        })?;
        std::os::unix::fs::lchown(&host_path, Some(uid), Some(gid)).map_err(|source| {
            DevicesError::Chown {
                path: host_path.clone(),
                uid,
                gid,
                source,
            }
        })?;
        fs::set_permissions(&host_path, fs::Permissions::from_mode(p.mode)).map_err(|source| {
            DevicesError::Chmod {
                path: host_path.clone(),
                mode: p.mode,
                source,
            }
        })?;
        tracing::debug!(path = %p.path.display(), host = %host_path.display(), typ = %p.typ, p.major, p.minor, mode = p.mode, uid, gid, "device node made");
        nodes.push(Node {
            path: p.path.clone(),
            host_path,
            typ: p.typ,
            major: p.major,
            minor: p.minor,
            mode: p.mode,
            host_uid: uid,
            host_gid: gid,
        });
    }
    // Now the pod's root may traverse it (libcontainer's init resolves the
    // bind sources as the pod's root); nobody else on the host may.
    let (uid, gid) = root_owner;
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(|source| DevicesError::Chown {
        path: dir.to_path_buf(),
        uid,
        gid,
        source,
    })?;
    Ok(nodes)
}

/// Lazily unmounts a container's device tmpfs and removes its mount point;
/// one already gone (or never mounted) is fine. The container's own binds
/// of the nodes go with its mount namespace.
pub fn detach(dir: &Path) {
    if let Err(err) = crate::host::lazy_umount(dir) {
        tracing::warn!(path = %dir.display(), %err, "unmount device tmpfs");
    }
    // Only an empty directory is removed: never a still-mounted tmpfs.
    match fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(path = %dir.display(), %err, "remove device mount point"),
    }
}

/// The current host owner of a node (`None` if it is gone).
pub fn host_owner(node: &Node) -> Option<(u32, u32, u32)> {
    let m = fs::symlink_metadata(&node.host_path).ok()?;
    Some((m.uid(), m.gid(), m.mode() & 0o7777))
}

#[cfg(test)]
mod tests;
