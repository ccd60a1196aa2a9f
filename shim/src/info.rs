//! `-info`: the RuntimeInfo protobuf on stdout.
//!
//! containerd 2.x runs `<shim> -info` (runtime options on stdin) and reads
//! the runtime's OCI features document from `features`; its CRI uses
//! `linux.mountExtensions.idmap` and the user namespace to tell kubelet
//! that the handler supports user namespaces. containerd 1.6 never calls
//! it (it has no introspection of runtimes); it is here for newer nodes.

use std::io::{IsTerminal, Read, Write};
use std::process::Command;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::options::from_any;
use crate::runtime::{find_binary, RUNTIME_BINARY};

/// Type URL containerd decodes `features` with (runtime-spec features.md).
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Builds the RuntimeInfo for the runtime `binary_name` (default cnfbox).
pub fn runtime_info(options: Option<&Any>) -> Result<RuntimeInfo, String> {
    let opts = from_any(options).map_err(|e| e.to_string())?;
    let name = if opts.binary_name.is_empty() {
        RUNTIME_BINARY
    } else {
        opts.binary_name.as_str()
    };
    let binary = find_binary(name).map_err(|e| e.to_string())?;
    let out = Command::new(&binary)
        .arg("features")
        .output()
        .map_err(|e| format!("running {} features: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} features failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // Validate: containerd decodes it as JSON.
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .map_err(|e| format!("{} features printed invalid JSON: {e}", binary.display()))?;
    Ok(RuntimeInfo {
        name: crate::RUNTIME_ID.to_owned(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        }),
        options: MessageField::from_option(options.cloned()),
        features: MessageField::some(Any {
            type_url: FEATURES_TYPE_URL.to_owned(),
            value: out.stdout,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Reads options from stdin, prints RuntimeInfo; the exit code.
pub fn print() -> i32 {
    let mut input = Vec::new();
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        // An unreadable stdin is the same as no options.
        let _ = stdin.lock().read_to_end(&mut input);
    }
    let options = (!input.is_empty())
        .then(|| Any::parse_from_bytes(&input).ok())
        .flatten();
    let result = runtime_info(options.as_ref()).and_then(|info| {
        info.write_to_bytes()
            .map_err(|e| format!("encoding RuntimeInfo: {e}"))
    });
    match result {
        Ok(bytes) => {
            let mut out = std::io::stdout();
            if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("containerd-shim-cnfbox-v2 -info: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::api::Options;

    #[test]
    fn info_carries_cnfbox_features_with_idmap() {
        // target/<profile>/deps/<test> -> target/<profile>/cnfbox
        let exe = std::env::current_exe().expect("current_exe");
        let cnfbox = exe
            .parent()
            .and_then(std::path::Path::parent)
            .map(|d| d.join("cnfbox"))
            .filter(|p| p.is_file());
        let Some(cnfbox) = cnfbox else {
            eprintln!("SKIP info_carries_cnfbox_features_with_idmap: build cnfbox first");
            return;
        };
        let opts = Options {
            binary_name: cnfbox.display().to_string(),
            ..Default::default()
        };
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: opts.write_to_bytes().expect("encode"),
            ..Default::default()
        };
        let info = runtime_info(Some(&any)).expect("runtime info");
        assert_eq!(info.name, crate::RUNTIME_ID);
        assert_eq!(info.features.type_url, FEATURES_TYPE_URL);
        let features: serde_json::Value =
            serde_json::from_slice(&info.features.value).expect("features JSON");
        assert_eq!(
            features["linux"]["mountExtensions"]["idmap"]["enabled"],
            serde_json::Value::Bool(true)
        );
        // containerd 2.x's CRI runs recursive read-only mounts only when
        // the runtime lists `rro` (pkg/cri: "runtime does not support rro").
        let options = features["mountOptions"].as_array().expect("mountOptions");
        for o in [
            "rro", "rrw", "rnosuid", "rnodev", "rnoexec", "idmap", "rslave",
        ] {
            assert!(options.iter().any(|v| v == o), "{o} in {options:?}");
        }
        let direct = std::process::Command::new(&cnfbox)
            .arg("features")
            .output()
            .expect("cnfbox features");
        let direct: serde_json::Value = serde_json::from_slice(&direct.stdout).expect("JSON");
        assert_eq!(
            direct["mountOptions"], features["mountOptions"],
            "-info reports what cnfbox features does"
        );
        assert!(features["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .any(|n| n == "user"));
        // Round trip through the wire format containerd reads.
        let back =
            RuntimeInfo::parse_from_bytes(&info.write_to_bytes().expect("encode")).expect("decode");
        assert_eq!(back.features.value, info.features.value);

        let missing = Options {
            binary_name: "/nonexistent/cnfbox".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: missing.write_to_bytes().expect("encode"),
            ..Default::default()
        };
        let err = runtime_info(Some(&any)).expect_err("missing binary");
        assert!(err.contains("/nonexistent/cnfbox"), "{err}");
    }
}
