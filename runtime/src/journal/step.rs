//! The journal's steps and how each is undone.
//!
//! Every undo is idempotent and acts only on the paths its step names: a
//! step recorded but never made (the create died right after writing it)
//! undoes to nothing, and a step half made undoes what is there. Mount
//! points are removed with `rmdir`/`unlink` only, never recursively: an
//! unmount that failed leaves the directory and an error, never a walk
//! into the image or a volume below it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use serde::{Deserialize, Serialize};

use crate::host::lazy_umount;
use crate::net::PodNetwork;
use crate::views;

/// What a create made (or was about to make), in the order it made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The pod's host ID range, granted, registered or joined: freed once
    /// no container of the pod is left (see `profile::release_unused`).
    Range { pod: String },
    /// The container's `rootfs/<id>/`: the rootfs view, overlay layer
    /// staging, a member's netns pin.
    Views { dir: PathBuf },
    /// A namespace pin held during create (as an older cnfbox kept a
    /// member's, `ns/<id>-net`).
    Pin { path: PathBuf },
    /// `volumes/<id>/`: the id-mapped views of the spec's bind mounts.
    Volumes { dir: PathBuf },
    /// `hugepages/<id>/` (the hugetlbfs mounts) and the hugetlb cgroup
    /// cnfbox makes on a hybrid host's cgroup2 tree.
    Hugepages {
        mounts: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cgroup2: Option<PathBuf>,
    },
    /// `devices/<id>/`: the tmpfs holding the container's device nodes.
    Devices { dir: PathBuf },
    /// `.staging/<id>.<pid>/`: the staged spec (moved into the state dir
    /// once created).
    Stage { dir: PathBuf },
    /// libcontainer's container: its init, its cgroup on every hierarchy
    /// and the state dir `<root>/<id>`.
    Container { cgroup_path: PathBuf, systemd: bool },
    /// The pod's secondary interfaces and the namespace pins `net::attach`
    /// makes (recorded by it before it changes anything).
    Network { pod: String, net: PodNetwork },
}

/// Where every cgroup cnfbox makes lives.
const CGROUP_TREE: &str = "/sys/fs/cgroup";

