//! Which pod a container belongs to, from the CRI annotations.
//!
//! containerd's CRI marks every container with `io.kubernetes.cri.sandbox-id`
//! and `io.kubernetes.cri.container-type` (`sandbox` or `container`); CRI-O
//! uses `io.kubernetes.cri-o.SandboxID` and `io.kubernetes.cri-o.ContainerType`.
//! A container without them is a pod of its own.
//!
//! Each engine sets its own keys after the pod's annotations, so only its
//! own keys can be trusted: CRI-O copies every pod annotation into the
//! spec, so a tenant can put containerd's keys beside CRI-O's (and join
//! another pod's user and network namespaces if they were read). The keys
//! of the engine that wrote the spec are therefore the only ones read: a
//! spec carrying any CRI-O key is CRI-O's, and containerd's keys in it are
//! ignored entirely; only without CRI-O's are containerd's used. The rule
//! is `cnfbox_annotations::Engine`'s, which the shim groups containers by.

use std::collections::HashMap;

// The keys, for the tests of the modules that build pod specs.
#[cfg(test)]
pub use cnfbox_annotations::{
    CRIO_CONTAINER_TYPE, CRIO_SANDBOX_ID, CRI_CONTAINER_TYPE, CRI_SANDBOX_ID,
};

/// A container's place in its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The sandbox (or a standalone container): owns the pod's range and
    /// namespaces.
    Sandbox { pod: String },
    /// Another container of the pod: joins the sandbox's namespaces.
    Member { pod: String },
}

impl Role {
    pub fn pod(&self) -> &str {
        match self {
            Role::Sandbox { pod } | Role::Member { pod } => pod,
        }
    }
}

/// `annotations` as the lookup the shared rule takes.
fn lookup<'a>(
    annotations: Option<&'a HashMap<String, String>>,
) -> impl Fn(&str) -> Option<&'a str> {
    move |k| annotations?.get(k).map(String::as_str)
}

/// The container type (`sandbox`, `container`) the writing engine set
/// (`cnfbox_annotations::container_type`, the shim's rule too).
pub fn container_type(annotations: Option<&HashMap<String, String>>) -> Option<&str> {
    cnfbox_annotations::container_type(lookup(annotations))
}

/// The role of container `id` given its spec's annotations.
pub fn role(id: &str, annotations: Option<&HashMap<String, String>>) -> Role {
    let sandbox_id = cnfbox_annotations::sandbox_id(lookup(annotations));
    match (sandbox_id, container_type(annotations)) {
        (None, _) => Role::Sandbox {
            pod: id.to_string(),
        },
        (Some(pod), Some("sandbox")) => Role::Sandbox {
            pod: pod.to_string(),
        },
        // A sandbox id naming the container itself is its own sandbox.
        (Some(pod), _) if pod == id => Role::Sandbox {
            pod: pod.to_string(),
        },
        (Some(pod), _) => Role::Member {
            pod: pod.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnfbox_annotations::Engine;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn roles() {
        assert_eq!(role("c", None), Role::Sandbox { pod: "c".into() });
        let a = ann(&[(CRI_SANDBOX_ID, "p1"), (CRI_CONTAINER_TYPE, "sandbox")]);
        assert_eq!(role("p1", Some(&a)), Role::Sandbox { pod: "p1".into() });
        let a = ann(&[(CRI_SANDBOX_ID, "p1"), (CRI_CONTAINER_TYPE, "container")]);
        assert_eq!(role("c2", Some(&a)), Role::Member { pod: "p1".into() });
        let a = ann(&[(CRIO_SANDBOX_ID, "p2"), (CRIO_CONTAINER_TYPE, "container")]);
        assert_eq!(role("c3", Some(&a)), Role::Member { pod: "p2".into() });
        let a = ann(&[(CRI_SANDBOX_ID, "")]);
        assert_eq!(role("c4", Some(&a)), Role::Sandbox { pod: "c4".into() });
        let a = ann(&[("io.kubernetes.pod.name", "x")]);
        assert_eq!(role("c5", Some(&a)), Role::Sandbox { pod: "c5".into() });
    }

    #[test]
    fn containerd_shapes() {
        let a = ann(&[(CRI_SANDBOX_ID, "p1"), (CRI_CONTAINER_TYPE, "sandbox")]);
        assert_eq!(Engine::of(lookup(Some(&a))), Some(Engine::Containerd));
        assert_eq!(container_type(Some(&a)), Some("sandbox"));
        // containerd's own keys, and a sandbox id alone.
        let a = ann(&[(CRI_SANDBOX_ID, "p1")]);
        assert_eq!(role("c1", Some(&a)), Role::Member { pod: "p1".into() });
        assert_eq!(container_type(Some(&a)), None);
    }

    #[test]
    fn crio_shapes_ignore_containerd_keys() {
        // CRI-O's sandbox (infra) container and one of its members.
        let a = ann(&[(CRIO_SANDBOX_ID, "p2"), (CRIO_CONTAINER_TYPE, "sandbox")]);
        assert_eq!(Engine::of(lookup(Some(&a))), Some(Engine::CriO));
        assert_eq!(role("p2", Some(&a)), Role::Sandbox { pod: "p2".into() });
        assert_eq!(container_type(Some(&a)), Some("sandbox"));

        // A tenant's pod annotation naming another pod with containerd's
        // key, copied by CRI-O beside its own: CRI-O's keys decide.
        let a = ann(&[
            (CRIO_SANDBOX_ID, "mine"),
            (CRIO_CONTAINER_TYPE, "container"),
            (CRI_SANDBOX_ID, "victim"),
            (CRI_CONTAINER_TYPE, "container"),
        ]);
        assert_eq!(role("c1", Some(&a)), Role::Member { pod: "mine".into() });
        // The CRI-O sandbox with forged containerd keys is still its own.
        let a = ann(&[
            (CRIO_SANDBOX_ID, "mine"),
            (CRIO_CONTAINER_TYPE, "sandbox"),
            (CRI_SANDBOX_ID, "victim"),
            (CRI_CONTAINER_TYPE, "container"),
        ]);
        assert_eq!(role("mine", Some(&a)), Role::Sandbox { pod: "mine".into() });
        // CRI-O's container type alone (empty sandbox id): a pod of its
        // own, never the forged one.
        let a = ann(&[
            (CRIO_CONTAINER_TYPE, "container"),
            (CRIO_SANDBOX_ID, ""),
            (CRI_SANDBOX_ID, "victim"),
        ]);
        assert_eq!(role("c2", Some(&a)), Role::Sandbox { pod: "c2".into() });
        // A forged containerd container type does not make a sandbox.
        let a = ann(&[
            (CRIO_CONTAINER_TYPE, "container"),
            (CRI_CONTAINER_TYPE, "sandbox"),
        ]);
        assert_eq!(container_type(Some(&a)), Some("container"));
    }
}
