//! Id-mapped views of an overlayfs rootfs.
//!
//! containerd's default snapshotter hands the shim an overlay mount for the
//! rootfs. An overlayfs mount cannot be id-mapped (overlayfs lacks
//! FS_ALLOW_IDMAP), but since Linux 5.19 its layers can be
//! (filesystems/overlayfs.rst, "Idmapped layers"). So the pod's view of an
//! overlay rootfs is a second overlay over the same layers:
//!
//! - every lower layer (the image) is an id-mapped bind with the pod's
//!   mapping: container root owns the image's files, nothing is chowned;
//! - the upper layer is used as it is: overlayfs creates its work
//!   directory and copies files up with the mounter's credentials (host
//!   root), which an id-mapped upper cannot represent (the kernel then
//!   silently mounts the overlay read-only). What the pod writes therefore
//!   lands in the upper layer under the pod's host ids (a copied-up image
//!   file keeps its mapped owner), and a fresh, empty upper directory is
//!   handed to the pod's root so that `/` is writable. An upper that
//!   already has content is left alone.
//!
//! Both overlays share the upper and work directories; with `index=off`
//! the kernel only warns about that, and the shim's own mount is never
//! written through once the view exists. The staging binds are detached as
//! soon as the view is mounted (overlayfs keeps private clones of its
//! layers), so tearing the view down is the same as for a bind view. They
//! live in the container's private directory and carry `nosuid,nodev`
//! (`views`).

use std::fs;
use std::path::{Path, PathBuf};

use idmap::PodMapping;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use procfs::process::MountInfos;
use procfs::FromRead as _;

/// statfs(2) f_type of overlayfs.
pub const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;

/// Errors building an overlay view.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("overlay rootfs {rootfs}: no lowerdir in its mount options ({options})")]
    NoLower { rootfs: PathBuf, options: String },
    #[error("overlay rootfs {rootfs}: not found in /proc/self/mountinfo")]
    NotMounted { rootfs: PathBuf },
    #[error("creating the staging directory {path}")]
    Staging {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("id-mapped bind of overlay layer {layer}")]
    Layer {
        layer: PathBuf,
        #[source]
        source: idmap::MountError,
    },
    #[error("hand the fresh upper layer {upper} to the pod's root")]
    Upper {
        upper: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount overlay on {view} over id-mapped layers ({options})")]
    Mount {
        view: PathBuf,
        options: String,
        #[source]
        source: nix::Error,
    },
}

/// The layers of an overlay mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    pub lower: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The layers of the top-most overlay mounted on `mountpoint`, from a
/// mount table (procfs' parse of a mountinfo file), and its superblock
/// options (for messages). procfs leaves mountinfo's octal escapes in the
/// mount point and the option values: they are undone here.
pub fn layers_of(mountpoint: &Path, mounts: &MountInfos) -> Option<(Layers, String)> {
    let want = mountpoint.to_string_lossy();
    let m = mounts
        .iter()
        .filter(|m| unescape(&m.mount_point.to_string_lossy()) == want)
        .rfind(|m| m.fs_type == "overlay")?;
    let option = |key: &str| {
        m.super_options
            .get(key)
            .cloned()
            .flatten()
            .map(|v| unescape(&v))
    };
    let layers = Layers {
        lower: option("lowerdir")
            .map(|v| v.split(':').map(PathBuf::from).collect())
            .unwrap_or_default(),
        upper: option("upperdir").map(PathBuf::from),
        work: option("workdir").map(PathBuf::from),
    };
    let mut options: Vec<String> = m
        .super_options
        .iter()
        .map(|(k, v)| v.as_ref().map_or_else(|| k.clone(), |v| format!("{k}={v}")))
        .collect();
    options.sort();
    Some((layers, options.join(",")))
}

/// Whether `path` is on an overlayfs mount.
pub fn is_overlay(path: &Path) -> bool {
    idmap::mount::fs_magic(path).is_ok_and(|m| m == OVERLAYFS_SUPER_MAGIC)
}

/// Chowns an empty upper directory to the pod's root (host ids of the
/// mapping's container id 0); an upper with content is left as it is.
fn give_fresh_upper(upper: &Path, mapping: &PodMapping) -> Result<(), std::io::Error> {
    if fs::read_dir(upper)?.next().is_some() {
        return Ok(());
    }
    let uid = mapping.uid.host_id();
    let gid = mapping.gid.host_id();
    std::os::unix::fs::chown(upper, Some(uid), Some(gid))
}

