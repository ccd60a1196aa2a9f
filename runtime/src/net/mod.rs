//! Secondary interfaces for CNF pods: OCI 1.3 `linux.netDevices` and the
//! `cnfbox.io/interfaces` annotation put host devices (moved) and macvlan or
//! VLAN children of host parents (created) into the pod's network
//! namespace, owned by the pod's user namespace so pod root drives them
//! with a namespaced NET_ADMIN.
//!
//! libcontainer 0.7 would move `linux.netDevices` itself from inside its
//! init (and cannot undo it); cnfbox strips the field from the staged spec
//! and does the work as host root once libcontainer has made the pod's
//! network namespace (the container is `created`), before `create` returns.
//! Per pod it is all or nothing: every request is checked (policy, device
//! present and free, no name clash inside) before anything changes, and a
//! step that fails undoes the ones before it.
//!
//! Devices go back at the sandbox's delete, explicitly and under their
//! original names, into the namespace they came from: left to the kernel a
//! physical device would return to the initial namespace when the pod's
//! dies, which is wrong wherever cnfbox itself runs in another one. Both
//! namespaces are pinned (bind mounts, as `ip netns` does) for the pod's
//! lifetime, so this works after the pod's init is gone too.

mod attach;
mod identity;
pub mod netlink;
mod policy;
mod relay;
pub mod request;

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

pub use attach::{attach, detach, unpin_all};
pub use request::{Kind, Request, ANNOTATION};

use crate::pod::{self, Role};

/// Errors of pod attachments. Each names the request (`origin`) or the
/// device and the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    ConfigFile(#[from] crate::config::ConfigError),
    #[error("{path}: [network]: {reason}")]
    Config { path: PathBuf, reason: String },
    /// A `[network] parents` entry, by its line.
    #[error("{path}:{line}: [network] {reason}")]
    Entry {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(transparent)]
    Request(#[from] request::RequestError),
    #[error("{origin}: host device {device} is not allowed by [network] {rule} in {config} (allowed: {allowed})")]
    NotAllowed {
        origin: String,
        device: String,
        rule: &'static str,
        allowed: String,
        config: PathBuf,
    },
    /// A parent the `[network] parents` entry allows, but not for this child
    /// (macvlan passthru, a VLAN id).
    #[error("{origin}: {reason}")]
    ParentSetting { origin: String, reason: String },
    #[error("the pod asks for {count} interfaces; [network] max_attachments = {max} in {config}")]
    TooMany {
        count: usize,
        max: usize,
        config: PathBuf,
    },
    #[error("linux.netDevices: container {id} joins pod {pod}'s network namespace; only the pod's sandbox attaches network devices")]
    Member { id: String, pod: String },
    #[error("{origin}: the container has no network namespace of its own (linux.namespaces)")]
    NoPrivateNetns { origin: String },
    #[error("{origin}: no host device {device} in the host network namespace")]
    NoDevice { origin: String, device: String },
    #[error("{origin}: host device {device} is already attached to pod {pod}")]
    InUse {
        origin: String,
        device: String,
        pod: String,
    },
    #[error("{origin}: host device {device} ({identity}) cannot be moved: cnfbox could not tell it from a device pod root makes when it is given back (only hardware and devices linked to one that stays outside can be moved)")]
    Unverifiable {
        origin: String,
        device: String,
        identity: Box<netlink::Identity>,
    },
    #[error("{origin}: the pod's network namespace already has an interface named {name}")]
    NameClash { origin: String, name: String },
    #[error("{origin}: cannot give {inside} back to the host: the name {name} is taken there (free it and delete again)")]
    HostNameTaken {
        origin: String,
        inside: String,
        name: String,
    },
    #[error("flock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}; refusing to keep the network lock there")]
    LockUnsafe { path: PathBuf, reason: String },
    #[error("open network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rtnetlink socket in network namespace {netns}")]
    Socket {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pin a network namespace")]
    Pin(#[source] crate::host::PinError),
    #[error("pod relay namespace {pin}: {step}")]
    RelayNs {
        pin: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {source}")]
    Relay {
        origin: String,
        #[source]
        source: relay::BpfError,
    },
    #[error("{origin}: {step} {device}")]
    Netlink {
        origin: String,
        step: &'static str,
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the host side of pod {pod}'s interfaces was network namespace {recorded}; its pin {pin} is gone and cnfbox now runs in {current}: run delete there")]
    HostNetnsGone {
        pod: String,
        recorded: NsId,
        current: NsId,
        pin: PathBuf,
    },
}

impl NetError {
    /// The error of rtnetlink step `step` on `device` for request `origin`.
    pub(crate) fn netlink(
        origin: &str,
        step: &'static str,
        device: &str,
    ) -> impl FnOnce(std::io::Error) -> NetError {
        let origin = origin.to_string();
        let device = device.to_string();
        move |source| NetError::Netlink {
            origin,
            step,
            device,
            source,
        }
    }
}

/// A namespace's identity: the device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl std::fmt::Display for NsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}] (dev {})", self.ino, self.dev)
    }
}

impl NsId {
    pub fn of(file: &std::fs::File) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// One interface of a pod, as recorded in its sandbox's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(flatten)]
    pub request: Request,
    /// A moved device's addresses on the host, given back with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_addrs: Vec<netlink::Addr>,
    /// Whether a moved device was up on the host.
    #[serde(default)]
    pub host_up: bool,
    /// Its index inside the pod once attached: found again by it at delete
    /// even if pod root renamed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_index: Option<u32>,
    /// What a moved device is: read on the host before the move, and
    /// again inside the pod right after it (with `pod_index`). Only a
    /// device that still matches is given back at delete; pod root can
    /// replace it with one of its own under the same name and index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<netlink::Identity>,
}

/// The interfaces of a pod and where they go back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// The network namespace the host devices came from.
    pub host_netns: NsId,
    /// Pin of that namespace, for the way back.
    pub host_pin: PathBuf,
    /// Pin of the pod's network namespace: keeps it (and what it holds)
    /// alive until the devices are back, whatever happened to the init.
    pub pod_pin: PathBuf,
    /// Pin of the pod's relay namespace, where its macvlan and VLAN
    /// children live (`relay`); none when it has none (or was attached by
    /// a release before relays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_pin: Option<PathBuf>,
    pub attachments: Vec<Attachment>,
}

/// What the container asks for, checked against the spec and the policy in
/// `config` before anything is allocated or changed. Empty for a pod
/// member: its pod's interfaces are the sandbox's (containerd may pass the
/// pod's annotations to every container; they are not asked twice).
pub fn plan(id: &str, spec: &Spec, config: &Path) -> Result<Vec<Request>, NetError> {
    let linux = spec.linux().as_ref();
    let devices = linux.and_then(|l| l.net_devices().as_ref());
    let annotation = spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION));
    if let Role::Member { pod } = pod::role(id, spec.annotations().as_ref()) {
        if devices.is_some_and(|d| !d.is_empty()) {
            return Err(NetError::Member {
                id: id.to_string(),
                pod,
            });
        }
        if annotation.is_some() {
            tracing::debug!(id, %pod, "member container: {ANNOTATION} is the sandbox's");
        }
        return Ok(Vec::new());
    }
    let mut requests = match devices {
        Some(d) => request::from_net_devices(d)?,
        None => Vec::new(),
    };
    if let Some(value) = annotation {
        requests.extend(request::parse_annotation(value)?);
    }
    if requests.is_empty() {
        return Ok(requests);
    }
    request::check_unique(&requests)?;
    let netns = linux
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|v| v.iter().find(|n| n.typ() == LinuxNamespaceType::Network));
    let own = netns.is_some_and(|n| match n.path() {
        None => true,
        Some(p) => !crate::host::ns::is_own(p, "net"),
    });
    if !own {
        return Err(NetError::NoPrivateNetns {
            origin: requests[0].origin.clone(),
        });
    }
    policy::Policy::load(config)?.check(&requests)?;
    Ok(requests)
}

