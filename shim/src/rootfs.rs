//! The container's rootfs: containerd hands the shim the snapshot's mounts
//! (CreateTaskRequest.rootfs), and the shim mounts them on `bundle/rootfs`
//! before the runtime runs, as every v2 shim must.

use std::path::{Path, PathBuf};

use containerd_shim::asynchronous::util::mount_rootfs;
use containerd_shim::protos::types::mount::Mount;
use nix::mount::{umount2, MntFlags};

/// Errors mounting the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("creating the rootfs directory {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounting {kind} {source_path} on {target}: {message}")]
    Mount {
        kind: String,
        source_path: String,
        target: PathBuf,
        message: String,
    },
}

/// Mounts `mounts` in order on `target`; on failure, undoes what it did.
pub async fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(target).map_err(|source| RootfsError::Mkdir {
        path: target.to_owned(),
        source,
    })?;
    for (done, m) in mounts.iter().enumerate() {
        if let Err(err) = mount_rootfs(m, target).await {
            for _ in 0..done {
                unmount(target);
            }
            return Err(RootfsError::Mount {
                kind: m.type_.clone(),
                source_path: m.source.clone(),
                target: target.to_owned(),
                message: err.to_string(),
            });
        }
    }
    Ok(())
}

/// Detaches everything mounted on `target` (best effort, logged).
pub fn unmount(target: &Path) {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return,
            Err(err) => {
                log::warn!("unmounting {}: {err}", target.display());
                return;
            }
        }
    }
}
