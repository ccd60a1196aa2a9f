//! The parts of `cnfbox` that read untrusted input (a bundle's
//! `config.json`, its annotations and the pod policy they ask for), built
//! as a library too so that the fuzz targets in `fuzz/` can drive them.
//! The `cnfbox` binary compiles the same modules from `main.rs`.

pub mod bundle;
pub mod capabilities;
pub mod numa;
pub mod pod;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

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
