//! The runc-compatible commands.

mod confine;
mod create;
mod exec_process;
mod info;
pub mod inspect;
mod lifecycle;
mod process;
pub mod ranges;
mod resources;
mod wait;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use libcontainer::container::Container;

use crate::cli::{Cli, Command};
use crate::meta::ContainerMeta;

/// What every command needs from the global flags.
pub struct Ctx {
    pub root: PathBuf,
    pub systemd: bool,
}

/// Runs the parsed command line; returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    // Absolute: libcontainer forks the container's processes from `/`
    // (`host::cwd`).
    let root = std::path::absolute(&cli.global.root)
        .with_context(|| format!("--root {}: make it absolute", cli.global.root.display()))?;
    let ctx = Ctx {
        root,
        systemd: cli.global.systemd_cgroup,
    };
    let uses_root = !matches!(
        cli.command,
        Command::Features(_) | Command::Spec(_) | Command::Setup(_) | Command::HookRelay(_)
    );
    if uses_root {
        check_root(&ctx.root)?;
    }
    match cli.command {
        Command::Create(a) => create::create_cmd(&ctx, &a).map(|_| 0),
        Command::Run(a) => create::run_cmd(&ctx, &a),
        Command::Start(a) => lifecycle::start(&ctx, &a.container_id).map(|_| 0),
        Command::State(a) => info::state(&ctx, &a.container_id).map(|_| 0),
        Command::Kill(a) => lifecycle::kill(&ctx, &a).map(|_| 0),
        Command::Delete(a) => lifecycle::delete(&ctx, &a.container_id, a.force).map(|_| 0),
        Command::Pause(a) => lifecycle::pause(&ctx, &a.container_id).map(|_| 0),
        Command::Resume(a) => lifecycle::resume(&ctx, &a.container_id).map(|_| 0),
        Command::Exec(a) => process::exec(&ctx, &a),
        Command::Ps(a) => process::ps(&ctx, &a).map(|_| 0),
        Command::List(a) => info::list(&ctx, &a).map(|_| 0),
        Command::Events(a) => resources::events(&ctx, &a).map(|_| 0),
        Command::Update(a) => resources::update(&ctx, &a).map(|_| 0),
        Command::Features(_) => info::features().map(|_| 0),
        Command::Spec(a) => info::spec(&a).map(|_| 0),
        Command::Ranges(a) => ranges::ranges(&ctx, &a).map(|_| 0),
        Command::Inspect(a) => inspect::inspect(&ctx, &a).map(|_| 0),
        Command::Setup(a) => ranges::setup(&a).map(|_| 0),
        Command::HookRelay(a) => Ok(crate::hooks::run_relay(
            &a.bundle,
            a.report.as_deref(),
            &a.path,
            &a.argv,
        )?),
    }
}

/// Refuses a state root another user could write (or owns): what is in
/// it (journals, state, locks) decides what root's commands remove, kill
/// and unmount. One that does not exist yet is made by create (0711, then
/// checked again there).
pub fn check_root(root: &Path) -> anyhow::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    crate::host::owner::check_private("state root", root)?;
    Ok(())
}

/// Rejects ids that could escape the state root or collide with cnfbox's own
/// entries there; the rest of runc's rule is libcontainer's `validate_id`.
pub fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty()
        || id == "."
        || id == ".."
        || id.starts_with('.')
        || id.contains('/')
        || id.contains('\0')
    {
        bail!("invalid container id {id:?}: use letters, digits and _ + - . (not leading .)");
    }
    Ok(())
}

/// runc's console rule (runc utils_linux.go `runner.run`): a detached
/// process with a terminal must send its pty master to `--console-socket`,
/// and the socket serves nothing else. libcontainer checks the same, but its
/// message names neither the setting (`terminal`) nor the flag.
pub fn check_console(
    terminal: bool,
    setting: &str,
    detach: bool,
    socket: Option<&Path>,
) -> anyhow::Result<()> {
    match (terminal && detach, socket) {
        (true, None) => bail!(
            "{setting} asks for a terminal but no --console-socket was given: a detached process's pty master must be sent to one"
        ),
        (false, Some(socket)) => bail!(
            "--console-socket {} is only for a detached process with a terminal (process.terminal, or exec --tty)",
            socket.display()
        ),
        _ => Ok(()),
    }
}

