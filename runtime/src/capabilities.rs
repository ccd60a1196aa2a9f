//! Namespaced capabilities: what a pod may hold beyond containerd's default
//! set, and the `cnfbox.io/capabilities` annotation that asks for it.
//!
//! Capabilities held in the pod's own user namespace act only on resources
//! that namespace owns (capabilities(7), user_namespaces(7)): NET_ADMIN
//! configures the pod's network namespace, never the host's. cnfbox grants
//! them only with a private user namespace and the pod's own network
//! namespace, and only from an allowlist in `/etc/cnfbox/config.toml`:
//!
//! ```toml
//! [capabilities]
//! allow = ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE", "IPC_LOCK"]
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};

/// The annotation (pod or container) that asks for capabilities.
pub const ANNOTATION: &str = cnfbox_annotations::CAPABILITIES;

/// containerd's default capability set (containerd `oci.defaultUnixCaps`):
/// never subject to the allowlist.
const CONTAINERD_DEFAULT: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const DEFAULT_ALLOW: &[&str] = &["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE", "IPC_LOCK"];

/// Errors of the capability policy.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{source_name}: unknown capability {name:?}")]
    Unknown { source_name: String, name: String },
    #[error("{source_name}: capability {cap} is not allowed for pods (allowed beyond the default set: {allowed}; see [capabilities] allow in {config})")]
    NotAllowed {
        source_name: String,
        cap: String,
        allowed: String,
        config: PathBuf,
    },
    #[error("annotation {ANNOTATION}: {caps} need a private user namespace (the container runs in the host's)")]
    HostUserns { caps: String },
    #[error("annotation {ANNOTATION}: {caps} need the pod's own network namespace (linux.namespaces has no private network namespace)")]
    NoPrivateNetns { caps: String },
}

/// The allowlist, from the `[capabilities]` section of the config file.
#[derive(Debug, Clone)]
pub struct Policy {
    allow: HashSet<Capability>,
    config: PathBuf,
}

/// `CAP_NET_ADMIN`, as capabilities(7) and the OCI spec spell it.
fn cap_name(c: &Capability) -> String {
    format!("CAP_{c}")
}

/// Parses `NET_ADMIN` or `CAP_NET_ADMIN` (any case).
fn parse_cap(source_name: &str, name: &str) -> Result<Capability, CapsError> {
    let upper = name.trim().to_ascii_uppercase();
    // strum's FromStr takes the name without the CAP_ prefix.
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).map_err(|_| CapsError::Unknown {
        source_name: source_name.to_string(),
        name: name.trim().to_string(),
    })
}

impl Policy {
    /// Loads the allowlist from `path` (a missing file or section means the
    /// default allowlist).
    pub fn load(path: &Path) -> Result<Self, CapsError> {
        let names: Vec<String> = match &crate::config::load(path)?.capabilities {
            Some(section) => section.allow.clone(),
            None => DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect(),
        };
        let source_name = format!("{} [capabilities] allow", path.display());
        let allow = names
            .iter()
            .map(|n| parse_cap(&source_name, n))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allow,
            config: path.to_path_buf(),
        })
    }

    fn check(&self, source_name: &str, cap: Capability) -> Result<(), CapsError> {
        if CONTAINERD_DEFAULT.contains(&cap) || self.allow.contains(&cap) {
            return Ok(());
        }
        Err(CapsError::NotAllowed {
            source_name: source_name.to_string(),
            cap: cap_name(&cap),
            allowed: {
                let mut names: Vec<String> = self.allow.iter().map(cap_name).collect();
                names.sort();
                names.join(",")
            },
            config: self.config.clone(),
        })
    }

    /// Checks the spec's own capabilities against the allowlist, then adds
    /// those the annotation asks for to the bounding, effective and
    /// permitted sets.
    // The binary calls `apply_with`; the fuzz entry point (lib) and the
    // tests call this.
    #[allow(dead_code)]
    pub fn apply(&self, spec: &mut Spec, private_userns: bool) -> Result<(), CapsError> {
        self.apply_with(spec, private_userns, true)
    }

    /// `apply`, with the check of the spec's own capabilities against the
    /// allowlist only when `bound_spec` (a privileged container admitted
    /// to the host's user namespace by `[pods] host_namespaces` keeps
    /// every capability, as under runc; see `host_ns::unbounded_caps`).
    pub fn apply_with(
        &self,
        spec: &mut Spec,
        private_userns: bool,
        bound_spec: bool,
    ) -> Result<(), CapsError> {
        let requested: Vec<Capability> =
            match spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) {
                Some(list) => list
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|n| parse_cap(&format!("annotation {ANNOTATION}"), n))
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
        for cap in &requested {
            self.check(&format!("annotation {ANNOTATION}"), *cap)?;
        }
        let Some(process) = spec.process_mut() else {
            return Ok(());
        };
        let mut caps = process.capabilities().clone().unwrap_or_default();
        let sets = if bound_spec {
            vec![
                ("bounding", caps.bounding()),
                ("effective", caps.effective()),
                ("permitted", caps.permitted()),
                ("inheritable", caps.inheritable()),
                ("ambient", caps.ambient()),
            ]
        } else {
            Vec::new()
        };
        for (name, set) in sets {
            for cap in set.iter().flatten() {
                self.check(&format!("process.capabilities.{name}"), *cap)?;
            }
        }
        if requested.is_empty() {
            return Ok(());
        }
        let names = || requested.iter().map(cap_name).collect::<Vec<_>>().join(",");
        if !private_userns {
            return Err(CapsError::HostUserns { caps: names() });
        }
        if !private_netns(spec) {
            return Err(CapsError::NoPrivateNetns {
                caps: requested.iter().map(cap_name).collect::<Vec<_>>().join(","),
            });
        }
        let add = |set: Option<&oci_spec::runtime::Capabilities>| {
            let mut s = set.cloned().unwrap_or_default();
            s.extend(requested.iter().copied());
            Some(s)
        };
        caps.set_bounding(add(caps.bounding().as_ref()));
        caps.set_effective(add(caps.effective().as_ref()));
        caps.set_permitted(add(caps.permitted().as_ref()));
        if let Some(process) = spec.process_mut() {
            process.set_capabilities(Some(caps));
        }
        Ok(())
    }
}

