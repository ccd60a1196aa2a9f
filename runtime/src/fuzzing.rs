//! Entry points for the cargo-fuzz targets in `fuzz/` (and for the tests
//! that replay their seeds and past crashes, `tests/fuzz_regressions.rs`):
//! everything `create` decides from a spec alone, before any range, mount
//! or process exists. Errors are fine; a panic or a hang is a bug.
//!
//! Every annotation the runtime reads is in [`cnfbox_annotations::ALL`];
//! [`COVERAGE`] says which check below reads each one, and
//! `tests/fuzz_keys.rs` fails when a key has none.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use cnfbox_annotations as keys;
use oci_spec::runtime::Spec;

use crate::{bundle, capabilities, host_ns, net, numa, pod};

/// How the fuzz entry reaches an annotation's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// The value goes through the check of [`CHECKS`] of this name.
    Check(&'static str),
    /// The value is only compared with these words where it is read (and
    /// anything else refused or ignored there): nothing to parse.
    Words(&'static [&'static str]),
}

/// Which check reads each annotation key.
pub const COVERAGE: &[(&str, Coverage)] = &[
    (keys::CAPABILITIES, Coverage::Check("capability policy")),
    (keys::NUMA_NODE, Coverage::Check("numa placement")),
    (keys::INTERFACES, Coverage::Check("interfaces")),
    (keys::USERNS, Coverage::Words(&["host"])),
    (keys::IDMAP_VOLUMES, Coverage::Words(&["pod", "none"])),
    (keys::CRI_CONTAINER_TYPE, Coverage::Check("pod role")),
    (keys::CRI_SANDBOX_ID, Coverage::Check("pod role")),
    (keys::CRIO_CONTAINER_TYPE, Coverage::Check("pod role")),
    (keys::CRIO_SANDBOX_ID, Coverage::Check("pod role")),
];

/// One check of a parsed spec: errors are fine, a panic is a bug.
pub type Check = fn(&Spec);

/// The checks [`check_untrusted_spec`] runs on a parsed spec, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("pod role", pod_role),
    ("capability policy", capability_policy),
    ("numa placement", numa_placement),
    ("interfaces", interfaces),
    ("host namespaces", host_namespaces),
    ("id mappings", id_mappings),
];

/// Annotations as a hostile pod spec sets them: `data` is read as
/// `key=value` lines, and each line's value is also given to one of the
/// known keys so that the fuzzer need not guess their names; the spec that
/// carries them goes through [`check_untrusted_spec`].
pub fn check_untrusted_annotations(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut annotations = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let known = keys::ALL[i % keys::ALL.len()];
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

/// Parses a `config.json` (naming the bad field) and runs every check of
/// [`CHECKS`] on what parses.
pub fn check_untrusted_spec(raw: &[u8]) {
    let Ok(spec) = bundle::parse_spec(Path::new("config.json"), raw) else {
        return;
    };
    for (_, check) in CHECKS {
        check(&spec);
    }
}

fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a String> {
    spec.annotations().as_ref().and_then(|a| a.get(key))
}

fn pod_role(spec: &Spec) {
    let role = pod::role("fuzz", spec.annotations().as_ref());
    let _ = role.pod();
    let _ = pod::container_type(spec.annotations().as_ref());
}

/// The default allowlist (no config file), with and without a private
/// user namespace.
fn capability_policy(spec: &Spec) {
    if let Ok(policy) = capabilities::Policy::load(Path::new("/nonexistent/cnfbox.toml")) {
        let _ = policy.apply(&mut spec.clone(), true);
        let _ = policy.apply(&mut spec.clone(), false);
    }
}

/// The NUMA hint against a fake two-node topology.
fn numa_placement(spec: &Spec) {
    let topo = numa::Topology {
        nodes: BTreeMap::from([
            (0, BTreeSet::from([0, 1, 2, 3])),
            (1, BTreeSet::from([4, 5, 6, 7])),
        ]),
        with_memory: BTreeSet::from([0, 1]),
    };
    let cpu = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().clone())
        .unwrap_or_default();
    let mut inputs = numa::inputs::kubelet(spec, &topo).unwrap_or_default();
    if let Some(Ok(node)) = annotation(spec, numa::ANNOTATION).map(|h| numa::parse_hint(h)) {
        inputs.push(numa::derive::Input {
            what: format!("annotation {}", numa::ANNOTATION),
            rank: numa::derive::Rank::Annotation,
            nodes: BTreeSet::from([node]),
        });
    }
    for align in [
        numa::derive::Align::Auto,
        numa::derive::Align::Strict,
        numa::derive::Align::Off,
    ] {
        if let Ok(numa::derive::Decision::Bound { node, from, .. }) =
            numa::derive::decide(&inputs, align)
        {
            let _ = numa::place_on(
                &topo,
                node,
                &from,
                cpu.cpus().as_deref(),
                cpu.mems().as_deref(),
                &BTreeSet::from([0]),
            );
        }
    }
}

/// The interfaces annotation and `linux.netDevices`, as `net::plan` reads
/// them before it asks the policy.
fn interfaces(spec: &Spec) {
    use net::request;
    let mut requests = match spec.linux().as_ref().and_then(|l| l.net_devices().as_ref()) {
        Some(d) => request::from_net_devices(d).unwrap_or_default(),
        None => Vec::new(),
    };
    if let Some(value) = annotation(spec, request::ANNOTATION) {
        if let Ok(parsed) = request::parse_annotation(value) {
            for r in &parsed {
                assert!(
                    request::check_name(&r.origin, &r.name).is_ok(),
                    "accepted a bad interface name: {r:?}"
                );
            }
            requests.extend(parsed);
        }
    }
    let _ = request::check_unique(&requests);
}

/// Host network/PID/IPC namespaces and privilege, as `[pods]` sees them.
fn host_namespaces(spec: &Spec) {
    let _ = host_ns::request(spec);
    let _ = host_ns::privileged(spec);
}

/// The user-namespace mapping lines.
fn id_mappings(spec: &Spec) {
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
