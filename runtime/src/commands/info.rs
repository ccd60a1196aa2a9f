//! `state`, `list`, `features`, `spec`.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;

use anyhow::Context as _;
use libcontainer::container::{Container, ContainerStatus};
use liboci_cli::{List, Spec};
use serde::Serialize;

use super::{load, Ctx};
use crate::meta::ContainerMeta;

/// runc's `state` document (runc/libcontainer `containerState`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuncState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: &'static str,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

fn status_name(s: ContainerStatus) -> &'static str {
    match s {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// The user name owning the container's state directory, as runc reports
/// it (`state` and `list` alike); the uid when it has no name.
fn owner(c: &Container) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = fs::metadata(c.root.as_path()).map(|m| m.uid()) else {
        return String::new();
    };
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

fn runc_state(c: &Container, meta: &ContainerMeta) -> RuncState {
    let status = c.status();
    RuncState {
        oci_version: oci_spec::runtime::VERSION.to_string(),
        id: c.id().to_string(),
        // runc reports pid 0 once the init is gone.
        pid: if status == ContainerStatus::Stopped {
            0
        } else {
            c.pid().map(|p| p.as_raw()).unwrap_or(0)
        },
        status: status_name(status),
        bundle: meta.bundle.display().to_string(),
        rootfs: meta.rootfs.display().to_string(),
        created: c
            .created()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_default(),
        owner: owner(c),
        annotations: c.state.annotations.clone().unwrap_or_default(),
    }
}

pub fn state(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let (c, meta) = load(ctx, id)?;
    println!("{}", serde_json::to_string_pretty(&runc_state(&c, &meta))?);
    Ok(())
}

pub fn list(ctx: &Ctx, a: &List) -> anyhow::Result<()> {
    let mut states = Vec::new();
    if ctx.root.exists() {
        let entries = fs::read_dir(&ctx.root)
            .with_context(|| format!("read state root {}", ctx.root.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("read state root {}", ctx.root.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().join("state.json").is_file() {
                continue;
            }
            // A container deleted while we list is simply not listed.
            if let Ok((c, meta)) = load(ctx, &name) {
                states.push(runc_state(&c, &meta));
            }
        }
    }
    states.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for s in &states {
            writeln!(out, "{}", s.id)?;
        }
        return Ok(());
    }
    match a.format.as_str() {
        "json" => writeln!(out, "{}", serde_json::to_string(&states)?)?,
        "table" => {
            writeln!(
                out,
                "{:<24} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            )?;
            for s in &states {
                writeln!(
                    out,
                    "{:<24} {:<8} {:<10} {:<40} {:<32} {}",
                    s.id, s.pid, s.status, s.bundle, s.created, s.owner
                )?;
            }
        }
        other => anyhow::bail!("--format {other:?}: expected table or json"),
    }
    Ok(())
}

/// The OCI features document (runtime-spec features.md): only what works.
pub fn features() -> anyhow::Result<()> {
    let systemd = std::path::Path::new("/run/systemd/system").is_dir();
    let sys = std::path::Path::new("/sys");
    let node = crate::numa::Topology::read(sys)
        .ok()
        .and_then(|t| t.with_memory.first().copied())
        .unwrap_or(0);
    let (modes, flags) = crate::numa::mempolicy::probe(node);
    let page_sizes: Vec<String> = crate::numa::hugetlb::kernel_sizes(sys)
        .unwrap_or_default()
        .iter()
        .map(|p| p.cgroup_name())
        .collect();
    let hugetlb = match crate::numa::hugetlb::enforcer(&sys.join("fs/cgroup")) {
        crate::numa::hugetlb::Enforcer::Libcontainer => "libcontainer",
        crate::numa::hugetlb::Enforcer::Cgroup2(_) => "cnfbox-cgroup2",
        crate::numa::hugetlb::Enforcer::None => "none",
    };
    let doc = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        // The recursive (`r`-prefixed) attributes are libcontainer 0.7's
        // mount_setattr(2) with AT_RECURSIVE; idmap/ridmap are cnfbox's
        // views (`volumes`). rshared/shared are accepted only in the host's
        // user namespace (`propagation`).
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
            "idmap", "iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime",
            "noexec", "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime",
            "nosuid", "nosymfollow", "private", "ratime", "rbind", "rdev", "rdiratime",
            "relatime", "remount", "rexec", "ridmap", "rnoatime", "rnodev", "rnodiratime",
            "rnoexec", "rnorelatime", "rnostrictatime", "rnosuid", "rnosymfollow", "ro",
            "rprivate", "rrelatime", "rro", "rrw", "rshared", "rslave", "rstrictatime",
            "rsuid", "rsymfollow", "runbindable", "rw", "shared", "silent",
            "slave", "strictatime", "suid", "symfollow", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<std::collections::BTreeSet<_>>(),
            "cgroup": { "v1": true, "v2": true, "systemd": systemd, "systemdUser": false, "rdma": false },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": true } },
            "memoryPolicy": { "modes": modes, "flags": flags },
            "netDevices": { "enabled": true }
        },
        "annotations": {
            "io.github.cnfbox.version": env!("CARGO_PKG_VERSION"),
            "io.github.cnfbox.libcontainer.version": "0.7",
            "io.github.cnfbox.hugetlb.enforcer": hugetlb,
            "io.github.cnfbox.hugetlb.pageSizes": page_sizes.join(","),
            "io.github.cnfbox.interfaces": "move, macvlan (bridge, private, vepa, passthru), vlan: annotation cnfbox.io/interfaces"
        }
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// Writes a default config.json (as `runc spec`), refusing to overwrite one.
pub fn spec(a: &Spec) -> anyhow::Result<()> {
    let dir = a.bundle.clone().unwrap_or_else(|| ".".into());
    let path = dir.join("config.json");
    if path.exists() {
        anyhow::bail!("{} exists: remove it first", path.display());
    }
    let spec = oci_spec::runtime::Spec::default();
    let body = serde_json::to_string_pretty(&spec)?;
    fs::write(&path, body).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