/// Whether the container gets a network namespace of its own (created, or
/// joined from a path other than the host's).
fn private_netns(spec: &Spec) -> bool {
    let Some(ns) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|v| v.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
    else {
        return false;
    };
    match ns.path() {
        None => true,
        // Compare the namespace inodes: works for /proc/PID/ns/net links and
        // for bind-mounted namespace files alike.
        Some(p) => {
            use crate::host::ns;
            ns::id(p).is_some() && !ns::is_own(p, "net")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: Option<&str>) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        if let Some(t) = text {
            std::fs::write(&path, t).unwrap();
        }
        Policy::load(&path).unwrap()
    }

    fn spec_with(ann: Option<&str>) -> Spec {
        let mut spec = Spec::default();
        if let Some(a) = ann {
            spec.set_annotations(Some([(ANNOTATION.to_string(), a.to_string())].into()));
        }
        spec
    }

    #[test]
    fn annotation_adds_allowed_caps() {
        let mut spec = spec_with(Some("NET_ADMIN, cap_net_raw"));
        policy(None).apply(&mut spec, true).unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            assert!(set.as_ref().unwrap().contains(&Capability::NetAdmin));
        }
        assert!(!caps
            .inheritable()
            .as_ref()
            .is_some_and(|s| s.contains(&Capability::NetAdmin)));
    }

    #[test]
    fn refusals_name_the_capability() {
        let err = policy(None)
            .apply(&mut spec_with(Some("SYS_ADMIN")), true)
            .unwrap_err();
        assert!(err.to_string().contains("CAP_SYS_ADMIN"), "{err}");
        let err = policy(None)
            .apply(&mut spec_with(Some("FLY")), true)
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown capability \"FLY\""),
            "{err}"
        );
        let p = policy(Some("[capabilities]\nallow = [\"NET_RAW\"]\n"));
        let err = p
            .apply(&mut spec_with(Some("NET_ADMIN")), true)
            .unwrap_err();
        assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
        // From the spec itself (Kubernetes securityContext.capabilities.add).
        let mut spec = spec_with(None);
        let mut caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        caps.set_bounding(Some([Capability::SysModule].into()));
        spec.process_mut()
            .as_mut()
            .unwrap()
            .set_capabilities(Some(caps));
        let err = policy(None).apply(&mut spec, true).unwrap_err();
        assert!(
            err.to_string().contains("process.capabilities.bounding"),
            "{err}"
        );
        assert!(err.to_string().contains("CAP_SYS_MODULE"), "{err}");
    }

    #[test]
    fn needs_a_private_userns() {
        let err = policy(None)
            .apply(&mut spec_with(Some("NET_ADMIN")), false)
            .unwrap_err();
        assert!(matches!(err, CapsError::HostUserns { .. }), "{err}");
    }

    #[test]
    fn needs_a_private_netns() {
        let mut spec = spec_with(Some("NET_ADMIN"));
        let linux = spec.linux_mut().as_mut().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|n| n.typ() != LinuxNamespaceType::Network)
            .collect();
        linux.set_namespaces(Some(ns));
        let err = policy(None).apply(&mut spec, true).unwrap_err();
        assert!(matches!(err, CapsError::NoPrivateNetns { .. }), "{err}");
    }
}
