//! The process `cnfbox exec` starts in a container: built as runc builds
//! it, bounded by the capability policy, confined by the container's
//! seccomp filter, and handed to libcontainer as a private process file.
//!
//! - Without `-p`, the process is the container's own (`process` of the
//!   kept spec: user, rlimits, capabilities, AppArmor profile, SELinux
//!   label, `noNewPrivileges`) with the flags' changes (runc exec.go
//!   `getProcess`). libcontainer 0.7 would build a bare one from the flags
//!   (uid 0, no rlimits, no profile) and cannot give it a terminal.
//! - Supplementary groups: `cnfbox exec` joins the pod's user namespace
//!   before libcontainer builds the process (see `process::join_userns`).
//!   libcontainer then takes itself for a rootless caller and refuses any
//!   `additionalGids` ("unprivileged user can't set supplementary groups",
//!   the CVE-2014-8989 rule for unprivileged user namespaces), and with
//!   none it leaves the groups as they are: the exec'd process would
//!   inherit the caller's host groups (the shim's, typically host gid 0).
//!   cnfbox's pod user namespace was set up by host root, so setgroups(2)
//!   is allowed in it: cnfbox sets exactly the requested groups itself
//!   (none, if none were asked for) and hands libcontainer the process
//!   without them.
//! - Capabilities: containerd builds an exec's process from its own copy
//!   of the spec, which never saw the capabilities cnfbox granted the init
//!   from `cnfbox.io/capabilities`; the policy of `capabilities.rs` grants
//!   the exec the same, and bounds what `-p` or `--cap` asks for by
//!   `[capabilities] allow` as it bounded the container.
//!
//! The files are read and written before the caller joins the pod's user
//! namespace, as host root. The process file holds the environment: it is
//! 0600, created exclusively in the 0700 container directory, and removed
//! once the process runs.

use std::io::Write as _;
use std::path::Path;
use std::str::FromStr as _;

use anyhow::Context as _;
use libcontainer::capabilities::CapabilityExt as _;
use liboci_cli::Exec;
use nix::unistd::{setgroups, Gid};
use oci_spec::runtime::{Capability, LinuxNamespaceType, Process, Spec};

use super::confine::Confined;

/// An exec's process, ready for libcontainer.
pub struct ExecProcess {
    /// The process file (removed on drop).
    file: tempfile::NamedTempFile,
    /// The supplementary groups cnfbox sets itself (pod user namespace).
    pub gids: Vec<u32>,
    /// The container's seccomp filter, loaded by the process itself.
    pub confined: Confined,
    /// The container's memory policy (`linux.memoryPolicy`, or the one NUMA
    /// placement set): libcontainer applies it in the init only, and an
    /// exec'd process descends from `cnfbox exec`, not from the init.
    pub memory_policy: Option<oci_spec::runtime::LinuxMemoryPolicy>,
    /// `process.oomScoreAdj`, taken out of the process libcontainer gets
    /// in a pod's own user namespace: see [`ExecProcess::set_oom_score_adj`].
    pub oom_score_adj: Option<i32>,
}

