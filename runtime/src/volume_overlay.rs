//! A read-only id-mapped view of a volume whose source is on an overlayfs
//! (containerd 2.x mounts a Kubernetes image volume so, read-only, and a
//! `subPath` is a directory inside it).
//!
//! overlayfs cannot be id-mapped, its layers can. Every layer of the
//! overlay holding the source (its upper one too, topmost) is id-mapped
//! and stacked as a lower layer of a new, read-only overlay; the view is
//! that overlay, or the source's directory in it bound on the view. One
//! layer alone is bound as it is (an overlay needs two lower layers or an
//! upper one). Nothing is written to the layers: the source's own overlay
//! keeps working as it was.

use std::fs;
use std::path::{Path, PathBuf};

use idmap::PodMapping;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use procfs::process::MountInfos;
use procfs::FromRead as _;

use crate::overlay::{layers_of, OverlayError};

/// Mounts on `view` the read-only id-mapped view of `src`, staging the
/// layers in `staging` (removed before returning).
pub fn readonly_view(
    src: &Path,
    view: &Path,
    mapping: &PodMapping,
    staging: &Path,
) -> Result<(), OverlayError> {
    let mounts = MountInfos::from_file("/proc/self/mountinfo").unwrap_or(MountInfos(Vec::new()));
    let (root, layers) = src
        .ancestors()
        .find_map(|a| layers_of(a, &mounts).map(|(l, _)| (a.to_path_buf(), l)))
        .ok_or_else(|| OverlayError::NotMounted {
            rootfs: src.to_owned(),
        })?;
    let rel = src.strip_prefix(&root).unwrap_or(Path::new("")).to_owned();
    let stack: Vec<PathBuf> = layers.upper.into_iter().chain(layers.lower).collect();
    fs::create_dir_all(staging).map_err(|source| OverlayError::Staging {
        path: staging.to_owned(),
        source,
    })?;
    let mut points = Vec::new();
    let result = (|| {
        let mut binds = Vec::new();
        for (i, layer) in stack.iter().enumerate() {
            let p = point(staging, &format!("l{i}"), &mut points)?;
            idmap::mount::idmapped_bind_with_attrs(
                layer,
                &p,
                mapping,
                idmap::mount::HOST_SIDE_ATTRS | idmap::mount::MOUNT_ATTR_RDONLY,
            )
            .map_err(|source| OverlayError::Layer {
                layer: layer.clone(),
                source,
            })?;
            binds.push(p);
        }
        let merged = match binds.as_slice() {
            [] => {
                return Err(OverlayError::NoLower {
                    rootfs: root.clone(),
                    options: String::new(),
                })
            }
            [one] => one.clone(),
            many => {
                let merged = point(staging, "merged", &mut points)?;
                let data = format!(
                    "lowerdir={}",
                    many.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                );
                mount(
                    Some("overlay"),
                    &merged,
                    Some("overlay"),
                    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(data.as_str()),
                )
                .map_err(|source| OverlayError::Mount {
                    view: merged.clone(),
                    options: data,
                    source,
                })?;
                merged
            }
        };
        let from = merged.join(&rel);
        mount(
            Some(&from),
            view,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| OverlayError::Mount {
            view: view.to_owned(),
            options: format!("bind of {}", from.display()),
            source,
        })
    })();
    // The view holds what it needs; the staging mounts go.
    for p in points.iter().rev() {
        let _ = umount2(p, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(p);
    }
    let _ = fs::remove_dir(staging);
    result
}

fn point(staging: &Path, name: &str, points: &mut Vec<PathBuf>) -> Result<PathBuf, OverlayError> {
    let p = staging.join(name);
    fs::create_dir_all(&p).map_err(|source| OverlayError::Staging {
        path: p.clone(),
        source,
    })?;
    points.push(p.clone());
    Ok(p)
}
