//! Id-mapped volumes: every bind mount of a pod's container is shown
//! through the pod's mapping, so a file owned by host uid N is uid N inside
//! and a file container root writes lands on disk as uid 0 (as Kubernetes'
//! user-namespace volumes behave).
//!
//! libcontainer 0.7 refuses the OCI 1.2 `idmap`/`ridmap` options and
//! per-mount `uidMappings`/`gidMappings` (`MountIdmapUnsupported`), so cnfbox
//! makes the id-mapped view itself, before `create`, and rewrites the mount
//! to a plain bind of that view; the idmapping travels with the bind.
//! Mounts that are not binds (proc, sysfs, devpts, mqueue, a tmpfs made for
//! the container) are created inside the pod's namespaces by the kernel's
//! rules and need no mapping; they are left as they are.

use std::fs;
use std::path::{Path, PathBuf};

use idmap::{Mapping, PodMapping};
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

/// Pod or container annotation: `none` turns default volume id-mapping off.
pub const ANNOTATION: &str = cnfbox_annotations::IDMAP_VOLUMES;

/// Errors id-mapping a volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("annotation {ANNOTATION}: {value:?} is not \"pod\" or \"none\"")]
    Annotation { value: String },
    #[error("mounts[{index}] ({dest}): {field}: {reason}")]
    Mappings {
        index: usize,
        dest: PathBuf,
        field: &'static str,
        reason: String,
    },
    #[error("mounts[{index}] ({dest}): a {typ} mount cannot be id-mapped (only bind mounts can; it is created inside the pod's namespaces already)")]
    NotBind {
        index: usize,
        dest: PathBuf,
        typ: String,
    },
    #[error("mounts[{index}] ({dest}): bind source {source_path} does not exist")]
    MissingSource {
        index: usize,
        dest: PathBuf,
        source_path: PathBuf,
    },
    #[error("mounts[{index}] ({dest}): create view {path}")]
    ViewPoint {
        index: usize,
        dest: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mounts[{index}] ({dest}): view of {source_path} (set {ANNOTATION}: none to bind it unmapped)")]
    Idmap {
        index: usize,
        dest: PathBuf,
        source_path: PathBuf,
        #[source]
        source: Box<idmap::MountError>,
    },
    /// A writable bind of an overlayfs source: its id-mapped view can only
    /// be read-only (`volume_overlay`).
    #[error("mounts[{index}] ({dest}): {source_path} is on an overlayfs, whose id-mapped view is read-only: add the \"ro\" option, or set {ANNOTATION}: none to bind it unmapped")]
    OverlayWritable {
        index: usize,
        dest: PathBuf,
        source_path: PathBuf,
    },
    /// An overlayfs source (containerd's image volumes): its layers are
    /// id-mapped and overlaid again, read-only.
    #[error("mounts[{index}] ({dest}): id-mapped view of the overlayfs {source_path}")]
    Overlay {
        index: usize,
        dest: PathBuf,
        source_path: PathBuf,
        #[source]
        source: Box<crate::overlay::OverlayError>,
    },
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

fn one_line(
    index: usize,
    m: &Mount,
    field: &'static str,
    lines: &[LinuxIdMapping],
) -> Result<Mapping, VolumeError> {
    let err = |reason: String| VolumeError::Mappings {
        index,
        dest: m.destination().clone(),
        field,
        reason,
    };
    let [l] = lines else {
        return Err(err(format!(
            "expected one range, got {} lines",
            lines.len()
        )));
    };
    Mapping::new(l.container_id(), l.host_id(), l.size()).map_err(|e| err(e.to_string()))
}

/// The mapping a mount asks for: its own `uidMappings`/`gidMappings`, the
/// pod's when it carries `idmap`/`ridmap` or when volumes are mapped by
/// default, or none.
fn wanted(
    index: usize,
    m: &Mount,
    pod: &PodMapping,
    by_default: bool,
) -> Result<Option<PodMapping>, VolumeError> {
    let opts: Vec<&str> = m.options().iter().flatten().map(String::as_str).collect();
    let asked = opts.iter().any(|o| *o == "idmap" || *o == "ridmap");
    match (m.uid_mappings(), m.gid_mappings()) {
        (Some(u), Some(g)) => {
            let own = PodMapping {
                uid: one_line(index, m, "uidMappings", u)?,
                gid: one_line(index, m, "gidMappings", g)?,
            };
            // A mount's host IDs are the pod's own: outside them the pod
            // could only ever see unmapped owners, and a mapping that names
            // other host IDs is a mistake or an attempt on them.
            for (field, mine, pods) in [
                ("uidMappings", own.uid, pod.uid),
                ("gidMappings", own.gid, pod.gid),
            ] {
                if !pods.host_range().contains_range(&mine.host_range()) {
                    return Err(VolumeError::Mappings {
                        index,
                        dest: m.destination().clone(),
                        field,
                        reason: format!(
                            "host IDs {} lie outside the pod's range {}",
                            mine.host_range(),
                            pods.host_range()
                        ),
                    });
                }
            }
            Ok(Some(own))
        }
        (Some(_), None) | (None, Some(_)) => Err(VolumeError::Mappings {
            index,
            dest: m.destination().clone(),
            field: "uidMappings/gidMappings",
            reason: "both must be given".into(),
        }),
        (None, None) if asked || by_default => Ok(Some(*pod)),
        (None, None) => Ok(None),
    }
}

/// Attaches id-mapped views of the spec's bind mounts under `dir` and points
/// the mounts at them. Returns the views attached (to detach at delete); on
/// error, the views attached so far are detached.
pub fn apply(spec: &mut Spec, pod: &PodMapping, dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let by_default = match spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .map(String::as_str)
    {
        None | Some("pod") => true,
        Some("none") => false,
        Some(other) => {
            return Err(VolumeError::Annotation {
                value: other.to_string(),
            })
        }
    };
    let Some(mut mounts) = spec.mounts().clone() else {
        return Ok(Vec::new());
    };
    let mut views = Vec::new();
    // The container's directory, private to the pod's root (see `views`),
    // made with the first view.
    let mut dir_made = false;
    let result = (|| {
        for (index, m) in mounts.iter_mut().enumerate() {
            if !is_bind(m) {
                let asks = m.uid_mappings().is_some()
                    || m.gid_mappings().is_some()
                    || m.options()
                        .iter()
                        .flatten()
                        .any(|o| o == "idmap" || o == "ridmap");
                if asks {
                    return Err(VolumeError::NotBind {
                        index,
                        dest: m.destination().clone(),
                        typ: m.typ().clone().unwrap_or_else(|| "untyped".into()),
                    });
                }
                continue;
            }
            // Even an unmapped bind gets a view under the mount base: the
            // init binds it after entering the pod's user namespace and
            // could not traverse a private directory to the source.
            let mapping = wanted(index, m, pod, by_default)?;
            let src = m.source().clone().unwrap_or_default();
            let meta = fs::metadata(&src).map_err(|_| VolumeError::MissingSource {
                index,
                dest: m.destination().clone(),
                source_path: src.clone(),
            })?;
            let view = dir.join(index.to_string());
            let guarded = if dir_made {
                Ok(())
            } else {
                crate::views::guard(dir, crate::views::Owner::pod_root(pod))
            };
            dir_made = true;
            let made = guarded.and_then(|()| {
                if meta.is_dir() {
                    fs::DirBuilder::new().recursive(true).create(&view)
                } else {
                    fs::File::create(&view).map(drop)
                }
            });
            made.map_err(|source| VolumeError::ViewPoint {
                index,
                dest: m.destination().clone(),
                path: view.clone(),
                source,
            })?;
            let idmap_err = |source| VolumeError::Idmap {
                index,
                dest: m.destination().clone(),
                source_path: src.clone(),
                source: Box::new(source),
            };
            let attached = match &mapping {
                // An overlayfs (containerd's image volumes) cannot be
                // id-mapped, its layers can: overlaid again, read-only
                // (`volume_overlay`).
                Some(_) if crate::overlay::is_overlay(&src) && !read_only(m) => {
                    Err(VolumeError::OverlayWritable {
                        index,
                        dest: m.destination().clone(),
                        source_path: src.clone(),
                    })
                }
                Some(mapping) if crate::overlay::is_overlay(&src) => {
                    let staging = dir.join(format!("{index}.layers"));
                    crate::volume_overlay::readonly_view(&src, &view, mapping, &staging).map_err(
                        |source| VolumeError::Overlay {
                            index,
                            dest: m.destination().clone(),
                            source_path: src.clone(),
                            source: Box::new(source),
                        },
                    )
                }
                Some(mapping) => idmap::idmapped_bind(&src, &view, mapping).map_err(idmap_err),
                None => plain_bind(&src, &view).map_err(idmap_err),
            };
            if let Err(e) = attached {
                remove_point(&view);
                return Err(e);
            }
            views.push(view.clone());
            host_side_atime(index, m, &view)?;
            m.set_source(Some(view));
            m.set_uid_mappings(None);
            m.set_gid_mappings(None);
            let opts: Vec<String> = m
                .options()
                .iter()
                .flatten()
                .filter(|o| *o != "idmap" && *o != "ridmap")
                .cloned()
                .collect();
            m.set_options(Some(opts));
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            spec.set_mounts(Some(mounts));
            Ok(views)
        }
        Err(e) => {
            detach_all(&views);
            // The container's view directory, also when no view was made.
            let _ = fs::remove_dir(dir);
            Err(e)
        }
    }
}

/// Whether the bind asks to be read-only (`ro`).
fn read_only(m: &Mount) -> bool {
    m.options().iter().flatten().any(|o| o == "ro")
}

/// The bind's atime options (`noatime`, `rnoatime`, `strictatime`,
/// `nodiratime`, ...) set on its host-side view. The kernel locks atime
/// flags on every mount of the container's (user-namespace-owned) mount
/// namespace, so libcontainer's remount with them failed with EPERM; set
/// here first, its remount repeats what is already there. The options stay
/// in the spec: a later remount (`ro`) without them would change them back,
/// which the lock refuses.
fn host_side_atime(index: usize, m: &Mount, view: &Path) -> Result<(), VolumeError> {
    let mut flat = idmap::mount::Atime::default();
    let mut deep = idmap::mount::Atime::default();
    for o in m.options().iter().flatten() {
        let known = |n: &str| matches!(n, "noatime" | "strictatime" | "relatime" | "nodiratime");
        let (rec, name) = match o.strip_prefix('r') {
            Some(n) if known(n) => (true, n),
            _ => (false, o.as_str()),
        };
        let which = if rec { &mut deep } else { &mut flat };
        match name {
            "noatime" => which.mode = Some(0x10),
            "strictatime" => which.mode = Some(0x20),
            "relatime" => which.mode = Some(0),
            "nodiratime" => which.nodiratime = true,
            _ => {}
        }
    }
    for (atime, recursive) in [(deep, true), (flat, false)] {
        if atime == idmap::mount::Atime::default() {
            continue;
        }
        idmap::mount::set_atime(view, atime, recursive).map_err(|source| VolumeError::Idmap {
            index,
            dest: m.destination().clone(),
            source_path: view.to_path_buf(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// A detached recursive clone of `src` attached at `view`, unmapped.
fn plain_bind(src: &Path, view: &Path) -> Result<(), idmap::MountError> {
    use std::os::fd::AsFd;
    let tree = idmap::mount::open_tree_clone(src)?;
    idmap::mount::move_mount(tree.as_fd(), src, view)
}

fn remove_point(p: &Path) {
    let _ = fs::remove_dir(p).or_else(|_| fs::remove_file(p));
}

/// Lazily detaches volume views and removes their mount points.
pub fn detach_all(views: &[PathBuf]) {
    for v in views {
        if let Err(err) = crate::host::lazy_umount(v) {
            tracing::warn!(path = %v.display(), %err, "detach volume view");
        }
        remove_point(v);
    }
    if let Some(parent) = views.first().and_then(|v| v.parent()) {
        let _ = fs::remove_dir(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(json: serde_json::Value) -> Mount {
        serde_json::from_value(json).unwrap()
    }

    fn pod() -> PodMapping {
        PodMapping::symmetric(Mapping::new(0, 200_000, 65_536).unwrap())
    }

    #[test]
    fn binds_by_type_or_option() {
        assert!(is_bind(&mount(
            serde_json::json!({"destination": "/a", "type": "bind", "source": "/x"})
        )));
        assert!(is_bind(&mount(
            serde_json::json!({"destination": "/a", "source": "/x", "options": ["rbind"]})
        )));
        assert!(!is_bind(&mount(
            serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc"})
        )));
    }

    #[test]
    fn a_mount_gets_its_own_mapping_the_pods_or_none() {
        let plain = mount(serde_json::json!({"destination": "/a", "type": "bind", "source": "/x"}));
        assert_eq!(wanted(0, &plain, &pod(), false).unwrap(), None);
        assert_eq!(wanted(0, &plain, &pod(), true).unwrap(), Some(pod()));
        let asked = mount(
            serde_json::json!({"destination": "/a", "type": "bind", "source": "/x", "options": ["rbind", "idmap"]}),
        );
        assert_eq!(wanted(0, &asked, &pod(), false).unwrap(), Some(pod()));
        let own = mount(
            serde_json::json!({"destination": "/a", "type": "bind", "source": "/x",
            "uidMappings": [{"containerID": 0, "hostID": 201000, "size": 10}],
            "gidMappings": [{"containerID": 0, "hostID": 201000, "size": 10}]}),
        );
        let m = wanted(0, &own, &pod(), false).unwrap().unwrap();
        assert_eq!(m.uid.host_id(), 201_000);
        assert_eq!(m.uid.size(), 10);
    }

    #[test]
    fn hostile_mount_mappings_are_refused_by_field() {
        let outside = mount(
            serde_json::json!({"destination": "/a", "type": "bind", "source": "/x",
            "uidMappings": [{"containerID": 0, "hostID": 0, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 1}]}),
        );
        let err = wanted(3, &outside, &pod(), false).unwrap_err().to_string();
        assert!(
            err.contains("uidMappings") && err.contains("outside the pod's range"),
            "{err}"
        );
        let half = mount(
            serde_json::json!({"destination": "/a", "type": "bind", "source": "/x",
            "uidMappings": [{"containerID": 0, "hostID": 200000, "size": 1}]}),
        );
        let err = wanted(0, &half, &pod(), false).unwrap_err().to_string();
        assert!(err.contains("both must be given"), "{err}");
        let two = mount(
            serde_json::json!({"destination": "/a", "type": "bind", "source": "/x",
            "uidMappings": [{"containerID": 0, "hostID": 200000, "size": 1}, {"containerID": 1, "hostID": 200001, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 1}]}),
        );
        let err = wanted(0, &two, &pod(), false).unwrap_err().to_string();
        assert!(err.contains("expected one range, got 2"), "{err}");
    }
}
