//! `exec` and `ps`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr as _;

use anyhow::Context as _;
use libcgroups::common::CgroupManager;
use libcontainer::capabilities::CapabilityExt as _;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use liboci_cli::{Exec, Ps};
use oci_spec::runtime::{Capability, Process, Spec};

use super::{
    cgroup_manager, check_console, check_id, console_socket_path, container_dir, exec_process,
    load, wait, Ctx,
};

pub fn exec(ctx: &Ctx, a: &Exec) -> anyhow::Result<u8> {
    check_id(&a.container_id)?;
    // Fails with a clear message for an unknown id before libcontainer runs.
    let (container, meta) = load(ctx, &a.container_id)?;
    if a.process.is_none() && a.command.is_empty() {
        anyhow::bail!("exec {}: give a command or -p process.json", a.container_id);
    }
    // The exec'd process is forked from this one: joining the container's
    // cgroup2 hugetlb cgroup first (where cnfbox enforces the limits) makes
    // it start there, with no window outside the limits.
    if let Some(h) = &meta.hugepages {
        h.join(std::process::id() as i32)
            .with_context(|| format!("exec in container {}", a.container_id))?;
    }
    // libcontainer 0.7's tenant builder has no `--tty`: the process it builds
    // from flags never has a terminal, so `exec -d -t --console-socket` was
    // refused. With `--tty`, cnfbox builds the process itself, as runc does,
    // and hands it over as a process.json (removed once the exec started).
    let tty = match &a.process {
        None if a.tty => Some(TtyProcess::write(ctx, &container, a)?),
        None => {
            check_console(false, "--tty", a.detach, a.console_socket.as_deref())?;
            None
        }
        Some(_) => None,
    };
    let mut process = tty.as_ref().map(|t| t.path.clone()).or(a.process.clone());
    let mut additional_gids = a.additional_gids.clone();
    let mut _stripped = None;
    if meta.mapping.is_some() {
        let init_gids = exec_process::strip_kept_spec(container.bundle(), &meta.bundle)
            .with_context(|| format!("exec in container {}", a.container_id))?;
        if process.is_none() {
            // Built from flags on the init's process, as runc does.
            additional_gids.extend(init_gids);
        }
        if let Some(path) = process.clone() {
            let (gids, prepared) = exec_process::prepare(
                &path,
                &container_dir(ctx, &a.container_id),
                container.bundle(),
            )
            .with_context(|| format!("exec in container {}", a.container_id))?;
            additional_gids.extend(gids);
            process = Some(prepared.path.clone());
            _stripped = Some(prepared);
        }
        // Files above were read and written as host root; from here on
        // this process is in the pod's user namespace.
        join_userns(&container, &a.container_id)?;
        exec_process::set(&additional_gids, &a.container_id)?;
        additional_gids.clear();
    }
    let env: HashMap<String, String> = a.env.iter().cloned().collect();
    let pid = ContainerBuilder::new(a.container_id.clone(), SyscallType::default())
        .with_root_path(ctx.root.clone())?
        .with_console_socket(console_socket_path(a.console_socket.as_deref())?)
        .with_pid_file(a.pid_file.as_ref())?
        .with_preserved_fds(a.preserve_fds)
        .validate_id()?
        .as_tenant()
        .with_detach(a.detach)
        .with_cwd(a.cwd.as_ref())
        .with_env(env)
        .with_process(process.as_ref())
        .with_no_new_privs(a.no_new_privs)
        .with_capabilities(a.cap.clone())
        .with_user(a.user.map(|(u, _)| u))
        .with_group(a.user.and_then(|(_, g)| g))
        .with_additional_gids(additional_gids)
        .with_ignore_paused(a.ignore_paused)
        .with_sub_cgroup(a.cgroup.clone())
        .with_container_args(a.command.clone())
        .build()
        .with_context(|| format!("exec in container {}", a.container_id))?;
    drop(tty);
    if a.detach {
        return Ok(0);
    }
    let signals = wait::block_forwarded_signals()?;
    wait::forward_until_exit(pid, &signals)
}

/// The process of `exec --tty`, written where libcontainer reads it.
struct TtyProcess {
    path: PathBuf,
}