/// `--console-socket` made absolute against the current directory, as runc
/// dials it. libcontainer connects through a symlink it makes in the state
/// dir (to keep `sun_path` short), so a relative target would resolve there.
pub fn console_socket_path(socket: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    socket
        .map(|p| {
            std::path::absolute(p)
                .with_context(|| format!("--console-socket {}: make it absolute", p.display()))
        })
        .transpose()
}

/// A command named a container that has no state in the root: the one
/// error callers (containerd's shims) may read as "not found", marked so in
/// the JSON log (`kind`, see `main.rs`).
#[derive(Debug, thiserror::Error)]
#[error("container {id} does not exist (no state in {})", root.display())]
pub struct NoSuchContainer {
    pub id: String,
    pub root: PathBuf,
}

/// A signal for a container whose init has exited (runc's words,
/// "container not running"): the shim answers NOT_FOUND, as containerd's
/// runc shim does ("process already finished"), and a pod's stop goes on.
#[derive(Debug, thiserror::Error)]
#[error("kill container {id}: container not running (stopped)")]
pub struct NotRunning {
    pub id: String,
}

/// The state directory of container `id`.
pub fn container_dir(ctx: &Ctx, id: &str) -> PathBuf {
    ctx.root.join(id)
}

/// Loads container `id`, or says that it does not exist.
pub fn load(ctx: &Ctx, id: &str) -> anyhow::Result<(Container, ContainerMeta)> {
    check_id(id)?;
    let dir = container_dir(ctx, id);
    if !dir.join("state.json").is_file() {
        return Err(NoSuchContainer {
            id: id.to_string(),
            root: ctx.root.clone(),
        }
        .into());
    }
    let meta = crate::journal::record(&ctx.root, id)?;
    let container = crate::state_lock::load_with(&dir, meta.init_start)
        .with_context(|| format!("load container {id} from {}", dir.display()))?;
    Ok((container, meta))
}

/// Prints a warning of a teardown (`journal::teardown`) on stderr (runc's `WARN` line).
pub fn warn(warning: Option<String>) {
    if let Some(w) = warning {
        eprintln!("cnfbox: warning: {w}");
    }
}

/// A cgroup manager for an existing container.
pub fn cgroup_manager(
    container: &Container,
    meta: &ContainerMeta,
) -> anyhow::Result<libcgroups::common::AnyCgroupManager> {
    libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: meta.cgroup_path.clone(),
        systemd_cgroup: meta.systemd,
        container_name: container.id().to_string(),
    })
    .with_context(|| format!("open cgroup {}", meta.cgroup_path.display()))
}

/// Reads a JSON file, `-` meaning stdin.
pub fn read_json_arg<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let raw = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("read stdin")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("read {}", path.display()))?
    };
    let mut de = serde_json::Deserializer::from_slice(&raw);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        anyhow::anyhow!(
            "malformed {}: field `{}`: {}",
            path.display(),
            e.path(),
            e.inner()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_rule_as_runc() {
        let sock = Some(Path::new("/run/tty.sock"));
        assert!(check_console(true, "process.terminal", true, sock).is_ok());
        assert!(check_console(false, "process.terminal", true, None).is_ok());
        assert!(check_console(true, "process.terminal", false, None).is_ok());
        let err = check_console(true, "process.terminal", true, None).unwrap_err();
        assert!(err.to_string().contains("--console-socket"), "{err}");
        let err = check_console(false, "--tty", true, sock).unwrap_err();
        assert!(err.to_string().contains("/run/tty.sock"), "{err}");
        assert!(check_console(true, "--tty", false, sock).is_err());
    }

    #[test]
    fn console_socket_is_made_absolute() {
        let got = console_socket_path(Some(Path::new("tty.sock")))
            .unwrap()
            .unwrap();
        assert_eq!(got, std::env::current_dir().unwrap().join("tty.sock"));
        assert_eq!(console_socket_path(None).unwrap(), None);
    }
}
