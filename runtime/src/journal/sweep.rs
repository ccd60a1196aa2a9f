//! What `ranges gc` removes with a range it frees: the host-side views of
//! containers that vanished without `delete` (their state directory and
//! journal gone, as when a test removes its state root).
//!
//! A view is the freed pod's when the pod's host IDs own it: the rootfs
//! view (or a volume view) is id-mapped on the pod's range, so its root
//! directory's owner lies in that range. That finds the pod's members too,
//! whose ids the ledger never knew. gc frees a range only when no process
//! runs in a user namespace mapped on it, so nothing still uses these
//! views.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::step::{Step, Undo};
use crate::views::{self, Kind, Paths};

/// Detaches and removes the orphaned views, pins and mounts under root
/// `root`'s mount base whose owner lies in `host_uids`; then the mount
/// base itself if the root is gone and nothing is left in it. Returns the
/// container ids swept; a step that fails is logged and the rest go on.
pub fn orphans(root: &Path, host_uids: &idmap::IdRange) -> Vec<String> {
    let base = views::mount_base(root);
    let mut ids: Vec<String> = [Kind::Rootfs, Kind::Volumes, Kind::Hugepages, Kind::Devices]
        .iter()
        .filter_map(|k| fs::read_dir(base.join(k.name())).ok())
        .flat_map(|d| d.flatten())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids.dedup();
    let mut swept = Vec::new();
    for id in ids {
        if root.join(&id).exists() || super::path_of(root, &id).exists() {
            continue;
        }
        let paths = Paths::of(root, &id);
        if !owner(&paths).is_some_and(|uid| host_uids.contains(uid)) {
            continue;
        }
        let undo = Undo {
            root,
            id: &id,
            force: true,
            // The swept steps are views and mounts: no range among them
            // (`ranges gc` frees those itself).
            release: &|_, _, _| Ok(()),
            killed_create: None,
            init_start: None,
        };
        for step in steps(&paths) {
            if let Err(err) = step.undo(&undo) {
                tracing::warn!(%id, step = step.name(), %err, "sweep an orphaned view");
            }
        }
        tracing::info!(%id, root = %root.display(), "orphaned views swept");
        swept.push(id);
    }
    if !root.exists() {
        crate::views::remove_mount_dirs(root);
    }
    swept
}

/// The host uid owning a container's rootfs view, or its first volume
/// view.
fn owner(paths: &Paths) -> Option<u32> {
    if let Ok(m) = fs::metadata(&paths.view) {
        return Some(m.uid());
    }
    let first: PathBuf = fs::read_dir(&paths.volumes).ok()?.flatten().next()?.path();
    fs::metadata(first).ok().map(|m| m.uid())
}

/// The steps that remove a container's host-side paths by name.
fn steps(paths: &Paths) -> Vec<Step> {
    let mut steps = vec![
        Step::Views {
            dir: paths.dir.clone(),
        },
        Step::Volumes {
            dir: paths.volumes.clone(),
        },
        Step::Hugepages {
            mounts: paths.hugepages.clone(),
            cgroup2: None,
        },
        Step::Devices {
            dir: paths.devices.clone(),
        },
    ];
    for pin in [
        &paths.old_member_pin,
        &paths.host_pin,
        &paths.pod_pin,
        &paths.relay_pin,
    ] {
        steps.push(Step::Pin { path: pin.clone() });
    }
    steps
}