/// Errors undoing one step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{path} is not under cnfbox's own paths ({allowed}): not undone (no create of this cnfbox recorded it)")]
    Outside { path: PathBuf, allowed: String },
    #[error("unmount {path}")]
    Umount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("list {path}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("release the range of pod {pod}")]
    Release {
        pod: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("remove the hugetlb cgroup")]
    Hugetlb(#[source] crate::numa::hugetlb::HugetlbError),
    #[error("load the container's state from {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: Box<libcontainer::error::LibcontainerError>,
    },
    #[error("lock the container's state")]
    StateLock(#[source] crate::state_lock::StateLockError),
    #[error("kill what the killed create left running")]
    Orphans(#[source] super::orphans::OrphanError),
    #[error("delete the container (init, cgroup, state dir)")]
    Delete(#[source] Box<libcontainer::error::LibcontainerError>),
    #[error("open cgroup {path}")]
    OpenCgroup {
        path: PathBuf,
        #[source]
        source: anyhow::Error,
    },
    #[error("remove cgroup {path}: {reason}")]
    RemoveCgroup { path: PathBuf, reason: String },
    #[error("give the pod's interfaces back to the host")]
    Network(#[source] Box<crate::net::NetError>),
}

/// What an undo needs besides its step.
#[derive(Clone, Copy)]
pub struct Undo<'a> {
    pub root: &'a Path,
    pub id: &'a str,
    /// `delete --force`, a failed create or start: a running init is
    /// killed, interfaces that cannot go back are dropped with a warning.
    pub force: bool,
    /// Frees the pod's range once nothing holds it (`Step::Range`).
    pub release: super::Release<'a>,
    /// The start (clock ticks after boot) of the create that made the
    /// journal and was killed: what it left running is killed first
    /// (`orphans`).
    pub killed_create: Option<u64>,
    /// The init's start time from the container's record (`check_init`).
    pub init_start: Option<u64>,
}

impl Step {
    /// The host paths undoing the step unmounts or removes.
    fn paths(&self) -> Vec<&Path> {
        match self {
            Step::Range { .. } | Step::Container { .. } => Vec::new(),
            Step::Views { dir }
            | Step::Volumes { dir }
            | Step::Devices { dir }
            | Step::Stage { dir }
            | Step::Hugepages { mounts: dir, .. } => vec![dir.as_path()],
            Step::Pin { path } => vec![path.as_path()],
            Step::Network { net, .. } => [&net.host_pin, &net.pod_pin]
                .into_iter()
                .chain(net.relay_pin.as_ref())
                .map(|p| p.as_path())
                .collect(),
        }
    }

    /// Refuses a step naming a path outside cnfbox's own: strictly below
    /// the state root or its mount base (`views`), or, for the hugetlb
    /// cgroup, the cgroup tree. A journal is a file in the state root; one planted there
    /// (a state root another user could write, see `commands::check_root`)
    /// must not make root's `delete --force` remove or unmount whatever it
    /// names. Paths with `..` are refused outright (they could climb out of
    /// a base they start with).
    fn check_paths(&self, u: &Undo<'_>) -> Result<(), StepError> {
        let canonical = fs::canonicalize(u.root).ok();
        let mut bases = vec![u.root.to_path_buf()];
        bases.extend(canonical.filter(|c| c != u.root));
        bases.push(views::mount_base(u.root));
        let mut named: Vec<(&Path, Vec<PathBuf>)> = self
            .paths()
            .into_iter()
            .map(|p| (p, bases.clone()))
            .collect();
        if let Step::Hugepages {
            cgroup2: Some(cg), ..
        } = self
        {
            named.push((cg, vec![PathBuf::from(CGROUP_TREE)]));
        }
        for (path, allowed) in named {
            let climbs = path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
            let below = |b: &PathBuf| path.starts_with(b) && path != b.as_path();
            if climbs || !allowed.iter().any(below) {
                return Err(StepError::Outside {
                    path: path.to_path_buf(),
                    allowed: allowed
                        .iter()
                        .map(|b| b.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(())
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Range { .. } => "range",
            Step::Views { .. } => "views",
            Step::Pin { .. } => "pin",
            Step::Volumes { .. } => "volumes",
            Step::Hugepages { .. } => "hugepages",
            Step::Devices { .. } => "devices",
            Step::Stage { .. } => "stage",
            Step::Container { .. } => "container",
            Step::Network { .. } => "network",
        }
    }

    /// Undoes the step; `Ok(Some(w))` when it is undone with a warning
    /// the user should see.
    pub fn undo(&self, u: &Undo<'_>) -> Result<Option<String>, StepError> {
        self.check_paths(u)?;
        match self {
            Step::Range { pod } => {
                (u.release)(u.root, pod, u.id)
                    .map(|()| None)
                    .map_err(|source| StepError::Release {
                        pod: pod.clone(),
                        source,
                    })
            }
            Step::Views { dir } => undo_views(dir).map(|()| None),
            Step::Volumes { dir } | Step::Hugepages { mounts: dir, .. } => {
                detach_children(dir)?;
                if let Step::Hugepages {
                    cgroup2: Some(cg), ..
                } = self
                {
                    let cg = crate::numa::hugetlb::Cgroup2 {
                        dir: cg.clone(),
                        limits: Vec::new(),
                    };
                    cg.remove().map_err(StepError::Hugetlb)?;
                }
                Ok(None)
            }
            Step::Devices { dir } => detach(dir).map(|()| None),
            Step::Pin { path } => detach(path).map(|()| None),
            Step::Stage { dir } => match fs::remove_dir_all(dir) {
                Ok(()) => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(StepError::Remove {
                    path: dir.clone(),
                    source,
                }),
            },
            Step::Container {
                cgroup_path,
                systemd,
            } => undo_container(u, cgroup_path, *systemd),
            Step::Network { pod, net } => match crate::net::detach(pod, net) {
                Ok(()) => Ok(None),
                Err(err) if u.force => {
                    tracing::warn!(%pod, %err, "give back pod interfaces (forced: pins dropped)");
                    crate::net::unpin_all(net);
                    Ok(Some(format!(
                        "pod {pod}: its interfaces could not be given back ({err}); the namespace pins were dropped"
                    )))
                }
                Err(err) => Err(StepError::Network(Box::new(err))),
            },
        }
    }
}

/// Lazily unmounts `path` and removes the mount point (a directory or, for
/// a namespace pin, a file); one already gone is fine.
fn detach(path: &Path) -> Result<(), StepError> {
    lazy_umount(path).map_err(|source| StepError::Umount {
        path: path.to_path_buf(),
        source,
    })?;
    let removed = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StepError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Detaches every entry of `dir`, then `dir` itself.
fn detach_children(dir: &Path) -> Result<(), StepError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StepError::List {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut first = None;
    for entry in entries.flatten() {
        if let Err(err) = detach(&entry.path()) {
            first.get_or_insert(err);
        }
    }
    match first {
        Some(err) => Err(err),
        None => detach(dir),
    }
}

/// The container's `rootfs/<id>/`: its member pin, overlay layers, rootfs
/// view, then the directory (which an older cnfbox used as the view).
fn undo_views(dir: &Path) -> Result<(), StepError> {
    if is_mount_point(dir)? {
        // The view itself (an older cnfbox's layout): nothing of cnfbox's
        // is inside, only the image.
        return detach(dir);
    }
    detach(&dir.join(views::MEMBER_PIN))?;
    detach_children(&dir.join(views::LAYERS))?;
    detach(&dir.join(views::VIEW))?;
    detach(dir)
}

/// Whether `path` is a mount point in this mount namespace (by
/// `/proc/self/mountinfo`: a bind of the same filesystem has its parent's
/// `st_dev`, so the device number cannot tell).
pub(super) fn is_mount_point(path: &Path) -> Result<bool, StepError> {
    use procfs::FromRead;
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    let mounts =
        procfs::process::MountInfos::from_file(MOUNTINFO).map_err(|e| StepError::List {
            path: MOUNTINFO.into(),
            source: io::Error::other(e),
        })?;
    Ok(mounts.0.iter().any(|m| m.mount_point == path))
}

/// libcontainer's container of `u.id`: deleted through its own state when
/// it got that far (kills the init, runs poststop hooks, removes the
/// cgroup and the state dir), then whatever cgroup and state dir are left.
fn undo_container(
    u: &Undo<'_>,
    cgroup_path: &Path,
    systemd: bool,
) -> Result<Option<String>, StepError> {
    let dir = u.root.join(u.id);
    let mut warning = None;
    // No other cnfbox reads the state while libcontainer marks it stopped
    // and the directory goes; the lock file goes with it.
    let lock =
        crate::state_lock::StateLock::exclusive(u.root, u.id).map_err(StepError::StateLock)?;
    if let Some(since) = u.killed_create {
        // Before anything of the container goes: they would make it again.
        let lock = crate::state_lock::path(u.root, u.id);
        super::orphans::kill(Path::new("/proc"), &lock, since).map_err(StepError::Orphans)?;
    }
    let loaded = dir
        .join("state.json")
        .is_file()
        .then(|| Container::load(dir.clone()));
    match loaded {
        Some(Ok(mut c)) => {
            crate::state_lock::check_init(&mut c, u.init_start, Path::new("/proc"));
            // libcontainer removes the cgroup it made on every hierarchy.
            warning =
                delete_container(&mut c, u.force).map_err(|e| StepError::Delete(Box::new(e)))?;
        }
        Some(Err(err)) if u.force => {
            // Killed while libcontainer wrote it: what runs is found in
            // the cgroup instead.
            tracing::warn!(id = %u.id, %err, "unreadable container state: removed through its cgroup");
            remove_cgroup(cgroup_path, systemd, u.id)?;
        }
        Some(Err(source)) => {
            return Err(StepError::Load {
                path: dir,
                source: Box::new(source),
            })
        }
        None => {
            // Killed (or failed) before libcontainer recorded its state:
            // the cgroup may exist all the same.
            remove_cgroup(cgroup_path, systemd, u.id)?;
        }
    }
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(StepError::Remove { path: dir, source }),
    }
    lock.remove_file().map_err(StepError::StateLock)?;
    Ok(warning)
}

/// Removes the container's cgroup on every hierarchy, killing what is
/// still in it (a failed init may take a moment to exit on a loaded node).
fn remove_cgroup(path: &Path, systemd: bool, id: &str) -> Result<(), StepError> {
    use libcgroups::common::CgroupManager;
    const RETRIES: u32 = 100;
    let manager = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: path.to_path_buf(),
        systemd_cgroup: systemd,
        container_name: id.to_string(),
    })
    .map_err(|e| StepError::OpenCgroup {
        path: path.to_path_buf(),
        source: anyhow::anyhow!(e.to_string()),
    })?;
    let mut tries = 0;
    loop {
        match manager.remove() {
            Ok(()) => return Ok(()),
            Err(err) if tries >= RETRIES => {
                return Err(StepError::RemoveCgroup {
                    path: path.to_path_buf(),
                    reason: err.to_string(),
                })
            }
            Err(_) => {
                tries += 1;
                for pid in manager.get_all_pids().unwrap_or_default() {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// `Container::delete`, patient with a cgroup that is slow to empty, and
/// finished when a poststop hook fails.
///
/// libcontainer SIGKILLs the container's processes and then gives their
/// cgroup about 100 ms to empty (libcgroups `delete_with_retry`: 4 tries).
/// On a loaded host the killed processes of a pod (pid namespace, mounts,
/// id-mapped views to tear down) take longer to exit, and `delete --force`
/// failed with "could not delete" and left the container half-deleted. Each
/// retry kills whatever is still in the cgroup again.
///
/// libcontainer runs the poststop hooks after removing the cgroup and
/// returns at the first that fails, before it removes the state dir: every
/// later `delete`, `--force` too, failed the same way and the container
/// (state dir, and the views and range the caller tears down after) stayed
/// for good. runc logs a failing poststop hook as a warning and deletes the
/// container; so does cnfbox: the state dir is removed here and the
/// warning, naming the hooks, is returned for the caller to print. Any other
/// error is returned at once.
pub fn delete_container(
    c: &mut Container,
    force: bool,
) -> Result<Option<String>, libcontainer::error::LibcontainerError> {
    use libcontainer::error::LibcontainerError;
    const RETRIES: u32 = 100;
    let mut tries = 0;
    loop {
        match c.delete(force) {
            Err(LibcontainerError::CgroupManager(err)) if tries < RETRIES => {
                tries += 1;
                tracing::debug!(id = %c.id(), %err, tries, "cgroup not empty yet: retry delete");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(LibcontainerError::Hook(err)) => {
                let hooks = crate::hooks::poststop_paths(&c.root);
                let warning = format!(
                    "container {}: poststop hook {hooks} failed: {err}; the container is deleted anyway",
                    c.id()
                );
                tracing::warn!(id = %c.id(), %hooks, %err, "poststop hook failed; container deleted anyway");
                std::fs::remove_dir_all(&c.root).map_err(LibcontainerError::OtherIO)?;
                return Ok(Some(warning));
            }
            other => return other.map(|()| None),
        }
    }
}
