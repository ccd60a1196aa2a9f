//! Containers created by the previous release of cnfbox, which kept the
//! container's record in `<root>/<id>/cnfbox.json` beside libcontainer's
//! state (and, one release earlier, kept no journal at all). This is the
//! only code that knows that layout: it reads such a record as the one the
//! journal holds now, and rebuilds the journal of a container that has
//! none. Nothing is rewritten: a container of the previous release is read
//! this way until it is deleted, and its files go with its state dir.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Journal, Step};
use crate::meta::ContainerMeta;
use crate::views::Paths;

/// The previous release's record, in the container's state dir.
const FILE: &str = "cnfbox.json";

/// Errors reading a previous release's record.
#[derive(Debug, thiserror::Error)]
pub enum PreviousError {
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Where container `id`'s record of the previous release would be.
pub fn path_of(root: &Path, id: &str) -> PathBuf {
    root.join(id).join(FILE)
}

/// Container `id`'s record as the previous release kept it, if there is
/// one.
pub fn record(root: &Path, id: &str) -> Result<Option<ContainerMeta>, PreviousError> {
    let path = path_of(root, id);
    let raw = match fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PreviousError::Read { path, source }),
    };
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|source| PreviousError::Parse { path, source })
}

/// The ids of the containers of `root` with a previous release's record.
pub fn ids(root: &Path) -> Vec<String> {
    fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_owned();
            (!id.starts_with('.') && e.path().join(FILE).is_file()).then_some(id)
        })
        .collect()
}

/// The journal of container `id` created by the release before the
/// previous one, which kept a record and no journal: what its teardown
/// undoes, rebuilt from the record and the paths `views::Paths` names.
pub fn journal(root: &Path, id: &str) -> Result<Option<Journal>, PreviousError> {
    Ok(record(root, id)?.map(|meta| from_record(root, id, &meta)))
}

fn from_record(root: &Path, id: &str, meta: &ContainerMeta) -> Journal {
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
    let mut journal = Journal::unsaved(id, steps);
    journal.record = Some(meta.clone());
    journal
}
