//! Small static C programs the tests copy into a busybox rootfs, for what
//! busybox cannot do (mapping hugepages, keeping a setuid bit's ids).
//! Compiled with the host's `cc -static` on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors building a helper.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run cc for {name} (is build-essential installed?)")]
    Spawn {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cc -static {name} failed: {stderr}")]
    Compile { name: &'static str, stderr: String },
}

/// `hugetouch anon|file BYTES [PATH]`: maps and touches 2 MiB hugepages;
/// prints `mmap=`, `touched=` or `sigbus=`, and `numa_maps=` lines.
pub const HUGETOUCH: (&str, &str) = ("hugetouch", include_str!("helpers/hugetouch.c"));

/// `icmpecho`: one ICMP echo to 127.0.0.1 on an unprivileged ICMP socket
/// (what `net.ipv4.ping_group_range` allows), as `UID GID` if given;
/// prints `icmp=ok` or `icmp=<step>:<error>`.
pub const ICMPECHO: (&str, &str) = ("icmpecho", include_str!("helpers/icmpecho.c"));

/// `ids`: prints `ruid= euid= suid= rgid= egid= sgid=` lines; keeps what a
/// setuid bit gave it (busybox drops it for most applets).
pub const IDS: (&str, &str) = ("ids", include_str!("helpers/ids.c"));

/// `devopen kvm|tap|open|vfio|detach PATH ...`: opens a device node and
/// creates a VM (`KVM_CREATE_VM`) or a persistent tap (`TUNSETIFF`) with
/// it, or opens it as `UID GID [GROUP]`, or uses a VFIO group as DPDK does
/// (container, type1 IOMMU, one DMA mapping, the device fd), or tries to
/// detach a cgroup v2's device programs; prints `key=value` lines.
pub const DEVOPEN: (&str, &str) = ("devopen", include_str!("helpers/devopen.c"));

/// `webserve [PORT [PIDFILE [TITLE...]]]`: answers every HTTP request with 200 (the
/// web server of critest's stand-in nginx and httpd images).
pub const WEBSERVE: (&str, &str) = ("webserve", include_str!("helpers/webserve.c"));

/// `pause`: sleeps until SIGTERM or SIGINT (exit 0), reaping inherited
/// children: one process, as Kubernetes' pause (critest's stand-in).
pub const PAUSE: (&str, &str) = ("pause", include_str!("helpers/pause.c"));

/// `nnp`: prints `Effective uid: N` (critest's no-new-privileges probe,
/// installed setuid root).
pub const NNP: (&str, &str) = ("nnp", include_str!("helpers/nnp.c"));

/// Compiles helper `(name, source)` into `dir/name` and returns its path.
pub fn build(helper: (&'static str, &str), dir: &Path) -> Result<PathBuf, HelperError> {
    let (name, source) = helper;
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).map_err(|source| HelperError::Write {
        path: src.clone(),
        source,
    })?;
    let out = dir.join(name);
    let output = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .map_err(|source| HelperError::Spawn { name, source })?;
    if !output.status.success() {
        return Err(HelperError::Compile {
            name,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(out)
}
