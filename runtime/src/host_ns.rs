//! Pods that ask for the host's network, PID or IPC namespace, or to be
//! privileged (every capability), and the `[pods]` policy that decides
//! what happens to them.
//!
//! In the pod's own user namespace none of these can work: the kernel
//! refuses to mount `/sys` for the host's network namespace, `/proc` for
//! the host's PID namespace and `/dev/mqueue` for the host's IPC namespace
//! from a less privileged user namespace (mount_namespaces(7), "restrictions
//! on mount namespaces"), and a privileged container's capabilities would
//! act on nothing of the host's. So cnfbox refuses them by default, before
//! any range or mount exists, with one line naming the field and the
//! setting; with
//!
//! ```toml
//! [pods]
//! host_namespaces = "host-userns"
//! ```
//!
//! in `/etc/cnfbox/config.toml` they run in the host's user namespace, as
//! under runc: no range, no id-mapped views, and a privileged container
//! keeps every capability it asked for.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// What `[pods] host_namespaces` says.
pub use crate::config::HostNamespaces as Mode;

/// Errors of the host-namespace policy.
#[derive(Debug, thiserror::Error)]
pub enum HostNsError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{field}: {what} is refused: set host_namespaces = \"host-userns\" under [pods] in {config} to run such pods in the host's user namespace, as runc does")]
    Refused {
        field: &'static str,
        what: String,
        config: PathBuf,
    },
}

impl Mode {
    /// `[pods] host_namespaces` of the config at `path` (a missing file or
    /// section means `refuse`).
    pub fn load(path: &Path) -> Result<Self, HostNsError> {
        Ok(crate::config::load(path)?.pods.host_namespaces)
    }
}

/// What of the host's a spec asks for: the field and, in words, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub field: &'static str,
    pub what: String,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.what)
    }
}

/// The first host namespace or privilege `spec` asks for, if any.
///
/// A namespace is the host's when `linux.namespaces` has no entry of its
/// type (what containerd's CRI writes for `NamespaceMode` NODE, i.e.
/// `hostNetwork`, `hostPID`, `hostIPC`) or one whose path is the host's
/// namespace (same nsfs inode as cnfbox's own). Privileged is how it shows
/// in the spec: containerd's `WithPrivileged` (and Kubernetes'
/// `capabilities.add: [ALL]`) puts every capability containerd holds in the
/// bounding set.
pub fn request(spec: &Spec) -> Option<Request> {
    for (typ, name, k8s) in [
        (LinuxNamespaceType::Network, "network", "hostNetwork"),
        (LinuxNamespaceType::Pid, "pid", "hostPID"),
        (LinuxNamespaceType::Ipc, "ipc", "hostIPC"),
    ] {
        let ns = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|v| v.iter().find(|n| n.typ() == typ));
        match ns {
            None => {
                return Some(Request {
                    field: "linux.namespaces",
                    what: format!(
                        "no {name} namespace (the host's: {k8s}, CRI NamespaceMode NODE)"
                    ),
                })
            }
            Some(n) => {
                if let Some(path) = n.path() {
                    if is_hosts(path, name) {
                        return Some(Request {
                            field: "linux.namespaces",
                            what: format!(
                                "{name} path {} is the host's {name} namespace ({k8s})",
                                path.display()
                            ),
                        });
                    }
                }
            }
        }
    }
    privileged(spec).then(|| Request {
        field: "process.capabilities.bounding",
        what: "every capability (a privileged container, or capabilities add ALL)".into(),
    })
}

/// Whether `path` is the namespace of kind `name` cnfbox itself is in.
fn is_hosts(path: &Path, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let own = Path::new("/proc/self/ns").join(if name == "network" { "net" } else { name });
    id(path).is_some() && id(path) == id(&own)
}

/// Whether the spec's bounding set holds every capability cnfbox itself
/// may hold.
pub fn privileged(spec: &Spec) -> bool {
    let Some(bounding) = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
    else {
        return false;
    };
    let held: std::collections::HashSet<String> =
        bounding.iter().map(|c| format!("CAP_{c}")).collect();
    // containerd's WithAllCurrentCapabilities: the caller's own bounding
    // set, which may be less than the kernel's.
    let Ok(current) = caps::read(None, caps::CapSet::Bounding) else {
        return false;
    };
    !current.is_empty() && current.iter().all(|c| held.contains(&c.to_string()))
}

/// Decides a spec: `Ok(None)` when it asks for nothing of the host's,
/// `Ok(Some(request))` when it does and `[pods]` lets it run in the host's
/// user namespace, the refusal otherwise.
pub fn admit(spec: &Spec, config: &Path) -> Result<Option<Request>, HostNsError> {
    let Some(req) = request(spec) else {
        return Ok(None);
    };
    match Mode::load(config)? {
        Mode::HostUserns => Ok(Some(req)),
        Mode::Refuse => Err(HostNsError::Refused {
            field: req.field,
            what: req.what,
            config: config.to_path_buf(),
        }),
    }
}

