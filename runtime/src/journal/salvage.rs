//! The journal of a container whose own cannot be read or was never
//! written (a disk that failed under it; a create killed before it wrote
//! anything), found from the names a create leaves on disk: its staged
//! specs and every host-side path of `views::Paths`. What `delete --force`
//! tears down when there is no journal to read. Not a record: nothing of
//! the container's own is rebuilt, only where its leftovers would be.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::{Journal, Step};
use crate::meta::{STAGED_BUNDLE, STAGING};
use crate::views::Paths;

/// The journal of container `id` found from what a create leaves, by name:
/// its staged specs (`.staging/<id>.<pid>/` of dead creates, or
/// `<id>/bundle/`), libcontainer's state dir and every host-side path of
/// `views::Paths`. What `delete --force` tears down for a container with
/// neither journal nor record (runc: deleting one that is gone succeeds).
pub fn by_names(root: &Path, id: &str, systemd: bool) -> Journal {
    let paths = Paths::of(root, id);
    let stages = stale_stages(root, id);
    let mut specs: Vec<Spec> = stages
        .iter()
        .filter_map(|s| Spec::load(s.join("config.json")).ok())
        .collect();
    if let Ok(spec) = Spec::load(root.join(id).join(STAGED_BUNDLE).join("config.json")) {
        specs.push(spec);
    }
    let mut cgroups: Vec<PathBuf> = specs
        .iter()
        .filter_map(|s| s.linux().as_ref().and_then(|l| l.cgroups_path().clone()))
        .collect();
    if cgroups.is_empty() {
        // Killed before the spec was staged: only the default path can
        // hold a cgroup (the hugetlb one is made before staging).
        cgroups.push(Path::new("/cnfbox").join(id));
    }
    cgroups.dedup();
    let mut pods: Vec<String> = specs
        .iter()
        .map(|s| {
            crate::pod::role(id, s.annotations().as_ref())
                .pod()
                .to_string()
        })
        .collect();
    pods.dedup();
    let mut steps: Vec<Step> = pods.into_iter().map(|pod| Step::Range { pod }).collect();
    // The pin of a member as an older cnfbox kept it.
    steps.push(Step::Pin {
        path: paths.old_member_pin,
    });
    steps.push(Step::Views { dir: paths.dir });
    steps.push(Step::Volumes { dir: paths.volumes });
    let hybrid = match crate::numa::hugetlb::enforcer(Path::new("/sys/fs/cgroup")) {
        crate::numa::hugetlb::Enforcer::Cgroup2(mount) => Some(mount),
        _ => None,
    };
    let hugetlb: Vec<Option<PathBuf>> = match &hybrid {
        Some(mount) => cgroups
            .iter()
            .map(|cg| Some(mount.join(cg.strip_prefix("/").unwrap_or(cg))))
            .collect(),
        None => vec![None],
    };
    steps.extend(hugetlb.into_iter().map(|cgroup2| Step::Hugepages {
        mounts: paths.hugepages.clone(),
        cgroup2,
    }));
    steps.push(Step::Devices { dir: paths.devices });
    steps.extend(stages.into_iter().map(|dir| Step::Stage { dir }));
    steps.extend(cgroups.into_iter().map(|cgroup_path| Step::Container {
        cgroup_path,
        systemd,
    }));
    Journal::unsaved(id, steps)
}

/// `.staging/<id>.<pid>` dirs whose create process is gone.
fn stale_stages(root: &Path, id: &str) -> Vec<PathBuf> {
    let prefix = format!("{id}.");
    let Ok(entries) = fs::read_dir(root.join(STAGING)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(&prefix)?.parse::<u32>().ok()?;
            // A create of the same id still running owns its stage.
            (!Path::new(&format!("/proc/{pid}")).exists()).then(|| e.path())
        })
        .collect()
}
