//! NUMA placement: the `cnfbox.io/numa-node` hint turned into the cpuset a
//! CNF's container gets, from the host topology in sysfs.
//!
//! CPUs are the hinted node's online CPUs, intersected with the spec's
//! `linux.resources.cpu.cpus` when given (what kubelet's CPU Manager sends),
//! minus `[numa] reserved_cpus` from config.toml; mems is the node. An
//! empty intersection, an unknown or memory-less node, or a hint that
//! contradicts the spec's mems is an error, never a silent widening.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxCpu, LinuxMemoryPolicy, MemoryPolicyFlagType as Flag, MemoryPolicyModeType as Mode, Spec,
};

/// Pod or container annotation naming the NUMA node.
pub const ANNOTATION: &str = cnfbox_annotations::NUMA_NODE;

/// Errors of NUMA placement.
#[derive(Debug, thiserror::Error)]
pub enum NumaError {
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: malformed CPU list {list:?}: {reason}")]
    CpuList {
        what: String,
        list: String,
        reason: String,
    },
    #[error("annotation {ANNOTATION}: {value:?} is not a node number")]
    Hint { value: String },
    #[error("annotation {ANNOTATION}: node {node} does not exist (nodes: {known})")]
    UnknownNode { node: u32, known: String },
    #[error("annotation {ANNOTATION}: node {node} has no memory")]
    NoMemory { node: u32 },
    #[error("annotation {ANNOTATION}: node {node} contradicts linux.resources.cpu.mems {mems:?}")]
    MemsConflict { node: u32, mems: String },
    #[error("annotation {ANNOTATION}: no CPU left on node {node} (node CPUs {node_cpus}, spec cpus {spec_cpus}, reserved {reserved})")]
    EmptyCpus {
        node: u32,
        node_cpus: String,
        spec_cpus: String,
        reserved: String,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("linux.memoryPolicy: {reason}")]
    Policy { reason: String },
    #[error("linux.memoryPolicy.nodes {nodes:?}: node {node} does not exist or has no memory (nodes with memory: {known})")]
    PolicyNode {
        nodes: String,
        node: u32,
        known: String,
    },
    #[error("linux.memoryPolicy.nodes {nodes:?} contradicts annotation {ANNOTATION}: {node}")]
    PolicyConflict { node: u32, nodes: String },
}

