//! The container's rootfs: containerd hands the shim the snapshot's mounts
//! (CreateTaskRequest.rootfs), and the shim mounts them on `bundle/rootfs`
//! before the runtime runs, as every v2 shim must.
//!
//! For a kubelet user-namespace pod containerd 2.x's overlay snapshotter
//! adds `uidmap=`/`gidmap=` to the overlay's options: no kernel option,
//! but an instruction to the mounter (containerd's Go mount package) to
//! id-map the lower layers. cnfbox id-maps the layers of its own view of
//! the rootfs with the pod's mapping (runtime/src/overlay.rs), so the shim
//! mounts the overlay without them, after checking that they are the
//! spec's `linux.uidMappings`/`gidMappings`: a rootfs mapped one way and a
//! pod mapped another would give the pod's files to other host ids.

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
    #[error("overlay rootfs option {option}: {reason}")]
    IdMapOption { option: String, reason: String },
    #[error("reading the spec {path} for the rootfs id-mapping check")]
    Spec {
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
/// `spec` is the bundle's config.json (for the id-mapping check).
pub async fn mount_all(mounts: &[Mount], target: &Path, spec: &Path) -> Result<(), RootfsError> {
    let mounts = without_idmap_options(mounts, spec)?;
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

/// `mounts` without the `uidmap=`/`gidmap=` options of overlay mounts, once
/// each is found equal to the spec's mapping of its kind.
fn without_idmap_options(mounts: &[Mount], spec: &Path) -> Result<Vec<Mount>, RootfsError> {
    let mut spec_maps: Option<serde_json::Value> = None;
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let mut m = m.clone();
        if m.type_ == "overlay" {
            let mut kept = Vec::with_capacity(m.options.len());
            for o in m.options.drain(..) {
                let Some((field, value)) = idmap_option(&o) else {
                    kept.push(o);
                    continue;
                };
                if spec_maps.is_none() {
                    spec_maps = Some(read_linux(spec)?);
                }
                let want = spec_maps.as_ref().and_then(|l| spec_mapping(l, field));
                let given = parse_mapping(value);
                match (given, want) {
                    (Some(g), Some(w)) if g == w => {
                        log::info!(
                            "overlay rootfs: {o} is the spec's {field}; cnfbox id-maps the layers"
                        );
                    }
                    (None, _) => {
                        return Err(RootfsError::IdMapOption {
                            option: o,
                            reason: "expected one CONTAINER:HOST:SIZE range".into(),
                        })
                    }
                    (Some(_), w) => {
                        return Err(RootfsError::IdMapOption {
                            reason: match w {
                                Some(w) => format!(
                                    "differs from the spec's linux.{field} {}:{}:{}",
                                    w.0, w.1, w.2
                                ),
                                None => format!("the spec has no single-line linux.{field}"),
                            },
                            option: o,
                        })
                    }
                }
            }
            m.options = kept;
        }
        out.push(m);
    }
    Ok(out)
}

/// `("uidMappings", value)` for `uidmap=value`, the same for gid.
fn idmap_option(o: &str) -> Option<(&'static str, &str)> {
    if let Some(v) = o.strip_prefix("uidmap=") {
        return Some(("uidMappings", v));
    }
    o.strip_prefix("gidmap=").map(|v| ("gidMappings", v))
}

/// One `CONTAINER:HOST:SIZE` range.
fn parse_mapping(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split(':').map(|n| n.parse::<u64>().ok());
    let m = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(m)
}

fn read_linux(spec: &Path) -> Result<serde_json::Value, RootfsError> {
    let err = |source| RootfsError::Spec {
        path: spec.to_owned(),
        source,
    };
    let text = std::fs::read(spec).map_err(err)?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    Ok(v.get("linux").cloned().unwrap_or_default())
}

/// The spec's only range of `field` (`uidMappings`/`gidMappings`).
fn spec_mapping(linux: &serde_json::Value, field: &str) -> Option<(u64, u64, u64)> {
    let [m] = linux.get(field)?.as_array()?.as_slice() else {
        return None;
    };
    let n = |k: &str| m.get(k).and_then(serde_json::Value::as_u64);
    Some((n("containerID")?, n("hostID")?, n("size")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(opts: &[&str]) -> Mount {
        let mut m = Mount::new();
        m.type_ = "overlay".into();
        m.source = "overlay".into();
        m.options = opts.iter().map(|s| (*s).to_owned()).collect();
        m
    }

    fn spec(dir: &Path, uid: (u64, u64, u64)) -> PathBuf {
        let p = dir.join("config.json");
        let line = |m: (u64, u64, u64)| serde_json::json!([{"containerID": m.0, "hostID": m.1, "size": m.2}]);
        let v = serde_json::json!({"linux": {
            "uidMappings": line(uid),
            "gidMappings": line((0, 200_000, 65536)),
        }});
        std::fs::write(&p, v.to_string()).unwrap();
        p
    }

    #[test]
    fn idmap_options_equal_to_the_spec_are_dropped_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), (0, 200_000, 65536));
        let m = overlay(&[
            "index=off",
            "lowerdir=/l",
            "uidmap=0:200000:65536",
            "gidmap=0:200000:65536",
        ]);
        let out = without_idmap_options(&[m], &spec).unwrap();
        assert_eq!(out[0].options, vec!["index=off", "lowerdir=/l"]);
    }

    #[test]
    fn idmap_options_unlike_the_spec_or_malformed_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), (0, 300_000, 65536));
        let m = overlay(&["uidmap=0:200000:65536"]);
        let e = without_idmap_options(&[m], &spec).unwrap_err().to_string();
        assert!(
            e.contains("uidmap=0:200000:65536") && e.contains("0:300000:65536"),
            "{e}"
        );
        let m = overlay(&["gidmap=0:200000:65536,1:2:3"]);
        let e = without_idmap_options(&[m], &spec).unwrap_err().to_string();
        assert!(e.contains("one CONTAINER:HOST:SIZE"), "{e}");
        // Not an overlay: left alone (the runtime refuses what it cannot map).
        let mut b = overlay(&["uidmap=0:1:2"]);
        b.type_ = "bind".into();
        let out = without_idmap_options(&[b], &dir.path().join("missing")).unwrap();
        assert_eq!(out[0].options, vec!["uidmap=0:1:2"]);
    }
}
