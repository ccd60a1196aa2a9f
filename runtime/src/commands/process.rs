//! `exec` and `ps`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use libcgroups::common::CgroupManager;
use libcontainer::container::builder::ContainerBuilder;
use liboci_cli::{Exec, Ps};

use super::exec_process::{self, ExecProcess};
use super::{
    cgroup_manager, check_console, check_id, console_socket_path, container_dir, load, wait, Ctx,
};
use libcontainer::syscall::syscall::SyscallType;

pub fn exec(ctx: &Ctx, a: &Exec) -> anyhow::Result<u8> {
    check_id(&a.container_id)?;
    let id = &a.container_id;
    // Fails with a clear message for an unknown id before libcontainer runs.
    let (container, meta) = load(ctx, id)?;
    if !matches!(
        container.status(),
        libcontainer::container::ContainerStatus::Running
            | libcontainer::container::ContainerStatus::Created
    ) {
        anyhow::bail!(
            "exec in container {id}: container not running ({})",
            container.status().to_string().to_lowercase()
        );
    }
    if a.process.is_none() && a.command.is_empty() {
        anyhow::bail!("exec {id}: give a command or -p process.json");
    }
    if a.process.is_none() {
        check_console(a.tty, "--tty", a.detach, a.console_socket.as_deref())?;
    }
    // The exec'd process is forked from this one: joining the container's
    // cgroup2 hugetlb cgroup first (where cnfbox enforces the limits) makes
    // it start there, with no window outside the limits.
    if let Some(h) = &meta.hugepages {
        h.join(std::process::id() as i32)
            .with_context(|| format!("exec in container {id}"))?;
    }
    let dir = container_dir(ctx, id);
    let mapped = meta.mapping.is_some();
    let process = ExecProcess::prepare(a, &dir, container.bundle(), &meta.bundle, mapped)
        .with_context(|| format!("exec in container {id}"))?;
    if mapped {
        // An exec right after `start` can come before the init's exec,
        // when its namespaces cannot be opened from the pod's user
        // namespace (see `profile::wait_for_exec`).
        if let (Some(pid), libcontainer::container::ContainerStatus::Running) =
            (container.pid(), container.status())
        {
            crate::profile::wait_for_exec(&format!("container {id}"), pid.as_raw())?;
        }
        // Files above were read and written as host root; from here on
        // this process is in the pod's user namespace, where its uid reads
        // as unmapped. With `--systemd-cgroup` libcontainer joins the
        // exec'd process to the scope by its cgroupfs path, which create
        // kept for it (`devices::scope`), not through systemd's bus.
        process
            .set_oom_score_adj()
            .with_context(|| format!("exec in container {id}"))?;
        join_userns(&container, id)?;
        exec_process::set(&process.gids, id)?;
    }
    // libcontainer's tenant builder reads state.json itself.
    let state_lock = crate::state_lock::StateLock::shared(&ctx.root, id)?;
    // The exec'd process inherits the cwd (`host::cwd`): every path is
    // made absolute before it changes.
    let console = console_socket_path(a.console_socket.as_deref())?;
    let pid_file = a
        .pid_file
        .as_ref()
        .map(|p| {
            std::path::absolute(p)
                .with_context(|| format!("--pid-file {}: make it absolute", p.display()))
        })
        .transpose()?;
    // The container's memory policy, inherited by what this process forks
    // (libcontainer sets it in the init only).
    if let Some(p) = &process.memory_policy {
        crate::numa::mempolicy::set(p).with_context(|| format!("exec in container {id}"))?;
    }
    let at_root =
        crate::host::cwd::AtRoot::enter().with_context(|| format!("exec in container {id}"))?;
    let built = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_root_path(ctx.root.clone())?
        .with_console_socket(console)
        .with_pid_file(pid_file)?
        .with_preserved_fds(a.preserve_fds)
        .with_executor(process.confined.clone())
        .validate_id()?
        .as_tenant()
        .with_detach(a.detach)
        .with_process(Some(&process.path().to_path_buf()))
        .with_ignore_paused(a.ignore_paused)
        .with_sub_cgroup(a.cgroup.clone())
        .build()
        .with_context(|| format!("exec in container {id}"));
    drop(at_root);
    drop(state_lock);
    drop(process);
    remove_spent_notify_sockets(&dir);
    let pid = built?;
    if a.detach {
        return Ok(0);
    }
    let signals = wait::block_forwarded_signals()?;
    wait::forward_until_exit(pid, &signals)
}

