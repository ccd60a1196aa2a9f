//! Journals rebuilt for containers that have none: one created by a cnfbox
//! from before the journal (from its record, `cnfbox.json`), or one whose
//! create died before an older cnfbox wrote any record (from the on-disk
//! names of `views::Paths` and what the create staged). Both go through the
//! same [`teardown`](super::teardown) as a journal written by `create`.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::{Journal, Step};
use crate::meta::{ContainerMeta, STAGED_BUNDLE, STAGING};
use crate::views::Paths;

/// The journal of a container created by a cnfbox that kept none.
pub fn from_meta(root: &Path, id: &str, meta: &ContainerMeta) -> Journal {
    let paths = Paths::of(root, id);
    let mut steps = Vec::new();
    if let Some(pod) = &meta.pod {
        steps.push(Step::Range { pod: pod.clone() });
    }
    steps.push(Step::Views { dir: paths.dir });
    steps.push(Step::Volumes { dir: paths.volumes });
    steps.push(Step::Hugepages {
        mounts: paths.hugepages,
        cgroup2: meta.hugepages.as_ref().and_then(|h| h.cgroup2.clone()),
    });
    steps.push(Step::Devices { dir: paths.devices });
    steps.push(Step::Container {
        cgroup_path: meta.cgroup_path.clone(),
        systemd: meta.systemd,
    });
    if let Some(net) = &meta.network {
        steps.push(Step::Network {
            pod: meta.pod.clone().unwrap_or_else(|| "-".into()),
            net: net.clone(),
        });
    }
    Journal::unsaved(id, steps)
}

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
    let hybrid = match crate::hugetlb::enforcer(Path::new("/sys/fs/cgroup")) {
        crate::hugetlb::Enforcer::Cgroup2(mount) => Some(mount),
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