impl TtyProcess {
    fn write(ctx: &Ctx, container: &Container, a: &Exec) -> anyhow::Result<Self> {
        check_console(true, "--tty", a.detach, a.console_socket.as_deref())?;
        let config = container.bundle().join("config.json");
        let spec = Spec::load(&config).with_context(|| format!("load {}", config.display()))?;
        let process = tty_process(&spec, a)?;
        let path = container_dir(ctx, &a.container_id)
            .join(format!("exec-tty-{}.json", std::process::id()));
        let body = serde_json::to_vec(&process).context("serialize the exec process")?;
        // 0600 like the kept spec: the process carries the environment.
        let write = || {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?
                .write_all(&body)
        };
        write().with_context(|| format!("write {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TtyProcess {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %err, "remove exec process file");
        }
    }
}

/// The process runc's `exec` builds from its flags (runc exec.go
/// `getProcess`): the container's process with the command's args, cwd,
/// env, user, extra caps and the terminal flag.
fn tty_process(spec: &Spec, a: &Exec) -> anyhow::Result<Process> {
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    // A flag's KEY=VALUE replaces the spec's KEY, as libcontainer does for
    // a plain `exec` (and runc, whose init applies them in order).
    let mut env: Vec<String> = p.env().clone().unwrap_or_default();
    for (key, value) in &a.env {
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(format!("{key}={value}"));
    }
    p.set_env(Some(env));
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some((uid, gid)) = a.user {
        p.user_mut().set_uid(uid);
        if let Some(gid) = gid {
            p.user_mut().set_gid(gid);
        }
    }
    if !a.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(a.additional_gids.clone()));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.cap {
            // Parsed as libcontainer parses `--cap` for a plain `exec`.
            let cap = caps::Capability::from_str(name)
                .map(Capability::from_cap)
                .with_context(|| format!("--cap {name:?}"))?;
            // runc: bounding, effective and permitted; ambient only when the
            // spec has inheritable caps, and never inheritable itself
            // (GHSA-f3fp-gc8g-vw66).
            let add = |set: Option<&oci_spec::runtime::Capabilities>| {
                let mut set = set.cloned().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            caps.set_bounding(add(caps.bounding().as_ref()));
            caps.set_effective(add(caps.effective().as_ref()));
            caps.set_permitted(add(caps.permitted().as_ref()));
            if caps.inheritable().is_some() {
                caps.set_ambient(add(caps.ambient().as_ref()));
            }
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
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
    let path = format!("/proc/{pid}/ns/user");
    let ns = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    if std::fs::read_link(&path).ok() == std::fs::read_link("/proc/self/ns/user").ok() {
        return Ok(());
    }
    setns(ns, CloneFlags::CLONE_NEWUSER)
        .with_context(|| format!("setns(CLONE_NEWUSER) into {path} for exec in {id}"))
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

/// Parent pid and command line of `pid`, from /proc (empty if it is gone).
fn proc_info(pid: i32) -> (i32, String) {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
    let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(1)?.parse().ok()
        })
        .unwrap_or(0);
    (ppid, cmd)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use oci_spec::runtime::{Capability, Spec};

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        exec: Exec,
    }

    fn exec(args: &[&str]) -> Exec {
        Cmd::try_parse_from(std::iter::once("exec").chain(args.iter().copied()))
            .expect("exec flags")
            .exec
    }

    #[test]
    fn tty_process_is_the_spec_process_with_the_flags() {
        let spec = Spec::default();
        let base = spec.process().clone().unwrap();
        let a = exec(&[
            "--tty",
            "--env",
            "TERM=dumb",
            "--env",
            "NEW=1",
            "--cwd",
            "/tmp",
            "--user",
            "65534:65534",
            "--cap",
            "CAP_NET_ADMIN",
            "c1",
            "sh",
            "-c",
            "tty",
        ]);
        let p = tty_process(&spec, &a).unwrap();
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(
            p.args().as_deref(),
            Some(&["sh".into(), "-c".into(), "tty".into()][..])
        );
        assert_eq!(p.cwd(), std::path::Path::new("/tmp"));
        let env = p.env().clone().unwrap();
        assert_eq!(
            env.iter().filter(|e| e.starts_with("TERM=")).count(),
            1,
            "{env:?}"
        );
        assert!(env.contains(&"TERM=dumb".into()) && env.contains(&"NEW=1".into()));
        assert_eq!((p.user().uid(), p.user().gid()), (65534, 65534));
        let caps = p.capabilities().clone().unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            assert!(set.as_ref().unwrap().contains(&Capability::NetAdmin));
        }
        // Ambient follows only when the spec has inheritable caps (oci-spec's
        // default spec has them).
        let had_inheritable = base
            .capabilities()
            .as_ref()
            .unwrap()
            .inheritable()
            .is_some();
        assert_eq!(
            caps.ambient()
                .as_ref()
                .is_some_and(|a| a.contains(&Capability::NetAdmin)),
            had_inheritable
        );
        assert_eq!(
            caps.inheritable(),
            base.capabilities().as_ref().unwrap().inheritable()
        );
        assert_eq!(p.rlimits(), base.rlimits(), "the rest is the spec's");
    }

    #[test]
    fn unknown_cap_is_named() {
        let err = tty_process(
            &Spec::default(),
            &exec(&["--tty", "--cap", "CAP_BOGUS", "c1", "sh"]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("CAP_BOGUS"), "{err:#}");
    }
}