/// Removes the `tenant-notify-*.sock` files libcontainer's exec leaves in
/// the container's directory (one per exec, never removed) once no one
/// listens on them: a concurrent exec's socket is listening until its
/// process has started, and is left for a later exec to remove.
fn remove_spent_notify_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let spent: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tenant-notify-") && n.ends_with(".sock"))
        })
        .collect();
    if spent.is_empty() {
        return;
    }
    // libcontainer binds them by their file name, from inside `dir`.
    let listening: std::collections::HashSet<PathBuf> = match procfs::net::unix() {
        Ok(sockets) => sockets.into_iter().filter_map(|s| s.path).collect(),
        Err(err) => {
            tracing::warn!(%err, "read /proc/net/unix: exec notify sockets left in place");
            return;
        }
    };
    for path in spent {
        let name = PathBuf::from(path.file_name().unwrap_or_default());
        if listening.contains(&name) || listening.contains(&path) {
            continue;
        }
        if let Err(err) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %err, "remove a spent exec notify socket");
        }
    }
}

/// Moves this process into the container's user namespace before
/// libcontainer builds the exec'd process.
///
/// libcontainer 0.7's tenant builder joins the init's ipc, uts, net, pid,
/// mnt, cgroup and time namespaces but never its user namespace, so without
/// this an exec'd process would run as real host root inside the pod's
/// other namespaces. After setns(2) this process keeps its kernel uid 0
/// (host-owned state files stay writable by owner permission) and holds all
/// capabilities in the pod's user namespace, which owns every namespace
/// the exec joins; the process it starts is a child of the pod's user
/// namespace like the init.
fn join_userns(container: &libcontainer::container::Container, id: &str) -> anyhow::Result<()> {
    use nix::sched::{setns, CloneFlags};
    let pid = container
        .pid()
        .with_context(|| format!("exec in container {id}: it has no init pid"))?;
    let path = crate::host::ns::of_pid(pid.as_raw(), "user");
    let ns = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    if crate::host::ns::is_own(&path, "user") {
        return Ok(());
    }
    setns(ns, CloneFlags::CLONE_NEWUSER).with_context(|| {
        format!(
            "setns(CLONE_NEWUSER) into {} for exec in {id}",
            path.display()
        )
    })
}

pub fn ps(ctx: &Ctx, a: &Ps) -> anyhow::Result<()> {
    let (c, meta) = load(ctx, &a.container_id)?;
    let manager = cgroup_manager(&c, &meta)?;
    let mut pids: Vec<i32> = manager
        .get_all_pids()
        .with_context(|| format!("list pids of container {}", a.container_id))?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    pids.sort_unstable();
    let mut out = std::io::stdout().lock();
    match a.format.as_str() {
        "json" => writeln!(out, "{}", serde_json::to_string(&pids)?)?,
        "table" => {
            writeln!(out, "{:>8} {:>8} CMD", "PID", "PPID")?;
            for pid in pids {
                let (ppid, cmd) = proc_info(pid);
                writeln!(out, "{pid:>8} {ppid:>8} {cmd}")?;
            }
        }
        other => anyhow::bail!("--format {other:?}: expected table or json"),
    }
    Ok(())
}

/// Parent pid and command line of `pid`, from /proc (0 and empty if it is
/// gone).
fn proc_info(pid: i32) -> (i32, String) {
    let Ok(p) = procfs::process::Process::new(pid) else {
        return (0, String::new());
    };
    let ppid = p.stat().map(|s| s.ppid).unwrap_or(0);
    let cmd = p.cmdline().map(|args| args.join(" ")).unwrap_or_default();
    (ppid, cmd)
}
