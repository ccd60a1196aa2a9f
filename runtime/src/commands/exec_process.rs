//! The process `cnfbox exec` starts in a pod: its supplementary groups and
//! capabilities.
//!
//! `cnfbox exec` joins the pod's user namespace before libcontainer builds
//! the process (see `process::join_userns`). libcontainer 0.7 then takes
//! itself for a rootless caller and refuses any `additionalGids`
//! ("unprivileged user can't set supplementary groups", the CVE-2014-8989
//! rule for unprivileged user namespaces), and with none it leaves the
//! groups as they are: the exec'd process would inherit the caller's host
//! groups (the shim's, typically host gid 0). cnfbox's pod user namespace
//! was set up by host root, so setgroups(2) is allowed in it: cnfbox sets
//! exactly the requested groups itself (none, if none were asked for) and
//! hands libcontainer the process without them.
//!
//! containerd builds an exec's process from its own copy of the spec,
//! which never saw the capabilities cnfbox granted the init from
//! `cnfbox.io/capabilities`; `prepare` grants the exec the same.
//!
//! The files are read and written before the caller joins the pod's user
//! namespace, as host root.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::unistd::{setgroups, Gid};
use oci_spec::runtime::Process;

/// A process.json rewritten without `additionalGids`; removed on drop.
pub struct Stripped {
    pub path: PathBuf,
}

impl Drop for Stripped {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %err, "remove exec process file");
        }
    }
}

/// Prepares the exec process at `path` for libcontainer: takes out its
/// `additionalGids` (returned: cnfbox sets them itself) and grants it the
/// capabilities the container's `cnfbox.io/capabilities` annotation grants
/// its init (the policy of `capabilities.rs`, applied to the kept spec
/// `kept_bundle/config.json` with this process), so an exec gets what the
/// container got. The rewritten copy lives in `dir`.
pub fn prepare(
    path: &Path,
    dir: &Path,
    kept_bundle: &Path,
) -> anyhow::Result<(Vec<u32>, Stripped)> {
    let body = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let mut process: Process = serde_json::from_slice(&body)
        .with_context(|| format!("parse the exec process {}", path.display()))?;
    let gids = process.user().additional_gids().clone().unwrap_or_default();
    let mut user = process.user().clone();
    user.set_additional_gids(None);
    process.set_user(user);
    let kept = kept_bundle.join("config.json");
    let mut spec = oci_spec::runtime::Spec::load(&kept)
        .with_context(|| format!("load the container's spec {}", kept.display()))?;
    spec.set_process(Some(process));
    // The create checked that the container's network namespace is the
    // pod's own; a member's was joined through a pin that is gone by now.
    // The exec joins the init's namespaces, so judge it as the create did.
    if let Some(linux) = spec.linux_mut() {
        if let Some(mut namespaces) = linux.namespaces().clone() {
            for n in namespaces
                .iter_mut()
                .filter(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
            {
                n.set_path(None);
            }
            linux.set_namespaces(Some(namespaces));
        }
    }
    crate::capabilities::Policy::load(&idmap::EtcRoot::default().config_path())
        .and_then(|policy| policy.apply(&mut spec, true))
        .context("capabilities of the exec process")?;
    let process = spec.process().clone().unwrap_or_default();
    let out = dir.join(format!("exec-process-{}.json", std::process::id()));
    let body = serde_json::to_vec(&process).context("serialize the exec process")?;
    std::fs::write(&out, body).with_context(|| format!("write {}", out.display()))?;
    Ok((gids, Stripped { path: out }))
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
/// (`<state>/<id>/...config.json`, cnfbox's own copy, which libcontainer's
/// tenant builder validates on every exec); returns the init's groups as
/// the original bundle's spec gives them (for execs built from flags).
/// The init set its groups at create; the copy is not used for it again.
pub fn strip_kept_spec(kept_bundle: &Path, original_bundle: &Path) -> anyhow::Result<Vec<u32>> {
    let read_gids = |dir: &Path| -> Option<Vec<u32>> {
        let body = std::fs::read(dir.join("config.json")).ok()?;
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&body).ok()?;
        spec.process()
            .as_ref()
            .and_then(|p| p.user().additional_gids().clone())
    };
    let init_gids = read_gids(original_bundle).unwrap_or_default();
    let path = kept_bundle.join("config.json");
    let body = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let mut spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&body).with_context(|| format!("parse {}", path.display()))?;
    let Some(mut process) = spec.process().clone() else {
        return Ok(init_gids);
    };
    if process.user().additional_gids().is_none() {
        return Ok(init_gids);
    }
    let mut user = process.user().clone();
    user.set_additional_gids(None);
    process.set_user(user);
    spec.set_process(Some(process));
    // Atomic: concurrent execs read this file.
    let tmp = kept_bundle.join(format!(".config.json.{}", std::process::id()));
    let body = serde_json::to_vec(&spec).context("serialize the kept spec")?;
    std::fs::write(&tmp, body).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("move {} to {}", tmp.display(), path.display()))?;
    Ok(init_gids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_out_additional_gids_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = dir.path().join("kept");
        std::fs::create_dir_all(&kept).expect("mkdir");
        std::fs::write(
            kept.join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#,
        )
        .expect("write spec");
        let p = dir.path().join("process.json");
        std::fs::write(
            &p,
            r#"{"user":{"uid":5,"gid":6,"additionalGids":[10,11]},"args":["id"],"cwd":"/"}"#,
        )
        .expect("write");
        let (gids, stripped) = prepare(&p, dir.path(), &kept).expect("prepare");
        assert_eq!(gids, vec![10, 11]);
        let back: Process =
            serde_json::from_slice(&std::fs::read(&stripped.path).expect("read")).expect("parse");
        assert_eq!(back.user().additional_gids(), &None);
        assert_eq!(back.user().uid(), 5);
        assert_eq!(back.args().as_deref(), Some(&["id".to_string()][..]));
        let path = stripped.path.clone();
        drop(stripped);
        assert!(!path.exists(), "the copy is removed on drop");
    }
}