/// Removes `linux.netDevices` from the spec libcontainer is given: cnfbox
/// does the moves itself (see the module comment).
pub fn strip(spec: &mut Spec) {
    if let Some(linux) = spec.linux_mut() {
        linux.set_net_devices(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(annotations: &[(&str, &str)], devices: Option<serde_json::Value>) -> Spec {
        let mut d = serde_json::to_value(Spec::default()).unwrap();
        d["annotations"] = serde_json::json!(annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>());
        if let Some(devices) = devices {
            d["linux"]["netDevices"] = devices;
        }
        serde_json::from_value(d).unwrap()
    }

    use std::collections::HashMap;

    #[test]
    fn members_leave_interfaces_to_the_sandbox() {
        let member = [
            (pod::CRI_SANDBOX_ID, "p1"),
            (pod::CRI_CONTAINER_TYPE, "container"),
            (ANNOTATION, "d0=macvlan:trunk0"),
        ];
        let none = Path::new("/nonexistent/config.toml");
        assert!(plan("c1", &spec(&member, None), none).unwrap().is_empty());
        let err = plan(
            "c1",
            &spec(&member, Some(serde_json::json!({"eth1": {}}))),
            none,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("linux.netDevices") && err.contains("pod p1"),
            "{err}"
        );
    }

    #[test]
    fn sandbox_requests_meet_the_policy_and_strip_removes_net_devices() {
        let none = Path::new("/nonexistent/config.toml");
        let mut s = spec(&[], Some(serde_json::json!({"eth1": {"name": "net1"}})));
        let err = plan("p", &s, none).unwrap_err().to_string();
        assert!(
            err.contains("linux.netDevices.eth1") && err.contains("[network] movable"),
            "{err}"
        );
        strip(&mut s);
        assert!(s.linux().as_ref().unwrap().net_devices().is_none());
        assert!(plan("p", &s, none).unwrap().is_empty());
    }
}
