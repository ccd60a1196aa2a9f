//! The annotation keys of a bundle's `config.json` that cnfbox reads, in
//! one place: the runtime parses their values, the shim groups containers
//! by the sandbox keys, and the fuzz targets hand every key in [`ALL`] a
//! hostile value. A key defined here is in [`ALL`] by construction; the
//! runtime's test `fuzz_keys` fails when its sources spell a key that is
//! not defined here, or when one here has no fuzz driver.

/// Defines each key as a constant and lists them all in [`ALL`].
macro_rules! keys {
    ($($(#[$doc:meta])* $name:ident = $key:literal;)*) => {
        $($(#[$doc])* pub const $name: &str = $key;)*
        /// Every key above, in definition order.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

keys! {
    /// Extra capabilities a container asks for (`NET_ADMIN,IPC_LOCK`),
    /// checked against `[capabilities] allow`.
    CAPABILITIES = "cnfbox.io/capabilities";
    /// The NUMA node a container is placed on.
    NUMA_NODE = "cnfbox.io/numa-node";
    /// `host`: run in the host's user namespace (`[idmap]
    /// allow_host_userns`).
    USERNS = "cnfbox.io/userns";
    /// `pod` (default) or `none`: id-mapped views of bind mounts.
    IDMAP_VOLUMES = "cnfbox.io/idmap-volumes";
    /// Secondary interfaces (`NAME=move:DEV,NAME=macvlan:PARENT[:MODE],...`).
    INTERFACES = "cnfbox.io/interfaces";
    /// containerd CRI: `sandbox` or `container`.
    CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type";
    /// containerd CRI: the pod's sandbox id.
    CRI_SANDBOX_ID = "io.kubernetes.cri.sandbox-id";
    /// CRI-O: `sandbox` or `container`.
    CRIO_CONTAINER_TYPE = "io.kubernetes.cri-o.ContainerType";
    /// CRI-O: the pod's sandbox id.
    CRIO_SANDBOX_ID = "io.kubernetes.cri-o.SandboxID";
}

/// The keys naming a container's pod (containerd's CRI, CRI-O), in the
/// order the shim tries them.
pub const SANDBOX_IDS: [&str; 2] = [CRI_SANDBOX_ID, CRIO_SANDBOX_ID];

/// Whether `text` is spelt like a key cnfbox might read: its own prefix or
/// a CRI engine's.
pub fn looks_like_a_key(text: &str) -> bool {
    ["cnfbox.io/", "io.kubernetes.cri.", "io.kubernetes.cri-o."]
        .iter()
        .any(|p| text.starts_with(p))
}

/// The `kind` field of the error line `cnfbox` logs for a failed command,
/// which the shim maps to a ttrpc code without reading the message's words
/// (a create's "bind source ... does not exist" is no missing container).
pub mod error_kind {
    /// The container named does not exist (the shim's NOT_FOUND).
    pub const NOT_FOUND: &str = "not_found";
    /// A signal for a container whose init has exited (runc's "container
    /// not running"; the shim's NOT_FOUND, as containerd's runc shim
    /// answers: "process already finished").
    pub const NOT_RUNNING: &str = "not_running";
    /// Any other failure.
    pub const FAILED: &str = "failed";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_listed_once_and_looks_like_one() {
        assert_eq!(ALL.len(), 9);
        for (i, k) in ALL.iter().enumerate() {
            assert!(looks_like_a_key(k), "{k}");
            assert!(!ALL[i + 1..].contains(k), "{k} twice");
        }
        assert!(SANDBOX_IDS.iter().all(|k| ALL.contains(k)));
        assert!(!looks_like_a_key("io.kubernetes.pod.name"));
    }
}