/// Whether the spec's own capabilities are exempt from `[capabilities]
/// allow`: a privileged container that runs in the host's user namespace
/// because `[pods] host_namespaces = "host-userns"` lets it (runc's
/// privileged). Everything else stays bounded by the allowlist.
pub fn unbounded_caps(spec: &Spec, private_userns: bool, config: &Path) -> bool {
    !private_userns && privileged(spec) && matches!(Mode::load(config), Ok(Mode::HostUserns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    fn config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn without(typ: LinuxNamespaceType) -> Spec {
        let mut spec = Spec::default();
        let linux = spec.linux_mut().as_mut().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|n| n.typ() != typ)
            .collect();
        linux.set_namespaces(Some(ns));
        spec
    }

    #[test]
    fn mode_parses_and_refuses_unknown_values_and_keys() {
        let (_d, p) = config("[pods]\nhost_namespaces = \"host-userns\"\n");
        assert_eq!(Mode::load(&p).unwrap(), Mode::HostUserns);
        let (_d, p) = config("[pods]\nhost_namespaces = \"refuse\"\n[idmap]\npool = \"1:2\"\n");
        assert_eq!(Mode::load(&p).unwrap(), Mode::Refuse);
        let (_d, p) = config("[idmap]\n");
        assert_eq!(Mode::load(&p).unwrap(), Mode::Refuse);
        assert_eq!(
            Mode::load(Path::new("/nonexistent/cnfbox.toml")).unwrap(),
            Mode::Refuse
        );
        let (_d, p) = config("[pods]\nhost_namespaces = \"yes\"\n");
        let err = Mode::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("[pods]") && err.contains("host-userns"),
            "{err}"
        );
        let (_d, p) = config("[pods]\nhost_namespace = \"host-userns\"\n");
        let err = Mode::load(&p).unwrap_err().to_string();
        assert!(err.contains("host_namespace"), "{err}");
    }

    #[test]
    fn host_namespaces_and_privileged_are_found() {
        assert_eq!(request(&Spec::default()), None);
        for (typ, name) in [
            (LinuxNamespaceType::Network, "network"),
            (LinuxNamespaceType::Pid, "pid"),
            (LinuxNamespaceType::Ipc, "ipc"),
        ] {
            let r = request(&without(typ)).unwrap();
            assert_eq!(r.field, "linux.namespaces");
            assert!(r.what.contains(name), "{r}");
        }
        let mut spec = Spec::default();
        let linux = spec.linux_mut().as_mut().unwrap();
        let mut ns = linux.namespaces().clone().unwrap();
        for n in ns.iter_mut().filter(|n| n.typ() == LinuxNamespaceType::Pid) {
            n.set_path(Some("/proc/self/ns/pid".into()));
        }
        linux.set_namespaces(Some(ns));
        let r = request(&spec).unwrap();
        assert!(r.what.contains("/proc/self/ns/pid"), "{r}");

        let mut spec = Spec::default();
        let process = spec.process_mut().as_mut().unwrap();
        let mut caps = process.capabilities().clone().unwrap();
        let all: std::collections::HashSet<Capability> = caps::read(None, caps::CapSet::Bounding)
            .unwrap()
            .iter()
            .map(|c| {
                use libcontainer::capabilities::CapabilityExt as _;
                Capability::from_cap(*c)
            })
            .collect();
        caps.set_bounding(Some(all.clone()));
        process.set_capabilities(Some(caps.clone()));
        let r = request(&spec).unwrap();
        assert_eq!(r.field, "process.capabilities.bounding");
        // One short of all is not privileged (the allowlist decides it).
        let mut fewer = all;
        fewer.remove(&Capability::SysAdmin);
        caps.set_bounding(Some(fewer));
        spec.process_mut()
            .as_mut()
            .unwrap()
            .set_capabilities(Some(caps));
        assert_eq!(request(&spec), None);
    }

    #[test]
    fn admit_refuses_naming_the_field_and_the_setting() {
        let spec = without(LinuxNamespaceType::Network);
        let (_d, p) = config("");
        let err = admit(&spec, &p).unwrap_err().to_string();
        for needle in ["linux.namespaces", "network", "[pods]", "host_namespaces"] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let (_d, p) = config("[pods]\nhost_namespaces = \"host-userns\"\n");
        assert!(admit(&spec, &p).unwrap().is_some());
        assert!(admit(&Spec::default(), &p).unwrap().is_none());
    }
}
