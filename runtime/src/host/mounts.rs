//! Host-side mount helpers every feature uses: namespace pins and lazy
//! unmounts. They act on the host's mount namespace only and know nothing
//! of pods, so the features (profile, volumes, hugetlbfs, devices, net)
//! import them from here rather than from each other.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

/// Errors pinning a namespace.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("create the pin point {path}")]
    Point {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bind-mount the namespace {from} on {to}")]
    Mount {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Pins the namespace file `from` at `to` (a bind mount on a fresh pin
/// point, as `ip netns add` does); the pin point goes again if the mount
/// fails.
pub fn pin(from: &Path, to: &Path) -> Result<(), PinError> {
    create_pin_point(to).map_err(|source| PinError::Point {
        path: to.to_path_buf(),
        source,
    })?;
    nix::mount::mount(
        Some(from),
        to,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| {
        let _ = fs::remove_file(to);
        PinError::Mount {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        }
    })
}

/// The empty file a namespace pin is bind-mounted on, mode 0600 (once
/// mounted, the namespace file shows its own 0444; the directory is what
/// keeps other users from opening it and holding the namespace).
fn create_pin_point(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
}

/// Drops a namespace pin once the container's init has joined.
pub fn unpin(pin: &Path) {
    if let Err(err) = lazy_umount(pin) {
        tracing::warn!(path = %pin.display(), %err, "unpin namespace");
    }
    let _ = fs::remove_file(pin);
}

/// umount2(MNT_DETACH); a mount point that is already gone or unmounted
/// (ENOENT, EINVAL) is fine.
///
/// The mount is made a recursive slave first. A view cloned from a shared
/// hostPath mount is in that mount's peer group, and unmounting it would
/// propagate to the peers (mount_namespaces(7), "MS_SHARED"): the host's
/// own submounts under the hostPath, and the mounts the host made there
/// while the pod ran (HostToContainer), would go with the view. A slave
/// receives from its master but sends nothing back.
pub fn lazy_umount(path: &Path) -> Result<(), nix::Error> {
    use nix::mount::MsFlags;
    match nix::mount::mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Ok(()) => {}
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}
