//! Mount propagation as containerd's CRI asks for it (Kubernetes'
//! `mountPropagation`), fitted to what libcontainer 0.7 and a pod's user
//! namespace can do.
//!
//! - `HostToContainer` is a bind with `rslave` and `linux.rootfsPropagation:
//!   "rslave"`. libcontainer 0.7 knows only `shared`, `slave`, `private`
//!   and `unbindable` there (and always applies them with `MS_REC`), so it
//!   refused the create with `UnknownRootfsPropagation: rslave`; runc takes
//!   both spellings. cnfbox hands libcontainer the plain one. A mount the
//!   host makes under a shared hostPath then appears inside.
//! - `Bidirectional` is `rshared` on the bind and on the rootfs. From the
//!   pod's own user namespace it cannot work: the kernel makes every mount
//!   that reaches a less privileged mount namespace a slave of the host's
//!   (mount_namespaces(7), "restrictions on mount namespaces"), so a mount
//!   the pod makes never propagates back to the host, whatever the options
//!   say (runc in a user namespace is no different, it just does not say
//!   so). Kubernetes allows `Bidirectional` only in privileged containers,
//!   which run in the host's user namespace under `[pods] host_namespaces
//!   = "host-userns"` (see `host_ns`), where it works as under runc. In a
//!   pod's user namespace it is refused with a line naming the option, rather
//!   than silently doing less than asked.

use oci_spec::runtime::Spec;

/// Errors fitting propagation to the container.
#[derive(Debug, thiserror::Error)]
pub enum PropagationError {
    #[error("linux.rootfsPropagation: {value:?} is not one of shared, slave, private, unbindable (or their r- forms)")]
    Unknown { value: String },
    #[error("{field}: {value:?} (Bidirectional mount propagation) cannot reach the host from the pod's user namespace (the kernel makes its mounts slaves of the host's); use rslave (HostToContainer), or run the pod privileged in the host's user namespace ([pods] host_namespaces = \"host-userns\")")]
    SharedInPodUserns { field: String, value: String },
}

/// Rewrites `linux.rootfsPropagation` to libcontainer's spelling and, in a
/// pod's own user namespace (`private_userns`), refuses shared propagation
/// on the rootfs and on bind mounts.
pub fn fit(spec: &mut Spec, private_userns: bool) -> Result<(), PropagationError> {
    if private_userns {
        for (index, m) in spec.mounts().iter().flatten().enumerate() {
            if let Some(o) = m
                .options()
                .iter()
                .flatten()
                .find(|o| *o == "shared" || *o == "rshared")
            {
                return Err(PropagationError::SharedInPodUserns {
                    field: format!("mounts[{index}] ({})", m.destination().display()),
                    value: o.clone(),
                });
            }
        }
    }
    let Some(linux) = spec.linux_mut() else {
        return Ok(());
    };
    let Some(value) = linux.rootfs_propagation().clone() else {
        return Ok(());
    };
    let plain = match value.as_str() {
        "shared" | "rshared" => "shared",
        "slave" | "rslave" => "slave",
        "private" | "rprivate" => "private",
        "unbindable" | "runbindable" => "unbindable",
        _ => return Err(PropagationError::Unknown { value }),
    };
    if private_userns && plain == "shared" {
        return Err(PropagationError::SharedInPodUserns {
            field: "linux.rootfsPropagation".into(),
            value,
        });
    }
    linux.set_rootfs_propagation(Some(plain.to_string()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn with(rootfs: Option<&str>, opts: &[&str]) -> Spec {
        let mut spec = Spec::default();
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(
            MountBuilder::default()
                .destination("/data")
                .typ("bind")
                .source("/tmp")
                .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .build()
                .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_rootfs_propagation(rootfs.map(str::to_string));
        spec
    }

    fn rootfs(spec: &Spec) -> Option<String> {
        spec.linux().as_ref().unwrap().rootfs_propagation().clone()
    }

    #[test]
    fn r_forms_become_libcontainers_spelling() {
        for (given, want) in [
            ("rslave", "slave"),
            ("slave", "slave"),
            ("rprivate", "private"),
            ("runbindable", "unbindable"),
        ] {
            let mut spec = with(Some(given), &["rbind", "rslave"]);
            fit(&mut spec, true).unwrap();
            assert_eq!(rootfs(&spec).as_deref(), Some(want));
        }
        let mut spec = with(Some("rshared"), &["rbind", "rshared"]);
        fit(&mut spec, false).unwrap();
        assert_eq!(rootfs(&spec).as_deref(), Some("shared"));
        let mut spec = with(None, &["rbind"]);
        fit(&mut spec, true).unwrap();
        assert_eq!(rootfs(&spec), None);
    }

    #[test]
    fn shared_in_a_pod_userns_and_unknown_values_are_refused() {
        let err = fit(&mut with(Some("rslave"), &["rbind", "rshared"]), true).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("mounts[") && msg.contains("/data") && msg.contains("\"rshared\""),
            "{msg}"
        );
        let err = fit(&mut with(Some("rshared"), &["rbind"]), true).unwrap_err();
        assert!(err.to_string().contains("linux.rootfsPropagation"), "{err}");
        let err = fit(&mut with(Some("sideways"), &["rbind"]), false).unwrap_err();
        assert!(err.to_string().contains("\"sideways\""), "{err}");
    }
}
