//! Which pod a container belongs to, from the CRI annotations.
//!
//! containerd's CRI marks every container with `io.kubernetes.cri.sandbox-id`
//! and `io.kubernetes.cri.container-type` (`sandbox` or `container`); CRI-O
//! uses `io.kubernetes.cri-o.SandboxID`. A container without them is a pod
//! of its own.

use std::collections::HashMap;

pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const CRIO_SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";
pub const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";

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

/// The role of container `id` given its spec's annotations.
pub fn role(id: &str, annotations: Option<&HashMap<String, String>>) -> Role {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).filter(|v| !v.is_empty());
    let sandbox_id = get(CRI_SANDBOX_ID).or_else(|| get(CRIO_SANDBOX_ID));
    let kind = get(CRI_CONTAINER_TYPE).or_else(|| get(CRIO_CONTAINER_TYPE));
    match (sandbox_id, kind.map(String::as_str)) {
        (None, _) => Role::Sandbox {
            pod: id.to_string(),
        },
        (Some(pod), Some("sandbox")) => Role::Sandbox { pod: pod.clone() },
        // A sandbox id naming the container itself is its own sandbox.
        (Some(pod), _) if pod == id => Role::Sandbox { pod: pod.clone() },
        (Some(pod), _) => Role::Member { pod: pod.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
