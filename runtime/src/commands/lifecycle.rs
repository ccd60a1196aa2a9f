//! `start`, `kill`, `delete`, `pause`, `resume`.

use anyhow::Context as _;
use libcontainer::container::ContainerStatus;
use libcontainer::signal::Signal;

use super::{check_id, container_dir, load, Ctx};
use crate::cli::Kill;
use crate::journal::{self, Journal};
use crate::state_lock::StateLock;

pub fn start(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let (mut c, _) = load(ctx, id)?;
    let _lock = StateLock::exclusive(&ctx.root, id)?;
    c.start().with_context(|| format!("start container {id}"))
}

/// Parses a signal name (`TERM`, `SIGTERM`) or number (`15`).
pub fn parse_signal(s: &str) -> anyhow::Result<Signal> {
    Signal::try_from(s)
        .map_err(|_| anyhow::anyhow!("invalid signal {s:?}: use a name like TERM or a number 1-31"))
}

pub fn kill(ctx: &Ctx, a: &Kill) -> anyhow::Result<()> {
    let signal = parse_signal(&a.signal)?;
    let (mut c, _) = load(ctx, &a.container_id)?;
    let before = c.status();
    // runc's words ("container not running"): containerd's runc shim reads
    // them as "process already finished" and a pod stop goes on. With
    // `--all` the signal still reaches whatever is left in the cgroup.
    if before == ContainerStatus::Stopped && !a.all {
        return Err(super::NotRunning {
            id: a.container_id.clone(),
        }
        .into());
    }
    let _lock = StateLock::exclusive(&ctx.root, &a.container_id)?;
    c.kill(signal, a.all)
        .with_context(|| format!("kill container {} ({})", a.container_id, c.status()))?;
    // libcontainer 0.7 records `stopped` whatever the signal did. A running
    // container reads back as running while its init lives, but a created
    // one would read as running too (and `start` then refuses it), and a
    // paused one as running while still frozen. runc leaves both as they
    // were; if the signal did kill the init, the next load sees the dead pid
    // and reports `stopped` anyway. `kill --all` thaws the cgroup (as runc's
    // does), so a paused container is not paused after it.
    let unchanged = match before {
        ContainerStatus::Created => true,
        ContainerStatus::Paused => !a.all,
        _ => false,
    };
    if unchanged {
        c.set_status(before)
            .save()
            .with_context(|| format!("save state of container {}", a.container_id))?;
    }
    Ok(())
}

/// `delete [--force]`: the container's journal undone by the one
/// teardown (`journal::teardown`). A container of an older cnfbox without
/// a journal gets one rebuilt from its record (`journal::previous`); with
/// `--force`, one that has neither (a create killed before it wrote
/// anything, or a container that is gone) is cleaned up from the on-disk
/// names (`journal::by_names`).
pub fn delete(ctx: &Ctx, id: &str, force: bool) -> anyhow::Result<()> {
    check_id(id)?;
    let dir = container_dir(ctx, id);
    let has_state = dir.join("state.json").is_file();
    let loaded = match Journal::load(&ctx.root, id) {
        // A journal that cannot be parsed (a disk that failed under it):
        // `--force` tears down by name instead, and removes it.
        Err(err @ journal::JournalError::Parse { .. }) if force => {
            tracing::warn!(%id, %err, "unreadable journal: tearing down by name");
            return teardown(
                ctx,
                id,
                journal::by_names(&ctx.root, id, ctx.systemd).replacing(&ctx.root, id),
                force,
            );
        }
        other => other?,
    };
    let previous = match (&loaded, has_state) {
        (None, true) => journal::previous::journal(&ctx.root, id)?,
        _ => None,
    };
    let mut journal = match loaded.or(previous) {
        Some(j) => j,
        None if force => journal::by_names(&ctx.root, id, ctx.systemd),
        None => return load(ctx, id).map(drop),
    };
    if journal.record.is_none() && has_state {
        // A container of the previous release: its journal has no record.
        journal.record = journal::previous::record(&ctx.root, id).ok().flatten();
    }
    if !force {
        if !has_state {
            // Half-created: only `--force` clears it (as runc's).
            return load(ctx, id).map(drop);
        }
        let init_start = journal.record.as_ref().and_then(|r| r.init_start);
        let c = crate::state_lock::load_with(&dir, init_start)
            .with_context(|| format!("load container {id} from {}", dir.display()))?;
        if matches!(
            c.status(),
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            anyhow::bail!(
                "cannot delete container {id}: it is {} (use --force)",
                c.status().to_string().to_lowercase()
            );
        }
    }
    teardown(ctx, id, journal, force)
}

fn teardown(ctx: &Ctx, id: &str, journal: Journal, force: bool) -> anyhow::Result<()> {
    let warnings = journal::teardown(&ctx.root, journal, force, &crate::profile::release_range)
        .with_context(|| format!("delete container {id}"))?;
    warnings.into_iter().for_each(|w| super::warn(Some(w)));
    Ok(())
}

pub fn pause(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let (mut c, _) = load(ctx, id)?;
    let _lock = StateLock::exclusive(&ctx.root, id)?;
    c.pause().with_context(|| format!("pause container {id}"))
}

pub fn resume(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let (mut c, _) = load(ctx, id)?;
    let _lock = StateLock::exclusive(&ctx.root, id)?;
    c.resume().with_context(|| format!("resume container {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert!(parse_signal("KILL").is_ok());
        assert!(parse_signal("SIGTERM").is_ok());
        assert!(parse_signal("9").is_ok());
        let err = parse_signal("BOGUS").unwrap_err().to_string();
        assert!(err.contains("invalid signal \"BOGUS\""), "{err}");
        assert!(parse_signal("99").is_err());
    }
}