/// Parses a kernel CPU list (`0-3,7,9-10`; cpuset(7) "List format").
pub fn parse_list(what: &str, list: &str) -> Result<BTreeSet<u32>, NumaError> {
    let err = |reason: &str| NumaError::CpuList {
        what: what.to_string(),
        list: list.to_string(),
        reason: reason.to_string(),
    };
    let mut out = BTreeSet::new();
    let trimmed = list.trim();
    if trimmed.is_empty() {
        return Ok(out);
    }
    for part in trimmed.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a.trim().parse().map_err(|_| err("not a number"))?;
        let b: u32 = b.trim().parse().map_err(|_| err("not a number"))?;
        if a > b {
            return Err(err("range runs backwards"));
        }
        if b - a > 65_535 {
            return Err(err("range too large"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// Formats a set as a kernel CPU list.
pub fn format_list(set: &BTreeSet<u32>) -> String {
    let mut parts = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The host's NUMA topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Node id -> its online CPUs.
    pub nodes: std::collections::BTreeMap<u32, BTreeSet<u32>>,
    /// Nodes with memory.
    pub with_memory: BTreeSet<u32>,
}

impl Topology {
    /// Reads the topology under `sys` (`/sys` on a host; a fake tree in
    /// tests): `devices/system/node/node*/cpulist`, `.../node/has_memory`
    /// and `devices/system/cpu/online`.
    pub fn read(sys: &Path) -> Result<Self, NumaError> {
        let read = |p: PathBuf| {
            fs::read_to_string(&p).map_err(|source| NumaError::Read { path: p, source })
        };
        let node_dir = sys.join("devices/system/node");
        let online_path = sys.join("devices/system/cpu/online");
        let online = parse_list(
            &online_path.display().to_string(),
            &read(online_path.clone())?,
        )?;
        let mem_path = node_dir.join("has_memory");
        let with_memory = parse_list(&mem_path.display().to_string(), &read(mem_path.clone())?)?;
        let mut nodes = std::collections::BTreeMap::new();
        let entries = fs::read_dir(&node_dir).map_err(|source| NumaError::Read {
            path: node_dir.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("node")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let p = e.path().join("cpulist");
            let cpus = parse_list(&p.display().to_string(), &read(p.clone())?)?;
            nodes.insert(id, cpus.intersection(&online).copied().collect());
        }
        Ok(Self { nodes, with_memory })
    }
}

/// CPUs kept for the host (`[numa] reserved_cpus` in config.toml).
pub fn reserved_cpus(config: &Path) -> Result<BTreeSet<u32>, NumaError> {
    let list = &crate::config::load(config)?.numa.reserved_cpus;
    parse_list(&format!("{} [numa] reserved_cpus", config.display()), list)
}

/// The cpuset for a container hinted to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: u32,
    pub cpus: BTreeSet<u32>,
}

/// Computes the placement for `hint` against the spec's cpus/mems.
pub fn place(
    topo: &Topology,
    hint: &str,
    spec_cpus: Option<&str>,
    spec_mems: Option<&str>,
    reserved: &BTreeSet<u32>,
) -> Result<Placement, NumaError> {
    let node: u32 = hint.trim().parse().map_err(|_| NumaError::Hint {
        value: hint.to_string(),
    })?;
    let Some(node_cpus) = topo.nodes.get(&node) else {
        return Err(NumaError::UnknownNode {
            node,
            known: topo
                .nodes
                .keys()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
        });
    };
    if !topo.with_memory.contains(&node) {
        return Err(NumaError::NoMemory { node });
    }
    if let Some(mems) = spec_mems.filter(|m| !m.trim().is_empty()) {
        let set = parse_list("linux.resources.cpu.mems", mems)?;
        if set != BTreeSet::from([node]) {
            return Err(NumaError::MemsConflict {
                node,
                mems: mems.to_string(),
            });
        }
    }
    let mut cpus: BTreeSet<u32> = node_cpus.difference(reserved).copied().collect();
    if let Some(list) = spec_cpus.filter(|c| !c.trim().is_empty()) {
        let wanted = parse_list("linux.resources.cpu.cpus", list)?;
        cpus = cpus.intersection(&wanted).copied().collect();
    }
    if cpus.is_empty() {
        return Err(NumaError::EmptyCpus {
            node,
            node_cpus: format_list(node_cpus),
            spec_cpus: spec_cpus.unwrap_or("-").to_string(),
            reserved: format_list(reserved),
        });
    }
    Ok(Placement { node, cpus })
}

/// Checks `linux.memoryPolicy` against the topology (and the hint's node):
/// what the kernel would refuse at the init's `set_mempolicy`, said before
/// anything is created, with the field named.
pub fn check_policy(
    policy: &LinuxMemoryPolicy,
    topo: &Topology,
    hint: Option<u32>,
) -> Result<(), NumaError> {
    let err = |reason: &str| NumaError::Policy {
        reason: reason.to_string(),
    };
    let flags = policy.flags().clone().unwrap_or_default();
    if flags.contains(&Flag::MpolFStaticNodes) && flags.contains(&Flag::MpolFRelativeNodes) {
        return Err(err(
            "flags MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other",
        ));
    }
    if flags.contains(&Flag::MpolFNumaBalancing) && policy.mode() != Mode::MpolBind {
        return Err(err("flag MPOL_F_NUMA_BALANCING needs mode MPOL_BIND"));
    }
    let raw = policy.nodes().clone().unwrap_or_default();
    let nodes = parse_list("linux.memoryPolicy.nodes", &raw)?;
    match policy.mode() {
        Mode::MpolDefault | Mode::MpolLocal => {
            if !nodes.is_empty() || !flags.is_empty() {
                return Err(err(&format!(
                    "mode {} takes neither nodes nor flags",
                    policy.mode()
                )));
            }
            return Ok(());
        }
        Mode::MpolPreferred => {}
        _ if nodes.is_empty() => {
            return Err(err(&format!("mode {} needs nodes", policy.mode())));
        }
        _ => {}
    }
    // RELATIVE_NODES numbers nodes within the cpuset: they need not exist.
    if !flags.contains(&Flag::MpolFRelativeNodes) {
        if let Some(&node) = nodes.iter().find(|n| !topo.with_memory.contains(n)) {
            return Err(NumaError::PolicyNode {
                nodes: raw,
                node,
                known: format_list(&topo.with_memory),
            });
        }
    }
    if let Some(node) = hint {
        if !nodes.is_empty() && nodes != BTreeSet::from([node]) {
            return Err(NumaError::PolicyConflict { node, nodes: raw });
        }
    }
    Ok(())
}

/// What NUMA placement did to a container, for `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub node: u32,
    pub cpus: String,
    pub mems: String,
}

/// Applies the annotation's placement to `spec` (no annotation: nothing
/// but a check of `linux.memoryPolicy`): cpuset, mems, and a memory
/// policy binding to the node unless the spec brings its own.
pub fn apply(spec: &mut Spec, sys: &Path, config: &Path) -> Result<Option<Record>, NumaError> {
    let hint = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .cloned();
    let policy = spec
        .linux()
        .as_ref()
        .and_then(|l| l.memory_policy().clone());
    if hint.is_none() && policy.is_none() {
        return Ok(None);
    }
    let topo = Topology::read(sys)?;
    let Some(hint) = hint else {
        if let Some(p) = &policy {
            check_policy(p, &topo, None)?;
        }
        return Ok(None);
    };
    let reserved = reserved_cpus(config)?;
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut cpu: LinuxCpu = resources.cpu().clone().unwrap_or_default();
    let placement = place(
        &topo,
        &hint,
        cpu.cpus().as_deref(),
        cpu.mems().as_deref(),
        &reserved,
    )?;
    match &policy {
        Some(p) => check_policy(p, &topo, Some(placement.node))?,
        None => {
            let mut bind = LinuxMemoryPolicy::default();
            bind.set_mode(Mode::MpolBind);
            bind.set_nodes(Some(placement.node.to_string()));
            linux.set_memory_policy(Some(bind));
        }
    }
    let record = Record {
        node: placement.node,
        cpus: format_list(&placement.cpus),
        mems: placement.node.to_string(),
    };
    cpu.set_cpus(Some(record.cpus.clone()));
    cpu.set_mems(Some(record.mems.clone()));
    resources.set_cpu(Some(cpu));
    linux.set_resources(Some(resources));
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs with `nodes[i]` = node i's CPU list ("" = memory-less and
    /// CPU-less is allowed), `online` CPUs, and nodes with memory.
    fn fake(nodes: &[&str], online: &str, with_memory: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let n = dir.path().join("devices/system/node");
        for (i, cpus) in nodes.iter().enumerate() {
            fs::create_dir_all(n.join(format!("node{i}"))).unwrap();
            fs::write(n.join(format!("node{i}/cpulist")), format!("{cpus}\n")).unwrap();
        }
        fs::write(n.join("has_memory"), format!("{with_memory}\n")).unwrap();
        fs::create_dir_all(dir.path().join("devices/system/cpu")).unwrap();
        fs::write(
            dir.path().join("devices/system/cpu/online"),
            format!("{online}\n"),
        )
        .unwrap();
        dir
    }

    fn set(l: &str) -> BTreeSet<u32> {
        parse_list("t", l).unwrap()
    }

    #[test]
    fn cpu_lists_round_trip_and_reject_garbage() {
        assert_eq!(format_list(&set("0-3,7,9-10")), "0-3,7,9-10");
        assert_eq!(format_list(&set("3,1,2")), "1-3");
        assert!(set("").is_empty());
        for bad in ["1-", "a", "3-1", "0-99999999", "1,,2"] {
            assert!(parse_list("spec", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn two_four_and_eight_node_trees() {
        let two = fake(&["0-3", "4-7"], "0-7", "0-1");
        let t = Topology::read(two.path()).unwrap();
        let none = BTreeSet::new();
        assert_eq!(place(&t, "1", None, None, &none).unwrap().cpus, set("4-7"));
        let four = fake(&["0-1", "2-3", "4-5", "6-7"], "0-7", "0-3");
        let t = Topology::read(four.path()).unwrap();
        assert_eq!(
            place(&t, "2", Some("3-5"), None, &none).unwrap().cpus,
            set("4-5")
        );
        assert_eq!(
            place(&t, "3", None, Some("3"), &set("7")).unwrap().cpus,
            set("6")
        );
        let eight_lists: Vec<String> = (0..8).map(|i| format!("{}-{}", i * 4, i * 4 + 3)).collect();
        let eight_refs: Vec<&str> = eight_lists.iter().map(String::as_str).collect();
        let eight = fake(&eight_refs, "0-31", "0-7");
        let t = Topology::read(eight.path()).unwrap();
        assert_eq!(t.nodes.len(), 8);
        assert_eq!(
            place(&t, "7", None, None, &none).unwrap().cpus,
            set("28-31")
        );
    }

    #[test]
    fn offline_cpus_and_memoryless_nodes() {
        // CPUs 2 and 3 offline; node 1 has CPUs but no memory; node 2 has
        // memory but no CPUs.
        let tree = fake(&["0-3", "4-5", ""], "0-1,4-5", "0,2");
        let t = Topology::read(tree.path()).unwrap();
        let none = BTreeSet::new();
        assert_eq!(place(&t, "0", None, None, &none).unwrap().cpus, set("0-1"));
        assert!(matches!(
            place(&t, "1", None, None, &none),
            Err(NumaError::NoMemory { node: 1 })
        ));
        assert!(matches!(
            place(&t, "2", None, None, &none),
            Err(NumaError::EmptyCpus { .. })
        ));
    }

    #[test]
    fn refusals() {
        let tree = fake(&["0-3", "4-7"], "0-7", "0-1");
        let t = Topology::read(tree.path()).unwrap();
        let none = BTreeSet::new();
        let e = place(&t, "5", None, None, &none).unwrap_err();
        assert!(
            e.to_string().contains("node 5 does not exist (nodes: 0,1)"),
            "{e}"
        );
        let e = place(&t, "one", None, None, &none).unwrap_err();
        assert!(matches!(e, NumaError::Hint { .. }));
        let e = place(&t, "0", Some("4-7"), None, &none).unwrap_err();
        assert!(e.to_string().contains("no CPU left on node 0"), "{e}");
        let e = place(&t, "0", None, Some("1"), &none).unwrap_err();
        assert!(matches!(e, NumaError::MemsConflict { .. }), "{e}");
        let e = place(&t, "0", Some("0-x"), None, &none).unwrap_err();
        assert!(e.to_string().contains("linux.resources.cpu.cpus"), "{e}");
        let e = place(&t, "0", None, None, &set("0-3")).unwrap_err();
        assert!(matches!(e, NumaError::EmptyCpus { .. }));
    }

    fn policy(mode: Mode, nodes: Option<&str>, flags: &[Flag]) -> LinuxMemoryPolicy {
        let mut p = LinuxMemoryPolicy::default();
        p.set_mode(mode);
        p.set_nodes(nodes.map(str::to_string));
        if !flags.is_empty() {
            p.set_flags(Some(flags.to_vec()));
        }
        p
    }

    #[test]
    fn memory_policies_are_checked_against_topology_and_hint() {
        let tree = fake(&["0-3", "4-7", ""], "0-7", "0-1");
        let t = Topology::read(tree.path()).unwrap();
        assert!(check_policy(&policy(Mode::MpolBind, Some("0-1"), &[]), &t, None).is_ok());
        assert!(check_policy(&policy(Mode::MpolLocal, None, &[]), &t, Some(1)).is_ok());
        assert!(check_policy(&policy(Mode::MpolPreferred, None, &[]), &t, None).is_ok());
        let e = check_policy(&policy(Mode::MpolBind, Some("2"), &[]), &t, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("node 2 does not exist or has no memory (nodes with memory: 0-1)"),
            "{e}"
        );
        // Relative nodes count within the cpuset: not checked against sysfs.
        assert!(check_policy(
            &policy(
                Mode::MpolInterleave,
                Some("0-5"),
                &[Flag::MpolFRelativeNodes]
            ),
            &t,
            None
        )
        .is_ok());
        let e = check_policy(&policy(Mode::MpolInterleave, None, &[]), &t, None).unwrap_err();
        assert!(e.to_string().contains("needs nodes"), "{e}");
        let e = check_policy(&policy(Mode::MpolDefault, Some("0"), &[]), &t, None).unwrap_err();
        assert!(e.to_string().contains("takes neither"), "{e}");
        let e = check_policy(
            &policy(Mode::MpolInterleave, Some("0"), &[Flag::MpolFNumaBalancing]),
            &t,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs mode MPOL_BIND"), "{e}");
        let e = check_policy(&policy(Mode::MpolBind, Some("0-1"), &[]), &t, Some(1)).unwrap_err();
        assert!(
            matches!(e, NumaError::PolicyConflict { node: 1, .. }),
            "{e}"
        );
        let e = check_policy(&policy(Mode::MpolBind, Some("x"), &[]), &t, None).unwrap_err();
        assert!(e.to_string().contains("linux.memoryPolicy.nodes"), "{e}");
    }

    #[test]
    fn the_hint_binds_memory_unless_the_spec_has_a_policy() {
        let tree = fake(&["0-3", "4-7"], "0-7", "0-1");
        let config = tree.path().join("none.toml");
        let mut spec = Spec::default();
        spec.set_annotations(Some([(ANNOTATION.to_string(), "1".to_string())].into()));
        let rec = apply(&mut spec, tree.path(), &config).unwrap().unwrap();
        assert_eq!(
            rec,
            Record {
                node: 1,
                cpus: "4-7".into(),
                mems: "1".into()
            }
        );
        let linux = spec.linux().as_ref().unwrap();
        let p = linux.memory_policy().as_ref().unwrap();
        assert_eq!(
            (p.mode(), p.nodes().as_deref()),
            (Mode::MpolBind, Some("1"))
        );
        // The spec's own policy is kept when it agrees with the hint.
        let mut spec = Spec::default();
        spec.set_annotations(Some([(ANNOTATION.to_string(), "0".to_string())].into()));
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_memory_policy(Some(policy(Mode::MpolPreferred, Some("0"), &[])));
        spec.set_linux(Some(linux));
        apply(&mut spec, tree.path(), &config).unwrap();
        let p = spec
            .linux()
            .as_ref()
            .unwrap()
            .memory_policy()
            .clone()
            .unwrap();
        assert_eq!(p.mode(), Mode::MpolPreferred);
        // No hint, no policy: nothing is read or changed.
        let mut spec = Spec::default();
        assert_eq!(
            apply(&mut spec, Path::new("/nonexistent"), &config).unwrap(),
            None
        );
    }
}
