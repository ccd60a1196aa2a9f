//! The annotation keys of a bundle's `config.json` that cnfbox reads, in
//! one place: the runtime parses their values, the runtime and the shim
//! find a container's pod by one rule ([`sandbox_id`]), and the fuzz targets hand every key in [`ALL`] a
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

/// The container engine whose pod keys a spec carries.
///
/// Each engine sets its own keys after the pod's annotations, so only its
/// own keys can be trusted: CRI-O copies every pod annotation into the
/// spec, so a tenant can put containerd's keys beside CRI-O's (naming
/// another pod). A spec carrying any CRI-O key is therefore CRI-O's, and
/// containerd's keys in it are ignored entirely; only without CRI-O's are
/// containerd's used. The runtime (which pod's namespaces a container
/// joins) and the shim (which pod's shim serves it) both decide by this
/// one rule, through [`sandbox_id`] and [`container_type`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Containerd,
    CriO,
}

impl Engine {
    /// The engine that wrote the annotations `get` looks up: CRI-O when any
    /// of its keys is there (even empty), else containerd when one of its
    /// keys is, else none.
    pub fn of<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let has = |k: &str| get(k).is_some();
        if has(CRIO_SANDBOX_ID) || has(CRIO_CONTAINER_TYPE) {
            Some(Self::CriO)
        } else if has(CRI_SANDBOX_ID) || has(CRI_CONTAINER_TYPE) {
            Some(Self::Containerd)
        } else {
            None
        }
    }

    /// Its sandbox id key.
    pub fn sandbox_id_key(self) -> &'static str {
        match self {
            Self::Containerd => CRI_SANDBOX_ID,
            Self::CriO => CRIO_SANDBOX_ID,
        }
    }

    /// Its container type key.
    pub fn container_type_key(self) -> &'static str {
        match self {
            Self::Containerd => CRI_CONTAINER_TYPE,
            Self::CriO => CRIO_CONTAINER_TYPE,
        }
    }
}

/// The pod's sandbox id as the writing engine set it ([`Engine`]), `None`
/// when there is no engine or its key is absent or empty. `get` looks a key
/// up in the spec's annotations.
pub fn sandbox_id<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    let key = Engine::of(&get)?.sandbox_id_key();
    get(key).filter(|v| !v.is_empty())
}

/// The container type (`sandbox`, `container`) the writing engine set.
pub fn container_type<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    let key = Engine::of(&get)?.container_type_key();
    get(key).filter(|v| !v.is_empty())
}

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
    /// The container exists but its init has exited (a signal for it):
    /// the shim's NOT_FOUND, as containerd's runc shim answers "process
    /// already finished".
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
        assert!(!looks_like_a_key("io.kubernetes.pod.name"));
    }

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        |k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
    }

    #[test]
    fn each_engine_alone() {
        let a = [(CRI_SANDBOX_ID, "p1"), (CRI_CONTAINER_TYPE, "container")];
        assert_eq!(Engine::of(lookup(&a)), Some(Engine::Containerd));
        assert_eq!(sandbox_id(lookup(&a)), Some("p1"));
        assert_eq!(container_type(lookup(&a)), Some("container"));
        let a = [(CRIO_SANDBOX_ID, "p2"), (CRIO_CONTAINER_TYPE, "sandbox")];
        assert_eq!(Engine::of(lookup(&a)), Some(Engine::CriO));
        assert_eq!(sandbox_id(lookup(&a)), Some("p2"));
        assert_eq!(container_type(lookup(&a)), Some("sandbox"));
        assert_eq!(sandbox_id(lookup(&[(CRI_SANDBOX_ID, "")])), None);
        assert_eq!(sandbox_id(lookup(&[("io.kubernetes.pod.name", "x")])), None);
    }

    /// Issue 25: a CRI-O pod annotation carrying containerd's key with
    /// another pod's id. CRI-O's keys decide, also when its id is empty
    /// (the container is then a pod of its own, never the forged one).
    #[test]
    fn crio_keys_win_over_a_forged_containerd_key() {
        let a = [
            (CRI_SANDBOX_ID, "victim"),
            (CRI_CONTAINER_TYPE, "sandbox"),
            (CRIO_SANDBOX_ID, "mine"),
            (CRIO_CONTAINER_TYPE, "container"),
        ];
        assert_eq!(sandbox_id(lookup(&a)), Some("mine"));
        assert_eq!(container_type(lookup(&a)), Some("container"));
        let a = [
            (CRI_SANDBOX_ID, "victim"),
            (CRIO_CONTAINER_TYPE, "container"),
        ];
        assert_eq!(sandbox_id(lookup(&a)), None);
        let a = [(CRI_SANDBOX_ID, "victim"), (CRIO_SANDBOX_ID, "")];
        assert_eq!(sandbox_id(lookup(&a)), None);
    }
}
