//! A container's one record: what create decided and made, kept in its
//! journal from the moment the container exists (`Journal::commit`) until
//! its teardown is done. Every reader (state, inspect, exec, update, the
//! range's holders, a member finding its sandbox) reads it here; a
//! container of the previous release is read from its old file
//! (`previous`).

use std::path::{Path, PathBuf};

use super::previous::{self, PreviousError};
use super::{Journal, JournalError};
use crate::meta::ContainerMeta;

/// Errors reading a container's record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("container {id} in {root} has no record: its create has not finished, or it is not a cnfbox container")]
    Missing { id: String, root: PathBuf },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Previous(#[from] PreviousError),
}

/// A container's record and the file it was read from.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: String,
    pub record: ContainerMeta,
    pub source: PathBuf,
}

/// The record of container `id` of state root `root`.
pub fn record(root: &Path, id: &str) -> Result<ContainerMeta, RecordError> {
    if let Some(record) = Journal::load(root, id)?.and_then(|j| j.record) {
        return Ok(record);
    }
    previous::record(root, id)?.ok_or_else(|| RecordError::Missing {
        id: id.to_string(),
        root: root.to_path_buf(),
    })
}

/// Every journal of `root`. A journal removed while this reads is left
/// out; one that cannot be read or parsed (root wrote it atomically) is
/// left out with a warning.
pub fn journals(root: &Path) -> Vec<Journal> {
    let mut found = Vec::new();
    for id in super::ids(root) {
        match Journal::load(root, &id) {
            Ok(Some(j)) => found.push(j),
            Ok(None) => {}
            Err(err) => tracing::warn!(root = %root.display(), %id, %err, "journal unreadable"),
        }
    }
    found
}

/// Every container of `root` that has a record. A container deleted while
/// this reads, or whose file cannot be read, is left out (with a warning
/// for the latter).
pub fn records(root: &Path) -> Vec<Recorded> {
    records_in(root, &journals(root))
}

/// [`records`], from `journals` already read from `root`.
pub fn records_in(root: &Path, journals: &[Journal]) -> Vec<Recorded> {
    let mut found: Vec<Recorded> = journals
        .iter()
        .filter_map(|j| {
            Some(Recorded {
                id: j.id.clone(),
                record: j.record.clone()?,
                source: super::path_of(root, &j.id),
            })
        })
        .collect();
    for id in previous::ids(root) {
        if found.iter().any(|r| r.id == id) {
            continue;
        }
        match previous::record(root, &id) {
            Ok(Some(record)) => found.push(Recorded {
                source: previous::path_of(root, &id),
                id,
                record,
            }),
            Ok(None) => {}
            Err(err) => tracing::warn!(root = %root.display(), %id, %err, "record unreadable"),
        }
    }
    found
}
