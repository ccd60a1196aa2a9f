//! `start`, `kill`, `delete`, `pause`, `resume`.

use anyhow::Context as _;
use libcontainer::container::ContainerStatus;
use libcontainer::signal::Signal;

use super::{check_id, container_dir, load, Ctx};
use crate::cli::Kill;

pub fn start(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let (mut c, _) = load(ctx, id)?;
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
        anyhow::bail!(
            "kill container {}: container not running (stopped)",
            a.container_id
        );
    }
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

pub fn delete(ctx: &Ctx, id: &str, force: bool) -> anyhow::Result<()> {
    check_id(id)?;
    let dir = container_dir(ctx, id);
    if force && !(dir.join("state.json").is_file() && crate::meta::exists(&dir)) {
        // runc: `delete --force` of a container that is gone succeeds; one
        // whose create was killed before cnfbox recorded it is cleaned up
        // from what that create left.
        return super::recover::half_created(ctx, id);
    }
    let (mut c, meta) = load(ctx, id)?;
    if !force
        && matches!(
            c.status(),
            ContainerStatus::Running | ContainerStatus::Paused
        )
    {
        anyhow::bail!(
            "cannot delete container {id}: it is {} (use --force)",
            c.status().to_string().to_lowercase()
        );
    }
    // Interfaces go back while the pod's namespaces still stand.
    super::create::give_back(&meta, force).with_context(|| format!("delete container {id}"))?;
    let warning =
        super::delete_container(&mut c, force).with_context(|| format!("delete container {id}"))?;
    crate::profile::teardown(&ctx.root, &meta).with_context(|| format!("delete container {id}"))?;
    super::warn(warning);
    Ok(())
}

pub fn pause(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let (mut c, _) = load(ctx, id)?;
    c.pause().with_context(|| format!("pause container {id}"))
}

pub fn resume(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let (mut c, _) = load(ctx, id)?;
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