/// Detaches and removes every staging mount point under `staging`.
fn clear(staging: &Path, points: &[PathBuf]) {
    for p in points {
        if let Err(err) = umount2(p, MntFlags::MNT_DETACH) {
            tracing::warn!(path = %p.display(), %err, "detach overlay staging layer");
        }
        let _ = fs::remove_dir(p);
    }
    let _ = fs::remove_dir(staging);
}

/// Mounts on `view` an overlay of `rootfs`'s layers, each id-mapped with
/// `mapping` through binds staged in `staging` (removed before returning).
pub fn idmapped_view(
    rootfs: &Path,
    view: &Path,
    mapping: &PodMapping,
    staging: &Path,
) -> Result<(), OverlayError> {
    let mounts = MountInfos::from_file("/proc/self/mountinfo").unwrap_or(MountInfos(Vec::new()));
    let (layers, options) = layers_of(rootfs, &mounts).ok_or_else(|| OverlayError::NotMounted {
        rootfs: rootfs.to_owned(),
    })?;
    if layers.lower.is_empty() {
        return Err(OverlayError::NoLower {
            rootfs: rootfs.to_owned(),
            options,
        });
    }
    fs::create_dir_all(staging).map_err(|source| OverlayError::Staging {
        path: staging.to_owned(),
        source,
    })?;
    let mut points = Vec::new();
    let result = (|| {
        let mut bind = |name: String, src: &Path| -> Result<PathBuf, OverlayError> {
            let p = staging.join(name);
            fs::create_dir_all(&p).map_err(|source| OverlayError::Staging {
                path: p.clone(),
                source,
            })?;
            points.push(p.clone());
            // nosuid,nodev from the start: nothing binds these but
            // overlayfs, which honours setuid bits and devices according
            // to its own mount's flags, not its layers' (see `views`).
            idmap::mount::idmapped_bind_with_attrs(src, &p, mapping, idmap::mount::HOST_SIDE_ATTRS)
                .map_err(|source| OverlayError::Layer {
                    layer: src.to_owned(),
                    source,
                })?;
            Ok(p)
        };
        let mut lowers = Vec::new();
        for (i, l) in layers.lower.iter().enumerate() {
            lowers.push(bind(format!("l{i}"), l)?);
        }
        let mut data = format!(
            "lowerdir={}",
            lowers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        );
        if let (Some(upper), Some(work)) = (&layers.upper, &layers.work) {
            // The upper layer is not id-mapped: overlayfs creates its work
            // directory and copies up with the mounter's credentials (host
            // root), which an id-mapped upper could not represent (the
            // kernel then falls back to a read-only overlay). What the pod
            // writes lands as its own host ids; a fresh (empty) upper's root
            // directory is handed to the pod's root so `/` is writable.
            give_fresh_upper(upper, mapping).map_err(|source| OverlayError::Upper {
                upper: upper.clone(),
                source,
            })?;
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        }
        // Two overlays share the upper layer: allowed (with a warning)
        // only without the inodes index.
        data.push_str(",index=off");
        mount(
            Some("overlay"),
            view,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|source| OverlayError::Mount {
            view: view.to_owned(),
            options: data.clone(),
            source,
        })
    })();
    clear(staging, &points);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
301 22 0:77 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw,relatime - overlay overlay rw,lowerdir=/var/lib/s/snapshots/2/fs:/var/lib/s/snapshots/1/fs,upperdir=/var/lib/s/snapshots/3/fs,workdir=/var/lib/s/snapshots/3/work,index=off
302 22 0:78 / /mnt/with\\040space rw - overlay overlay rw,lowerdir=/a\\040b
";

    #[test]
    fn reads_layers_from_mountinfo() {
        use procfs::FromBufRead as _;
        let info = MountInfos::from_buf_read(INFO.as_bytes()).expect("mountinfo");
        let (l, opts) = layers_of(
            Path::new("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs"),
            &info,
        )
        .expect("found");
        assert_eq!(
            l.lower,
            vec![
                PathBuf::from("/var/lib/s/snapshots/2/fs"),
                PathBuf::from("/var/lib/s/snapshots/1/fs")
            ]
        );
        assert_eq!(l.upper, Some(PathBuf::from("/var/lib/s/snapshots/3/fs")));
        assert_eq!(l.work, Some(PathBuf::from("/var/lib/s/snapshots/3/work")));
        assert!(opts.contains("index=off"));
        let (l, _) = layers_of(Path::new("/mnt/with space"), &info).expect("escaped");
        assert_eq!(l.lower, vec![PathBuf::from("/a b")]);
        assert!(
            layers_of(Path::new("/"), &info).is_none(),
            "ext4 is no overlay"
        );
    }
}
