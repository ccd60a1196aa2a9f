//! The parts of `cnfbox` that read untrusted input (a bundle's
//! `config.json`, its annotations and the pod policy they ask for), built
//! as a library too so that the fuzz targets in `fuzz/` can drive them.
//! The `cnfbox` binary compiles the same modules from `main.rs`.

pub mod bundle;
pub mod capabilities;
pub mod config;
pub mod numa;
pub mod pod;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Annotation keys a pod spec may set that cnfbox or its pod logic reads.
const ANNOTATION_KEYS: &[&str] = &[
    "cnfbox.io/capabilities",
    "cnfbox.io/numa-node",
    "cnfbox.io/userns",
    "cnfbox.io/idmap-volumes",
    "cnfbox.io/interfaces",
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri.sandbox-id",
    "io.kubernetes.cri-o.ContainerType",
    "io.kubernetes.cri-o.SandboxID",
];

/// Annotations as a hostile pod spec sets them: `data` is read as
/// `key=value` lines, and each line's value is also given to one of the
/// known keys so that the fuzzer need not guess their names; the spec that
/// carries them goes through [`check_untrusted_spec`].
pub fn check_untrusted_annotations(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut annotations = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let known = ANNOTATION_KEYS[i % ANNOTATION_KEYS.len()];
        let (key, value) = line.split_once('=').unwrap_or((known, line));
        annotations.insert(key.to_string(), value.to_string());
        annotations.insert(known.to_string(), value.to_string());
    }
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "linux": {"namespaces": [{"type": "network"}, {"type": "pid"}]},
        "annotations": annotations,
    });
    check_untrusted_spec(spec.to_string().as_bytes());
}

/// Runs everything `create` decides from a spec alone, before any range,
/// mount or process exists: parse (naming the bad field), the pod role,
/// the capability policy (default allowlist), the NUMA hint against a fake
/// two-node topology, and the user-namespace mapping lines. Errors are
/// fine; a panic or a hang is a bug. The fuzz entry point.
pub fn check_untrusted_spec(raw: &[u8]) {
    let Ok(mut spec) = bundle::parse_spec(Path::new("config.json"), raw) else {
        return;
    };
    let role = pod::role("fuzz", spec.annotations().as_ref());
    let _ = role.pod();
    if let Ok(policy) = capabilities::Policy::load(Path::new("/nonexistent/cnfbox.toml")) {
        let _ = policy.apply(&mut spec.clone(), true);
        let _ = policy.apply(&mut spec, false);
    }
    let topo = numa::Topology {
        nodes: BTreeMap::from([
            (0, BTreeSet::from([0, 1, 2, 3])),
            (1, BTreeSet::from([4, 5, 6, 7])),
        ]),
        with_memory: BTreeSet::from([0, 1]),
    };
    if let Some(hint) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(numa::ANNOTATION))
    {
        let cpu = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.cpu().clone())
            .unwrap_or_default();
        let _ = numa::place(
            &topo,
            hint,
            cpu.cpus().as_deref(),
            cpu.mems().as_deref(),
            &BTreeSet::from([0]),
        );
    }
    if let Some(linux) = spec.linux() {
        for m in linux
            .uid_mappings()
            .iter()
            .chain(linux.gid_mappings().iter())
            .flatten()
        {
            if let Ok(m) = idmap::Mapping::new(m.container_id(), m.host_id(), m.size()) {
                let _ = m.to_proc_line();
                let _ = m.host_range();
            }
        }
    }
}
