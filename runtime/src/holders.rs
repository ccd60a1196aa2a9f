//! Who still uses a pod's host ID range: the containers of a state root
//! that belong to the pod, read from what create leaves on disk.
//!
//! A pod's range is held until its last container is gone, sandbox and
//! members alike: a tenant with a shared PID namespace can kill its pause
//! process, containerd then deletes the sandbox, and the members keep
//! running in the pod's user namespace. Rather than a reference count in
//! the ledger (a ledger write, with its fsyncs, on every member create),
//! the holders are derived when a range is about to be freed, under the
//! ledger lock, from the state root:
//!
//! - a created container's record (its pod; `journal::records`);
//! - `<root>/<id>/bundle/config.json`: the spec of a create between the
//!   move of its staged bundle and the write of its record;
//! - `<root>/.staging/<id>.<pid>/config.json`: the spec of a create in
//!   progress, or of one killed before it moved it (its init may live);
//! - `<root>/.journal/<id>.json` with a range step and any other: a
//!   container whose teardown is not complete (a step that failed to undo
//!   keeps the range: what is left of it, a view or a mount, is owned by
//!   the range's IDs). A teardown trims its journal to the range step
//!   before it releases the range, so two members deleted at once do not
//!   each count the other and both keep it.
//!
//! A member can only start while its sandbox runs (it joins the sandbox's
//! namespaces through `/proc/<sandbox pid>`), and every create writes one
//! of these before it clones a process, so once a deleted container's own
//! state is gone, a scan that finds none of them for the pod proves no
//! container of the pod is left in that root.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use idmap::PodMapping;
use oci_spec::runtime::Spec;

use crate::journal;
use crate::meta::{STAGED_BUNDLE, STAGING};
use crate::pod;

/// Where the containerd shim keeps its state roots, one per containerd
/// namespace (`shim/src/options.rs`, `DEFAULT_ROOT`).
pub const SHIM_ROOT_BASE: &str = "/run/containerd/cnfbox";
/// The CLI's default `--root`.
pub const CLI_ROOT: &str = "/run/cnfbox";

/// A state root as the ledger records it: canonical when it exists (a
/// symlinked or relative `--root` names the same pods), else absolute.
pub fn root_key(root: &Path) -> PathBuf {
    fs::canonicalize(root)
        .or_else(|_| std::path::absolute(root))
        .unwrap_or_else(|_| root.to_path_buf())
}

/// One container of a state root, as far as its files tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Its id.
    pub id: String,
    /// Its pod.
    pub pod: String,
    /// The pod's mapping, from a record (not from a staged spec).
    pub mapping: Option<PodMapping>,
    /// Which file said so.
    pub source: PathBuf,
}

/// Every container of `root` whose pod its files name. A missing root has
/// none; one that cannot be read is an error.
pub fn containers(root: &Path) -> io::Result<Vec<Container>> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    // A container deleted while we scan simply does not count.
    let journals = journal::journals(root);
    let recorded = journal::records_in(root, &journals);
    for entry in entries {
        let entry = entry?;
        let id = entry.file_name().to_string_lossy().into_owned();
        if id.starts_with('.') || recorded.iter().any(|r| r.id == id) {
            continue;
        }
        let kept = entry.path().join(STAGED_BUNDLE).join("config.json");
        if let Some(pod) = pod_of_spec(&id, &kept) {
            found.push(Container {
                id,
                pod,
                mapping: None,
                source: kept,
            });
        }
    }
    found.extend(recorded.into_iter().filter_map(|r| {
        Some(Container {
            pod: r.record.pod?,
            mapping: r.record.mapping,
            id: r.id,
            source: r.source,
        })
    }));
    found.extend(journaled(root, journals));
    let staging = root.join(STAGING);
    if let Ok(stages) = fs::read_dir(&staging) {
        for stage in stages.flatten() {
            let name = stage.file_name().to_string_lossy().into_owned();
            let Some((id, _pid)) = name.rsplit_once('.') else {
                continue;
            };
            let spec = stage.path().join("config.json");
            if let Some(pod) = pod_of_spec(id, &spec) {
                found.push(Container {
                    id: id.to_owned(),
                    pod,
                    mapping: None,
                    source: spec,
                });
            }
        }
    }
    Ok(found)
}