impl ExecProcess {
    /// Builds the process of `a` for the container whose kept bundle is
    /// `kept_bundle` (the user's bundle is `user_bundle`), in a user
    /// namespace of its own when `mapped`; writes it into `dir`.
    pub fn prepare(
        a: &Exec,
        dir: &Path,
        kept_bundle: &Path,
        user_bundle: &Path,
        mapped: bool,
    ) -> anyhow::Result<Self> {
        let (mut spec, init_gids) = if mapped {
            strip_kept_spec(kept_bundle, user_bundle)?
        } else {
            let path = kept_bundle.join("config.json");
            let spec = Spec::load(&path).with_context(|| format!("load {}", path.display()))?;
            (spec, Vec::new())
        };
        let mut process = match &a.process {
            Some(path) => super::read_json_arg::<Process>(path)?,
            None => {
                let mut base = spec.process().clone().unwrap_or_default();
                if !init_gids.is_empty() {
                    base.user_mut().set_additional_gids(Some(init_gids));
                }
                flag_process(base, a)?
            }
        };
        let gids = if mapped {
            let gids = process.user().additional_gids().clone().unwrap_or_default();
            process.user_mut().set_additional_gids(None);
            gids
        } else {
            Vec::new()
        };
        let mut process = grant(&mut spec, process, mapped)?;
        let confined = Confined::new(&spec, &mut process)?;
        let oom_score_adj = if mapped {
            process.oom_score_adj()
        } else {
            None
        };
        if mapped {
            process.set_oom_score_adj(None);
        }
        let file = write_private(dir, &process)?;
        let memory_policy = spec
            .linux()
            .as_ref()
            .and_then(|l| l.memory_policy().clone());
        Ok(Self {
            file,
            gids,
            confined,
            memory_policy,
            oom_score_adj,
        })
    }

    /// Writes `process.oomScoreAdj` to this process's
    /// `/proc/self/oom_score_adj` (its children inherit it), before it
    /// joins the pod's user namespace. libcontainer writes it from the
    /// process it forks from, which for an exec into a pod is already in
    /// the pod's user namespace: a value below the caller's floor (a shim's
    /// own score, raised by containerd with `CAP_SYS_RESOURCE`: kubelet's
    /// -997 for a Guaranteed pod) then needs `CAP_SYS_RESOURCE` in the
    /// initial user namespace, and every such exec failed with EACCES.
    pub fn set_oom_score_adj(&self) -> anyhow::Result<()> {
        let Some(v) = self.oom_score_adj else {
            return Ok(());
        };
        std::fs::write("/proc/self/oom_score_adj", v.to_string())
            .with_context(|| format!("process.oomScoreAdj {v}: write /proc/self/oom_score_adj"))
    }

