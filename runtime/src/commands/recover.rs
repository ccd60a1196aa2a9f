//! `delete --force` of a container whose `create` died half-way (SIGKILL,
//! power cut, OOM) before cnfbox wrote its record (`cnfbox.json`).
//!
//! Without the record, everything is found from what a create leaves, in
//! the order it leaves it: the spec it staged (`.staging/<id>.<pid>/`, or
//! already moved to `<id>/bundle/`), libcontainer's `state.json` (the init
//! and its cgroup), the state dir, and the mounts under
//! `/run/cnfbox-mnt/<root hash>/` named after the id. The pod's range is
//! freed when its staged spec names the pod and no other container of the
//! pod is left; a range granted before the spec was staged is left to
//! `cnfbox ranges gc`, which frees ranges whose owner is provably gone.

use std::fs;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use oci_spec::runtime::Spec;

use super::create::STAGING;
use super::{container_dir, Ctx};
use crate::meta::STAGED_BUNDLE;
use crate::pod;

/// Removes everything container `id` of a killed create may have left.
pub fn half_created(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let dir = container_dir(ctx, id);
    let mut specs = Vec::new();
    for stage in stale_stages(&ctx.root, id) {
        if let Ok(spec) = Spec::load(stage.join("config.json")) {
            specs.push(spec);
        }
        if let Err(err) = fs::remove_dir_all(&stage) {
            tracing::warn!(%id, path = %stage.display(), %err, "remove staged bundle");
        }
    }
    if let Ok(spec) = Spec::load(dir.join(STAGED_BUNDLE).join("config.json")) {
        specs.push(spec);
    }
    if dir.join("state.json").is_file() {
        // libcontainer's own record: kills the init, removes its cgroup and
        // the state dir.
        match Container::load(dir.clone()) {
            Ok(mut c) => {
                if let Err(err) = super::delete_container(&mut c, true) {
                    tracing::warn!(%id, %err, "delete half-created container");
                }
            }
            Err(err) => tracing::warn!(%id, %err, "load half-created container"),
        }
    }
    for spec in &specs {
        if let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()) {
            remove_cgroup(&path, ctx.systemd, id);
        }
    }
    if specs.is_empty() {
        // Killed before the spec was staged: only the default path can
        // hold a cgroup (the hugetlb one is made before staging).
        remove_cgroup(&Path::new("/cnfbox").join(id), ctx.systemd, id);
    }
    if dir.exists() {
        fs::remove_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("remove state dir {}: {e}", dir.display()))?;
    }
    crate::profile::teardown_by_id(&ctx.root, id);
    // The pod's range goes if this was its last container (sandbox or
    // member); its other containers keep it.
    for spec in &specs {
        let role = pod::role(id, spec.annotations().as_ref());
        let pod = role.pod();
        crate::profile::release_unused(&ctx.root, pod)
            .map_err(|e| anyhow::anyhow!("release the range of pod {pod}: {e}"))?;
    }
    Ok(())
}

/// `.staging/<id>.<pid>` dirs whose create process is gone.
fn stale_stages(root: &Path, id: &str) -> Vec<PathBuf> {
    let prefix = format!("{id}.");
    let Ok(entries) = fs::read_dir(root.join(STAGING)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(&prefix)?.parse::<u32>().ok()?;
            // A create of the same id still running owns its stage.
            (!Path::new(&format!("/proc/{pid}")).exists()).then(|| e.path())
        })
        .collect()
}

fn remove_cgroup(path: &Path, systemd: bool, id: &str) {
    use libcgroups::common::CgroupManager;
    match libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: path.to_path_buf(),
        systemd_cgroup: systemd,
        container_name: id.to_string(),
    }) {
        Ok(manager) => {
            if let Err(err) = manager.remove() {
                tracing::warn!(%id, %err, path = %path.display(), "remove cgroup of a half-created container");
            }
        }
        Err(err) => tracing::warn!(%id, %err, "open cgroup of a half-created container"),
    }
    // The hugetlb cgroup cnfbox makes on a hybrid host's cgroup2 tree.
    let sys = Path::new("/sys");
    if let crate::hugetlb::Enforcer::Cgroup2(mount) =
        crate::hugetlb::enforcer(&sys.join("fs/cgroup"))
    {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let cg = crate::hugetlb::Cgroup2 {
            dir: mount.join(rel),
            limits: Vec::new(),
        };
        if let Err(err) = cg.remove() {
            tracing::warn!(%id, %err, "remove hugetlb cgroup of a half-created container");
        }
    }
}