/// The containers of `root` whose journal (of `journals`, read from it)
/// still records their pod's range and something made with its IDs.
fn journaled(root: &Path, journals: Vec<journal::Journal>) -> Vec<Container> {
    let mut found = Vec::new();
    for j in journals {
        let id = j.id;
        if j.steps
            .iter()
            .all(|s| matches!(s, journal::Step::Range { .. }))
        {
            continue; // nothing but the range is left: it holds nothing
        }
        for step in j.steps {
            if let journal::Step::Range { pod } = step {
                found.push(Container {
                    id: id.clone(),
                    pod,
                    mapping: None,
                    source: journal::path_of(root, &id),
                });
            }
        }
    }
    found
}

fn pod_of_spec(id: &str, path: &Path) -> Option<String> {
    let spec = Spec::load(path).ok()?;
    Some(pod::role(id, spec.annotations().as_ref()).pod().to_owned())
}

/// Why pod `pod`'s range is still in use in state root `root`, or `None`
/// if no container of the pod is left there (or the root is gone).
/// `tearing_down`: the container whose teardown is freeing the range (its
/// journal stays on disk until the teardown ends): not its own holder.
pub fn in_root(root: &Path, pod: &str, tearing_down: Option<&str>) -> Option<String> {
    match containers(root) {
        Ok(all) => all
            .into_iter()
            .find(|c| c.pod == pod && Some(c.id.as_str()) != tearing_down)
            .map(|c| {
                format!(
                    "container {} of the pod is still in {} ({})",
                    c.id,
                    root.display(),
                    c.source.display()
                )
            }),
        Err(err) => Some(format!(
            "state root {} cannot be read ({err}), so its containers are unknown",
            root.display()
        )),
    }
}

/// The state roots that exist on this host by convention: the CLI's
/// default and the shim's, one per containerd namespace.
pub fn conventional_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from(CLI_ROOT)];
    if let Ok(entries) = fs::read_dir(SHIM_ROOT_BASE) {
        roots.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(pod: &str, kind: &str) -> String {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "annotations": {
                pod::CRI_SANDBOX_ID: pod,
                pod::CRI_CONTAINER_TYPE: kind,
            },
        })
        .to_string()
    }

    #[test]
    fn records_kept_bundles_and_stages_count() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        assert_eq!(
            in_root(&root.join("gone"), "p", None),
            None,
            "a missing root holds nothing"
        );
        // A member mid-create: only its staged spec.
        let stage = root.join(STAGING).join("m1.123");
        fs::create_dir_all(&stage).expect("mkdir");
        fs::write(stage.join("config.json"), spec_with("p", "container")).expect("spec");
        let why = in_root(root, "p", None).expect("staged member holds");
        assert!(why.contains("container m1"), "{why}");
        assert_eq!(in_root(root, "q", None), None);
        fs::remove_dir_all(&stage).expect("rm");
        // Between the move of the bundle and the record.
        let kept = root.join("m2").join(STAGED_BUNDLE);
        fs::create_dir_all(&kept).expect("mkdir");
        fs::write(kept.join("config.json"), spec_with("p", "container")).expect("spec");
        assert!(in_root(root, "p", None).is_some());
        // A junk directory names no pod.
        fs::remove_dir_all(root.join("m2")).expect("rm");
        fs::create_dir_all(root.join("junk")).expect("mkdir");
        assert_eq!(in_root(root, "p", None), None);
    }

    #[test]
    fn an_incomplete_teardown_holds_through_its_journal() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        let mut j = journal::Journal::begin(root, "m1").expect("journal");
        j.record(journal::Step::Range { pod: "p".into() })
            .expect("record");
        // Only the range (a create that just began, or a teardown about to
        // release it): nothing made with the range's IDs is left.
        assert_eq!(in_root(root, "p", None), None);
        j.record(journal::Step::Volumes {
            dir: root.join("volumes/m1"),
        })
        .expect("record");
        let why = in_root(root, "p", None).expect("the journal holds the range");
        assert!(
            why.contains("container m1") && why.contains(".journal"),
            "{why}"
        );
        assert_eq!(in_root(root, "q", None), None, "another pod's journal");
        assert_eq!(
            in_root(root, "p", Some("m1")),
            None,
            "the teardown freeing the range is not its own holder"
        );
        assert!(in_root(root, "p", Some("m2")).is_some());
        fs::write(journal::path_of(root, "bad"), b"{").expect("junk journal");
        assert!(
            in_root(root, "p", None).is_some(),
            "a junk journal hides none"
        );
    }
}
