//! The create journal: what `create` made for a container, written down
//! before each thing is made, so that one [`teardown`] undoes it in reverse
//! for every way a container goes: a failed create, a failed start,
//! `delete`, `delete --force`, and `delete --force` after a create that was
//! killed half-way.
//!
//! `create` plans first (pure checks of the spec and the host, nothing is
//! made), then applies step by step. Each step is a [`Step`] naming the
//! paths or records it is about to fill; it is saved (`<state
//! root>/.journal/<id>.json`, written atomically) before the step runs, so
//! a SIGKILL at any point leaves a journal whose undo covers what exists.
//! Every undo is idempotent: a step recorded but never made undoes to
//! nothing. The journal outlives `create`: it is the container's teardown
//! record until `delete` has undone every step, and only then removed.
//!
//! The journal of a create still running names its process
//! ([`Creator`]): `delete` refuses it instead of tearing down under it.
//! Once the container exists the journal also holds its record (what
//! create decided: pod, mapping, views, NUMA node...), written with the
//! same save that says the create is done: the one record of a container
//! (`record`).

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod orphans;
pub mod previous;
mod record;
mod salvage;
mod step;
pub mod sweep;
mod teardown;
#[cfg(test)]
mod tests;

pub use record::{journals, record, records, records_in};
pub use salvage::by_names;
pub use step::Step;
pub use teardown::teardown;

/// The directory of journals under a state root (host root only).
pub const DIR: &str = ".journal";

/// Errors reading or writing a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("create journal directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container {id} already exists: a create of it left its journal {path} (`cnfbox delete --force {id}` clears what it made)")]
    Exists { id: String, path: PathBuf },
    #[error("start journal {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write journal {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read journal {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse journal {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("remove journal {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The `cnfbox create` process writing a journal: its pid and start time
/// (clock ticks after boot, `/proc/<pid>/stat` field 22), which tell it
/// apart from a later process that reused the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creator {
    pub pid: i32,
    pub start: u64,
}

impl Creator {
    /// This process, or `None` where `/proc` cannot say (then no later
    /// command can tell whether it lives, and none waits for it).
    pub fn myself() -> Option<Self> {
        let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
        Some(Self {
            pid: stat.pid,
            start: stat.starttime,
        })
    }

    /// Whether that very process still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        procfs::process::Process::new(self.pid)
            .and_then(|p| p.stat())
            .is_ok_and(|s| s.starttime == self.start && s.state != 'Z' && s.state != 'X')
    }
}

/// One container's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    /// The create writing it; `None` once the container was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<Creator>,
    /// What was (about to be) made, in the order it was made.
    pub steps: Vec<Step>,
    /// The container's record, from the end of its create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<crate::meta::ContainerMeta>,
    /// Where it is kept; `None` for one rebuilt from an older cnfbox's
    /// record (`previous`) or from names (`by_names`), which has no file.
    #[serde(skip)]
    path: Option<PathBuf>,
}

/// `<root>/.journal/<id>.json`.
pub fn path_of(root: &Path, id: &str) -> PathBuf {
    root.join(DIR).join(format!("{id}.json"))
}

