//! Runtime options and the small state file a fresh shim's `delete` needs.
//!
//! containerd passes runc's `Options` (`containerd.runc.v1.Options`) to a
//! shim when the handler has an `options` table; the fields cnfbox uses are
//! `BinaryName`, `Root` and `SystemdCgroup`. The resolved values are saved
//! in the bundle so `containerd-shim-cnfbox-v2 delete` (run by containerd
//! after a shim died) reaches the same runtime and state root.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::Options;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use serde::{Deserialize, Serialize};

use crate::exits::Exits;
use crate::runtime::{find_binary, Cnfbox, RuntimeError, RUNTIME_BINARY};

/// Where a shim keeps runtime state when no `Root` option is given.
pub const DEFAULT_ROOT: &str = "/run/containerd/cnfbox";
/// The state file in each bundle.
pub const STATE_FILE: &str = ".cnfbox-shim.json";

/// Errors reading options or the state file.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("runtime options of type {type_url} do not decode as containerd.runc.v1.Options")]
    Decode {
        type_url: String,
        #[source]
        source: containerd_shim::protos::protobuf::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("writing the shim state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Type URL suffix of runc's options (containerd sends them for handlers of
/// type io.containerd.runc.v2, and for others with an `options` table of
/// that type).
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// The runc options in `any`, or the defaults. Options of another type
/// (CRI's generic `runtimeoptions.v1.Options` for a non-runc runtime type)
/// carry nothing cnfbox uses and are ignored.
pub fn from_any(any: Option<&Any>) -> Result<Options, OptionsError> {
    let Some(any) = any.filter(|a| !a.value.is_empty() || !a.type_url.is_empty()) else {
        return Ok(Options::default());
    };
    if !any.type_url.ends_with(RUNC_OPTIONS) {
        log::info!("ignoring runtime options of type {}", any.type_url);
        return Ok(Options::default());
    }
    Options::parse_from_bytes(&any.value).map_err(|source| OptionsError::Decode {
        type_url: any.type_url.clone(),
        source,
    })
}

/// Which runtime binary and state root a container uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShimState {
    pub binary: PathBuf,
    pub root: PathBuf,
    #[serde(default)]
    pub systemd_cgroup: bool,
}

impl ShimState {
    /// From the options; the root defaults to `DEFAULT_ROOT/<namespace>`.
    pub fn resolve(opts: &Options, namespace: &str) -> Result<Self, OptionsError> {
        let name = if opts.binary_name.is_empty() {
            RUNTIME_BINARY
        } else {
            opts.binary_name.as_str()
        };
        let root = if opts.root.is_empty() {
            Path::new(DEFAULT_ROOT).join(namespace)
        } else {
            Path::new(&opts.root).join(namespace)
        };
        Ok(Self {
            binary: find_binary(name)?,
            root,
            systemd_cgroup: opts.systemd_cgroup,
        })
    }

    pub fn save(&self, bundle: &Path) -> Result<(), OptionsError> {
        let path = bundle.join(STATE_FILE);
        let body = serde_json::to_vec(self).unwrap_or_default();
        std::fs::write(&path, body).map_err(|source| OptionsError::Write { path, source })
    }

    /// The saved state, if the bundle has one.
    pub fn load(bundle: &Path) -> Option<Self> {
        let body = std::fs::read(bundle.join(STATE_FILE)).ok()?;
        serde_json::from_slice(&body).ok()
    }

    pub fn cnfbox(&self, exits: Arc<Exits>) -> Cnfbox {
        Cnfbox::new(
            self.binary.clone(),
            self.root.clone(),
            self.systemd_cgroup,
            exits,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_decode_and_default() {
        assert_eq!(from_any(None).expect("none"), Options::default());
        let opts = Options {
            binary_name: "/bin/sh".into(),
            root: "/run/x".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: opts.write_to_bytes().expect("encode"),
            ..Default::default()
        };
        let got = from_any(Some(&any)).expect("decode");
        assert_eq!(got.binary_name, "/bin/sh");
        let st = ShimState::resolve(&got, "k8s.io").expect("resolve");
        assert_eq!(st.binary, PathBuf::from("/bin/sh"));
        assert_eq!(st.root, PathBuf::from("/run/x/k8s.io"));
        assert!(st.systemd_cgroup);

        let bad = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0xff, 0xff, 0xff],
            ..Default::default()
        };
        let err = from_any(Some(&bad)).expect_err("garbage");
        assert!(
            err.to_string().contains("containerd.runc.v1.Options"),
            "{err}"
        );
        // CRI's generic options for a non-runc runtime type: ignored.
        let other = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x0a, 0x01, b'x'],
            ..Default::default()
        };
        assert_eq!(from_any(Some(&other)).expect("ignored"), Options::default());
    }

    #[test]
    fn state_file_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(ShimState::load(dir.path()), None);
        let st = ShimState {
            binary: "/usr/bin/cnfbox".into(),
            root: "/run/containerd/cnfbox/default".into(),
            systemd_cgroup: false,
        };
        st.save(dir.path()).expect("save");
        assert_eq!(ShimState::load(dir.path()), Some(st));
    }
}
