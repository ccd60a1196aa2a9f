//! `exec` and `ps`.

use std::collections::HashMap;
use std::io::Write as _;

use anyhow::Context as _;
use libcgroups::common::CgroupManager;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use liboci_cli::{Exec, Ps};

use super::{cgroup_manager, check_id, load, wait, Ctx};

pub fn exec(ctx: &Ctx, a: &Exec) -> anyhow::Result<u8> {
    check_id(&a.container_id)?;
    // Fails with a clear message for an unknown id before libcontainer runs.
    let _ = load(ctx, &a.container_id)?;
    if a.process.is_none() && a.command.is_empty() {
        anyhow::bail!("exec {}: give a command or -p process.json", a.container_id);
    }
    let env: HashMap<String, String> = a.env.iter().cloned().collect();
    let pid = ContainerBuilder::new(a.container_id.clone(), SyscallType::default())
        .with_root_path(ctx.root.clone())?
        .with_console_socket(a.console_socket.as_ref())
        .with_pid_file(a.pid_file.as_ref())?
        .with_preserved_fds(a.preserve_fds)
        .validate_id()?
        .as_tenant()
        .with_detach(a.detach)
        .with_cwd(a.cwd.as_ref())
        .with_env(env)
        .with_process(a.process.as_ref())
        .with_no_new_privs(a.no_new_privs)
        .with_capabilities(a.cap.clone())
        .with_user(a.user.map(|(u, _)| u))
        .with_group(a.user.and_then(|(_, g)| g))
        .with_additional_gids(a.additional_gids.clone())
        .with_ignore_paused(a.ignore_paused)
        .with_sub_cgroup(a.cgroup.clone())
        .with_container_args(a.command.clone())
        .build()
        .with_context(|| format!("exec in container {}", a.container_id))?;
    if a.detach {
        return Ok(0);
    }
    let signals = wait::block_forwarded_signals()?;
    wait::forward_until_exit(pid, &signals)
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
