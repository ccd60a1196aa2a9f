//! The one teardown: a journal's steps undone in reverse.

use std::fmt;
use std::path::Path;

use super::step::{Step, StepError, Undo};
use super::{Journal, JournalError};

/// A step teardown could not undo, and why.
#[derive(Debug)]
pub struct Failed {
    pub step: Step,
    pub error: StepError,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step.name(), self.error)?;
        let mut source = std::error::Error::source(&self.error);
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Errors of [`teardown`].
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("container {id}: could not undo {}; kept in its journal for the next `delete --force`", list(.failed))]
    Incomplete { id: String, failed: Vec<Failed> },
    #[error("container {id} is still being created by cnfbox pid {pid}")]
    Creating { id: String, pid: i32 },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn list(failed: &[Failed]) -> String {
    failed
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Undoes `journal`'s steps of state root `root` in reverse order and
/// removes it; returns the warnings to show (a failing poststop hook, a
/// forced network give-back).
///
/// Without `force` the first failure stops the teardown: what is left
/// stays as it was, for a retry (an interface that cannot go back to the
/// host keeps its pod). With `force` every step is tried. Either way a step
/// that fails stays in the journal and is reported, and the pod's range is
/// kept while anything else of the container could not be undone: a view
/// or mount still there maps those host ids, which must not go to another
/// pod.
///
/// The journal on disk is rewritten only when something is left: a
/// teardown killed half-way leaves the whole journal, and running it again
/// undoes what is left (every undo is idempotent). So a full disk never
/// stops a teardown.
pub fn teardown(
    root: &Path,
    mut journal: Journal,
    force: bool,
    release: super::Release<'_>,
) -> Result<Vec<String>, TeardownError> {
    if let Some(c) = journal.live_creator() {
        return Err(TeardownError::Creating {
            id: journal.id.clone(),
            pid: c.pid,
        });
    }
    let id = journal.id.clone();
    let undo = Undo {
        root,
        id: &id,
        force,
        release,
        // A creator recorded and not alive: the create was killed.
        killed_create: journal.creator.map(|c| c.start),
        init_start: journal.record.as_ref().and_then(|r| r.init_start),
    };
    let mut warnings = Vec::new();
    let mut failed: Vec<Failed> = Vec::new();
    let mut kept = Vec::new();
    while let Some(step) = journal.steps.pop() {
        if !failed.is_empty() && matches!(step, Step::Range { .. }) {
            tracing::warn!(%id, "pod range kept: the container's teardown is incomplete");
            kept.push(step);
            continue;
        }
        if matches!(step, Step::Range { .. }) {
            // All else is undone: the journal on disk says so before the
            // range is released, so a sibling's teardown running now no
            // longer counts this container as a holder (`holders`).
            let mut left = journal.clone();
            left.steps.push(step.clone());
            // The container is gone: its record with it.
            left.record = None;
            if let Err(err) = left.save() {
                tracing::warn!(%id, %err, "journal not trimmed to its range: a sibling deleted now may keep the pod's range");
            }
        }
        match step.undo(&undo) {
            Ok(warning) => warnings.extend(warning),
            Err(error) => {
                tracing::warn!(%id, step = step.name(), err = %error, "teardown step failed");
                failed.push(Failed { step, error });
                if !force {
                    break;
                }
            }
        }
    }
    if failed.is_empty() {
        journal.remove()?;
        crate::views::prune_empty(root);
        return Ok(warnings);
    }
    // What stays, in create order: the steps not tried, then the failed
    // and kept ones.
    let mut left: Vec<Step> = failed.iter().map(|f| f.step.clone()).collect();
    left.append(&mut kept);
    left.sort_by_key(order);
    journal.steps.extend(left);
    if !journal
        .steps
        .iter()
        .any(|s| matches!(s, Step::Container { .. }))
    {
        // libcontainer's state is gone: so is the container, whatever else
        // of it is left to undo.
        journal.record = None;
    }
    if let Err(err) = journal.save() {
        tracing::warn!(%id, %err, "journal of the incomplete teardown not saved: it names more than is left");
    }
    Err(TeardownError::Incomplete { id, failed })
}

/// A step's place in create's order (for what teardown keeps).
fn order(step: &Step) -> u8 {
    match step {
        Step::Range { .. } => 0,
        Step::Views { .. } | Step::Pin { .. } => 1,
        Step::Volumes { .. } => 2,
        Step::Hugepages { .. } => 3,
        Step::Devices { .. } => 4,
        Step::Stage { .. } => 5,
        Step::Container { .. } => 6,
        Step::Network { .. } => 7,
    }
}