    /// Where libcontainer reads the process.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// The capabilities the container's policy gives `process`: those its
/// `cnfbox.io/capabilities` annotation granted the init, each one checked
/// against `[capabilities] allow` as at create.
fn grant(spec: &mut Spec, process: Process, mapped: bool) -> anyhow::Result<Process> {
    let config = idmap::EtcRoot::default().config_path();
    // Judged on the container's own spec, not on the exec's process.
    let bound = !crate::host_ns::unbounded_caps(spec, mapped, &config);
    spec.set_process(Some(process));
    // The create checked that the container's network namespace is the
    // pod's own; a member's was joined through a pin that is gone by now.
    // The exec joins the init's namespaces, so judge it as the create did.
    if let Some(linux) = spec.linux_mut() {
        if let Some(mut namespaces) = linux.namespaces().clone() {
            for n in namespaces
                .iter_mut()
                .filter(|n| n.typ() == LinuxNamespaceType::Network)
            {
                n.set_path(None);
            }
            linux.set_namespaces(Some(namespaces));
        }
    }
    crate::capabilities::Policy::load(&config)
        .and_then(|policy| policy.apply_with(spec, mapped, bound))
        .context("capabilities of the exec process")?;
    Ok(spec.process().clone().unwrap_or_default())
}

/// Writes `process` to a new 0600 file in `dir` (never an existing one).
fn write_private(dir: &Path, process: &Process) -> anyhow::Result<tempfile::NamedTempFile> {
    let body = serde_json::to_vec(process).context("serialize the exec process")?;
    // tempfile: O_CREAT | O_EXCL, mode 0600, a name no one else holds.
    let mut file = tempfile::Builder::new()
        .prefix("exec-process-")
        .suffix(".json")
        .tempfile_in(dir)
        .with_context(|| format!("create an exec process file in {}", dir.display()))?;
    file.write_all(&body)
        .and_then(|()| file.flush())
        .with_context(|| format!("write {}", file.path().display()))?;
    Ok(file)
}

/// The process runc's `exec` builds from its flags (runc exec.go
/// `getProcess`): the container's `process` with the command's args, cwd,
/// env, user, extra groups and caps, AppArmor profile, SELinux label and
/// the terminal flag.
pub fn flag_process(mut p: Process, a: &Exec) -> anyhow::Result<Process> {
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    // A flag's KEY=VALUE replaces the spec's KEY (runc's init applies them
    // in order).
    let mut env: Vec<String> = p.env().clone().unwrap_or_default();
    for (key, value) in &a.env {
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(format!("{key}={value}"));
    }
    p.set_env(Some(env));
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &a.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &a.process_label {
        p.set_selinux_label(Some(label.clone()));
    }
    if let Some((uid, gid)) = a.user {
        p.user_mut().set_uid(uid);
        if let Some(gid) = gid {
            p.user_mut().set_gid(gid);
        }
    }
    if !a.additional_gids.is_empty() {
        let mut gids = p.user().additional_gids().clone().unwrap_or_default();
        gids.extend(&a.additional_gids);
        p.user_mut().set_additional_gids(Some(gids));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.cap {
            // Parsed as libcontainer parses `--cap`.
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

/// Sets this process's supplementary groups to exactly `gids` (ids of the
/// user namespace it is in); children inherit them.
pub fn set(gids: &[u32], container: &str) -> anyhow::Result<()> {
    let list: Vec<Gid> = gids.iter().copied().map(Gid::from_raw).collect();
    setgroups(&list).map_err(|errno| {
        let why = if errno == nix::Error::EINVAL {
            " (a group is not mapped in the pod's user namespace)"
        } else {
            ""
        };
        anyhow::anyhow!(
            "exec in container {container}: setgroups({gids:?}) in the pod's user namespace: {errno}{why}"
        )
    })
}

/// Removes `process.user.additionalGids` from the container's kept spec
/// (`<state>/<id>/bundle/config.json`, cnfbox's own copy, which
/// libcontainer's tenant builder validates on every exec); returns the
/// spec and the init's groups as the user's bundle gives them (for execs
/// built from flags). The init set its groups at create; the copy is not
/// used for it again.
fn strip_kept_spec(kept_bundle: &Path, user_bundle: &Path) -> anyhow::Result<(Spec, Vec<u32>)> {
    let read_gids = |dir: &Path| -> Option<Vec<u32>> {
        let body = std::fs::read(dir.join("config.json")).ok()?;
        let spec: Spec = serde_json::from_slice(&body).ok()?;
        spec.process()
            .as_ref()
            .and_then(|p| p.user().additional_gids().clone())
    };
    let init_gids = read_gids(user_bundle).unwrap_or_default();
    let path = kept_bundle.join("config.json");
    let body = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let mut spec: Spec =
        serde_json::from_slice(&body).with_context(|| format!("parse {}", path.display()))?;
    let Some(mut process) = spec.process().clone() else {
        return Ok((spec, init_gids));
    };
    if process.user().additional_gids().is_none() {
        return Ok((spec, init_gids));
    }
    process.user_mut().set_additional_gids(None);
    spec.set_process(Some(process));
    // Atomic (concurrent execs read this file) and 0600 like the file it
    // replaces: it carries the environment.
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(kept_bundle)
        .with_context(|| format!("create a temporary file in {}", kept_bundle.display()))?;
    let body = serde_json::to_vec(&spec).context("serialize the kept spec")?;
    tmp.write_all(&body)
        .with_context(|| format!("write {}", tmp.path().display()))?;
    tmp.persist(&path)
        .with_context(|| format!("replace {}", path.display()))?;
    Ok((spec, init_gids))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use clap::Parser;

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

    fn base() -> Process {
        Spec::default().process().clone().unwrap()
    }

    #[test]
    fn flag_process_is_the_spec_process_with_the_flags() {
        let base = base();
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
            "--apparmor",
            "cnf-profile",
            "c1",
            "sh",
            "-c",
            "tty",
        ]);
        let p = flag_process(base.clone(), &a).unwrap();
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
        assert_eq!(p.apparmor_profile().as_deref(), Some("cnf-profile"));
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
    fn without_flags_the_process_keeps_the_spec_user_rlimits_and_groups() {
        let mut base = base();
        base.user_mut().set_uid(1000);
        base.user_mut().set_gid(1001);
        base.user_mut().set_additional_gids(Some(vec![7]));
        base.set_no_new_privileges(Some(true));
        let p = flag_process(base.clone(), &exec(&["-g", "9", "c1", "id"])).unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1001));
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[7, 9][..]));
        assert_eq!(p.rlimits(), base.rlimits());
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.terminal(), Some(false));
        // --user with a uid only keeps the spec's gid, as runc does.
        let p = flag_process(base, &exec(&["--user", "5", "c1", "id"])).unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (5, 1001));
    }

    #[test]
    fn unknown_cap_is_named() {
        let err = flag_process(base(), &exec(&["--cap", "CAP_BOGUS", "c1", "sh"])).unwrap_err();
        assert!(format!("{err:#}").contains("CAP_BOGUS"), "{err:#}");
    }

    #[test]
    fn prepare_takes_out_groups_and_writes_a_private_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = dir.path().join("kept");
        let user = dir.path().join("user");
        for d in [&kept, &user] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let spec = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "process":{"user":{"uid":0,"gid":0,"additionalGids":[3]},"args":["sh"],"cwd":"/"}}"#;
        std::fs::write(kept.join("config.json"), spec).expect("write kept spec");
        std::fs::set_permissions(
            kept.join("config.json"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::fs::write(user.join("config.json"), spec).expect("write user spec");
        let p = dir.path().join("process.json");
        std::fs::write(
            &p,
            r#"{"user":{"uid":5,"gid":6,"additionalGids":[10,11]},"args":["id"],"cwd":"/"}"#,
        )
        .expect("write");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let a = exec(&["-p", p.to_str().unwrap(), "c1"]);
        let prepared = ExecProcess::prepare(&a, dir.path(), &kept, &user, true).expect("prepare");
        assert_eq!(prepared.gids, vec![10, 11]);
        assert_eq!(mode(prepared.path()), 0o600);
        let back: Process =
            serde_json::from_slice(&std::fs::read(prepared.path()).expect("read")).expect("parse");
        assert_eq!(back.user().additional_gids(), &None);
        assert_eq!(back.user().uid(), 5);
        assert_eq!(back.args().as_deref(), Some(&["id".to_string()][..]));
        let path = prepared.path().to_path_buf();
        drop(prepared);
        assert!(!path.exists(), "the file is removed on drop");
        // The kept spec lost its groups and stayed private.
        let kept_spec = Spec::load(kept.join("config.json")).expect("kept spec");
        assert_eq!(
            kept_spec
                .process()
                .as_ref()
                .unwrap()
                .user()
                .additional_gids(),
            &None
        );
        assert_eq!(mode(&kept.join("config.json")), 0o600);

        // From flags: the init's groups (from the user's bundle) and the flag's.
        let a = exec(&["-g", "4", "c1", "id"]);
        let prepared = ExecProcess::prepare(&a, dir.path(), &kept, &user, true).expect("prepare");
        assert_eq!(prepared.gids, vec![3, 4]);
    }

    #[test]
    fn cap_flag_is_bounded_by_the_allowlist() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
                "process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},
                "linux":{"namespaces":[{"type":"network"},{"type":"user"}]}}"#,
        )
        .expect("write spec");
        let a = exec(&["--cap", "CAP_SYS_MODULE", "c1", "sh"]);
        let err = match ExecProcess::prepare(&a, dir.path(), dir.path(), dir.path(), true) {
            Ok(_) => panic!("CAP_SYS_MODULE granted to an exec"),
            Err(err) => format!("{err:#}"),
        };
        assert!(
            err.contains("CAP_SYS_MODULE") && err.contains("not allowed"),
            "{err}"
        );
    }
}