impl Journal {
    /// Starts the journal of container `id`: fails if one exists (a create
    /// of the same id runs, or one died and was not cleaned up).
    pub fn begin(root: &Path, id: &str) -> Result<Self, JournalError> {
        let dir = root.join(DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| JournalError::Dir {
                path: dir.clone(),
                source,
            })?;
        let path = path_of(root, id);
        let journal = Self {
            id: id.to_string(),
            creator: Creator::myself(),
            steps: Vec::new(),
            record: None,
            path: Some(path.clone()),
        };
        let mut file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(JournalError::Exists {
                    id: id.to_string(),
                    path,
                })
            }
            Err(source) => return Err(JournalError::Create { path, source }),
        };
        let written = serde_json::to_vec(&journal)
            .map_err(io::Error::other)
            .and_then(|body| file.write_all(&body));
        if let Err(source) = written {
            // A full disk: nothing was made, and no empty journal stays.
            let _ = fs::remove_file(&path);
            return Err(JournalError::Write { path, source });
        }
        Ok(journal)
    }

    /// The journal of container `id`, if it has one.
    pub fn load(root: &Path, id: &str) -> Result<Option<Self>, JournalError> {
        let path = path_of(root, id);
        let raw = match fs::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(JournalError::Read { path, source }),
        };
        let mut journal: Self =
            serde_json::from_slice(&raw).map_err(|source| JournalError::Parse {
                path: path.clone(),
                source,
            })?;
        journal.path = Some(path);
        Ok(Some(journal))
    }

    /// A journal with no file (`previous`, `by_names`).
    fn unsaved(id: &str, steps: Vec<Step>) -> Self {
        Self {
            id: id.to_string(),
            creator: None,
            steps,
            record: None,
            path: None,
        }
    }

    /// Records `step` before it is made.
    pub fn record(&mut self, step: Step) -> Result<(), JournalError> {
        self.steps.push(step);
        self.save()
    }

    /// Records the pod's network as `net::attach` is about to make it
    /// (replacing what an earlier call recorded).
    pub fn record_network(&mut self, step: Step) -> Result<(), JournalError> {
        self.steps.retain(|s| !matches!(s, Step::Network { .. }));
        self.record(step)
    }

    /// Drops the last step: it turned out not to be this create's (see
    /// `Step::Container`).
    pub fn forget_last(&mut self) -> Result<(), JournalError> {
        self.steps.pop();
        self.save()
    }

    /// The container exists: its record is written and no create is
    /// writing the journal any more (one save: a reader sees both or
    /// neither).
    pub fn commit(&mut self, record: crate::meta::ContainerMeta) -> Result<(), JournalError> {
        self.creator = None;
        self.record = Some(record);
        self.save()
    }

    /// The create still writing it, if it is alive.
    pub fn live_creator(&self) -> Option<Creator> {
        self.creator.filter(|c| c.alive())
    }

    /// Writes the journal atomically (temp file + rename).
    fn save(&self) -> Result<(), JournalError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("json.tmp");
        let wrap = |source| JournalError::Write {
            path: path.clone(),
            source,
        };
        let body = serde_json::to_vec(self).map_err(|e| wrap(io::Error::other(e)))?;
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| file.write_all(&body))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(err) = written {
            // A full disk: the journal on disk stays as it was.
            let _ = fs::remove_file(&tmp);
            return Err(wrap(err));
        }
        Ok(())
    }

    /// Makes this (rebuilt) journal replace the file of container `id`'s
    /// that could not be read: its teardown removes that file too.
    pub fn replacing(mut self, root: &Path, id: &str) -> Self {
        self.path = Some(path_of(root, id));
        self
    }

    /// Removes the journal: everything it named is undone.
    fn remove(&self) -> Result<(), JournalError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Remove {
                path: path.clone(),
                source,
            }),
        }
    }
}

/// What `apply` is about to make, told to its [`Recorder`] first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Making {
    /// The pod's range (granted, registered, or the sandbox's joined).
    Range { pod: String },
    /// The container's `rootfs/<id>/` with its rootfs view and pin.
    Views { dir: PathBuf },
    /// The container's `volumes/<id>/`.
    Volumes { dir: PathBuf },
}

/// Where `apply` writes down what it is about to make (create's journal).
pub trait Recorder {
    fn making(&mut self, what: Making) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// How teardown frees a pod's range (`profile::release_range`): given by
/// the caller, since the range's holders are read from the journals.
pub type Release<'a> =
    &'a dyn Fn(&Path, &str, &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

impl Recorder for Journal {
    fn making(&mut self, what: Making) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let step = match what {
            Making::Range { pod } => Step::Range { pod },
            Making::Views { dir } => Step::Views { dir },
            Making::Volumes { dir } => Step::Volumes { dir },
        };
        self.record(step).map_err(Into::into)
    }
}

/// The ids of the containers of state root `root` that have a journal.
pub fn ids(root: &Path) -> std::collections::HashSet<String> {
    fs::read_dir(root.join(DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect()
}

/// The pod networks recorded for the containers of state root `root` other
/// than `own`, as `(pod, network)`: from their journals, and for containers
/// of an older cnfbox without one, from their records (`previous`). What
/// `net::attach` checks a new pod's interfaces against (under its lock).
pub fn networks(root: &Path, own: &str) -> Vec<(String, crate::net::PodNetwork)> {
    let mut found = Vec::new();
    let journaled = ids(root);
    for id in &journaled {
        if id == own {
            continue;
        }
        let Ok(Some(j)) = Journal::load(root, id) else {
            continue;
        };
        for step in j.steps {
            if let Step::Network { pod, net } = step {
                found.push((pod, net));
            }
        }
    }
    for id in previous::ids(root) {
        if id == own || journaled.contains(&id) {
            continue;
        }
        if let Ok(Some(record)) = previous::record(root, &id) {
            if let Some(net) = record.network {
                found.push((record.pod.unwrap_or(id), net));
            }
        }
    }
    found
}
