//! Annotation values as a hostile pod spec sets them: the input is split
//! into `key=value` lines; known keys are also tried with the line's value
//! so that the fuzzer need not guess their names.
#![no_main]

use std::collections::HashMap;

const KEYS: &[&str] = &[
    "cnfbox.io/capabilities",
    "cnfbox.io/numa-node",
    "cnfbox.io/userns",
    "cnfbox.io/idmap-volumes",
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri.sandbox-id",
    "io.kubernetes.cri-o.ContainerType",
    "io.kubernetes.cri-o.SandboxID",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut annotations = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let (key, value) = line.split_once('=').unwrap_or((KEYS[i % KEYS.len()], line));
        annotations.insert(key.to_string(), value.to_string());
        annotations.insert(KEYS[i % KEYS.len()].to_string(), value.to_string());
    }
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "linux": {"namespaces": [{"type": "network"}, {"type": "pid"}]},
        "annotations": annotations,
    });
    cnfbox::check_untrusted_spec(spec.to_string().as_bytes());
});
