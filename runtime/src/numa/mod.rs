//! NUMA placement: the node a CNF's container follows, turned into its
//! cpuset and memory policy, from the host topology in sysfs.
//!
//! The node comes from the `cnfbox.io/numa-node` annotation or, without
//! one, from what kubelet and the device plugins decided: the spec's
//! `cpu.mems` and `cpu.cpus` and the devices the pod is given (`inputs`),
//! under the rules of `[numa] align` when they disagree (`derive`).
//! CPUs are the node's online CPUs, intersected with the spec's
//! `linux.resources.cpu.cpus` when given (what kubelet's CPU Manager sends),
//! minus `[numa] reserved_cpus` from config.toml; mems is the node. An
//! empty intersection, an unknown or memory-less node, or a hint that
//! contradicts the spec's mems is an error, never a silent widening.

pub mod derive;
pub mod inputs;

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
    #[error("{from}: node {node} does not exist (nodes: {known})")]
    UnknownNode {
        node: u32,
        from: String,
        known: String,
    },
    #[error("{from}: node {node} has no memory")]
    NoMemory { node: u32, from: String },
    #[error("{from}: node {node} contradicts linux.resources.cpu.mems {mems:?}")]
    MemsConflict {
        node: u32,
        from: String,
        mems: String,
    },
    #[error("no CPU left on node {node} (from {from}): {why}")]
    EmptyCpus {
        node: u32,
        from: String,
        /// What took them: the spec's cpus, `[numa] reserved_cpus`, or a
        /// node without online CPUs.
        why: String,
    },
    #[error("[numa] align = \"strict\": {first} and {second} disagree")]
    Disagree { first: String, second: String },
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
#[cfg(test)]
pub fn place(
    topo: &Topology,
    hint: &str,
    spec_cpus: Option<&str>,
    spec_mems: Option<&str>,
    reserved: &BTreeSet<u32>,
) -> Result<Placement, NumaError> {
    let node = parse_hint(hint)?;
    place_on(
        topo,
        node,
        &format!("annotation {ANNOTATION}"),
        spec_cpus,
        spec_mems,
        reserved,
    )
}

/// The node an annotation value names.
pub fn parse_hint(hint: &str) -> Result<u32, NumaError> {
    hint.trim().parse().map_err(|_| NumaError::Hint {
        value: hint.to_string(),
    })
}

/// Computes the placement on `node` (named by `from`) against the spec's
/// cpus/mems.
pub fn place_on(
    topo: &Topology,
    node: u32,
    from: &str,
    spec_cpus: Option<&str>,
    spec_mems: Option<&str>,
    reserved: &BTreeSet<u32>,
) -> Result<Placement, NumaError> {
    let Some(node_cpus) = topo.nodes.get(&node) else {
        return Err(NumaError::UnknownNode {
            node,
            from: from.to_string(),
            known: topo
                .nodes
                .keys()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
        });
    };
    if !topo.with_memory.contains(&node) {
        return Err(NumaError::NoMemory {
            node,
            from: from.to_string(),
        });
    }
    if let Some(mems) = spec_mems.filter(|m| !m.trim().is_empty()) {
        let set = parse_list("linux.resources.cpu.mems", mems)?;
        if set != BTreeSet::from([node]) {
            return Err(NumaError::MemsConflict {
                node,
                from: from.to_string(),
                mems: mems.to_string(),
            });
        }
    }
    let none = |set: &BTreeSet<u32>| {
        if set.is_empty() {
            "none".to_string()
        } else {
            format_list(set)
        }
    };
    let empty = |why: String| NumaError::EmptyCpus {
        node,
        from: from.to_string(),
        why,
    };
    if node_cpus.is_empty() {
        return Err(empty("the node has no online CPU".into()));
    }
    let mut cpus: BTreeSet<u32> = node_cpus.difference(reserved).copied().collect();
    if cpus.is_empty() {
        return Err(empty(format!(
            "[numa] reserved_cpus {} takes all of the node's CPUs {}",
            format_list(reserved),
            format_list(node_cpus)
        )));
    }
    if let Some(list) = spec_cpus.filter(|c| !c.trim().is_empty()) {
        let wanted = parse_list("linux.resources.cpu.cpus", list)?;
        cpus = cpus.intersection(&wanted).copied().collect();
        if cpus.is_empty() {
            return Err(empty(format!(
                "linux.resources.cpu.cpus {list:?} names none of the node's CPUs {} (reserved {})",
                format_list(node_cpus),
                none(reserved)
            )));
        }
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
    /// Where the node came from (`annotation cnfbox.io/numa-node`,
    /// `linux.resources.cpu.cpus 2-3`, `interface fh0: 0000:3b:02.1`);
    /// empty in records of containers created before it was kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
}

/// What placement decided for a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The node it is bound to.
    pub record: Option<Record>,
    /// Why it is bound to none although an input named nodes (CPUs
    /// across nodes).
    pub unbound: Option<String>,
    /// Inputs that named another node and were not followed
    /// (`align = "auto"`), for the caller to print.
    pub warnings: Vec<String>,
}

/// `[numa] align` from config.toml.
pub fn align(config: &Path) -> Result<derive::Align, NumaError> {
    Ok(crate::config::load(config)?.numa.align)
}

/// Places the container on the node its inputs decide (`derive`; the
/// annotation alone with `align = "off"`): cpuset, mems, and a memory
/// policy binding to the node unless the spec brings its own. With no
/// node, nothing but a check of `linux.memoryPolicy`. `interfaces` are
/// the secondary interfaces the pod asked for.
pub fn apply(
    spec: &mut Spec,
    sys: &Path,
    config: &Path,
    interfaces: &[crate::net::request::Request],
) -> Result<Outcome, NumaError> {
    let hint = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .cloned();
    let policy = spec
        .linux()
        .as_ref()
        .and_then(|l| l.memory_policy().clone());
    let hint = hint.as_deref().map(parse_hint).transpose()?;
    let align = if hint.is_some() || inputs::any(spec, interfaces) {
        align(config)?
    } else {
        derive::Align::Off
    };
    if hint.is_none() && policy.is_none() && align == derive::Align::Off {
        return Ok(Outcome::default());
    }
    let topo = Topology::read(sys)?;
    let mut all = Vec::new();
    if let Some(node) = hint {
        all.push(derive::Input {
            what: format!("annotation {ANNOTATION}"),
            rank: derive::Rank::Annotation,
            nodes: BTreeSet::from([node]),
        });
    }
    if align != derive::Align::Off {
        all.extend(inputs::kubelet(spec, &topo)?);
        all.extend(inputs::devices(spec, interfaces, sys));
    }
    let (node, from, warnings) = match derive::decide(&all, align)? {
        derive::Decision::None => {
            if let Some(p) = &policy {
                check_policy(p, &topo, None)?;
            }
            return Ok(Outcome::default());
        }
        derive::Decision::Unbound { why, warnings } => {
            if let Some(p) = &policy {
                check_policy(p, &topo, None)?;
            }
            return Ok(Outcome {
                record: None,
                unbound: Some(why),
                warnings,
            });
        }
        derive::Decision::Bound {
            node,
            from,
            warnings,
        } => (node, from, warnings),
    };
    let reserved = reserved_cpus(config)?;
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut cpu: LinuxCpu = resources.cpu().clone().unwrap_or_default();
    let placement = place_on(
        &topo,
        node,
        &from,
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
        from,
    };
    cpu.set_cpus(Some(record.cpus.clone()));
    cpu.set_mems(Some(record.mems.clone()));
    resources.set_cpu(Some(cpu));
    linux.set_resources(Some(resources));
    Ok(Outcome {
        record: Some(record),
        unbound: None,
        warnings,
    })
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
            Err(NumaError::NoMemory { node: 1, .. })
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
        let rec = apply(&mut spec, tree.path(), &config, &[])
            .unwrap()
            .record
            .unwrap();
        assert_eq!(
            rec,
            Record {
                node: 1,
                cpus: "4-7".into(),
                mems: "1".into(),
                from: "annotation cnfbox.io/numa-node".into(),
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
        apply(&mut spec, tree.path(), &config, &[]).unwrap();
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
            apply(&mut spec, Path::new("/nonexistent"), &config, &[]).unwrap(),
            Outcome::default()
        );
    }

    fn with_cpu(cpus: Option<&str>, mems: Option<&str>, hint: Option<&str>) -> Spec {
        let mut doc =
            serde_json::json!({"ociVersion": "1.0.2", "linux": {"resources": {"cpu": {}}}});
        if let Some(c) = cpus {
            doc["linux"]["resources"]["cpu"]["cpus"] = c.into();
        }
        if let Some(m) = mems {
            doc["linux"]["resources"]["cpu"]["mems"] = m.into();
        }
        if let Some(h) = hint {
            doc["annotations"] = serde_json::json!({ ANNOTATION: h });
        }
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn kubelets_cpuset_decides_the_node_without_the_annotation() {
        let tree = fake(&["0-3", "4-7"], "0-7", "0-1");
        let config = tree.path().join("none.toml");
        // cpus alone on node 1: bound there, memory too.
        let mut spec = with_cpu(Some("6-7"), None, None);
        let out = apply(&mut spec, tree.path(), &config, &[]).unwrap();
        let rec = out.record.unwrap();
        assert_eq!((rec.node, rec.cpus.as_str()), (1, "6-7"));
        assert_eq!(rec.from, "linux.resources.cpu.cpus 6-7");
        let linux = spec.linux().as_ref().unwrap();
        let p = linux.memory_policy().as_ref().unwrap();
        assert_eq!(
            (p.mode(), p.nodes().as_deref()),
            (Mode::MpolBind, Some("1"))
        );
        // mems alone.
        let mut spec = with_cpu(None, Some("0"), None);
        let rec = apply(&mut spec, tree.path(), &config, &[])
            .unwrap()
            .record
            .unwrap();
        assert_eq!((rec.node, rec.cpus.as_str()), (0, "0-3"));
        // cpus across nodes: nothing bound, and why.
        let mut spec = with_cpu(Some("2-5"), None, None);
        let out = apply(&mut spec, tree.path(), &config, &[]).unwrap();
        assert_eq!(out.record, None);
        assert_eq!(
            out.unbound.as_deref(),
            Some("linux.resources.cpu.cpus 2-5 spans nodes 0-1")
        );
        assert!(spec.linux().as_ref().unwrap().memory_policy().is_none());
        // The annotation against kubelet's cpuset: auto follows kubelet
        // and warns; strict refuses naming both; off follows the annotation.
        let mut spec = with_cpu(Some("0-1"), None, Some("1"));
        let out = apply(&mut spec, tree.path(), &config, &[]).unwrap();
        assert_eq!(out.record.unwrap().node, 0);
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
        let strict = tree.path().join("strict.toml");
        fs::write(&strict, "[numa]\nalign = \"strict\"\n").unwrap();
        let mut spec = with_cpu(Some("0-1"), None, Some("1"));
        let err = apply(&mut spec, tree.path(), &strict, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux.resources.cpu.cpus 0-1 (node 0)")
                && err.contains("annotation cnfbox.io/numa-node (node 1)"),
            "{err}"
        );
        let off = tree.path().join("off.toml");
        fs::write(&off, "[numa]\nalign = \"off\"\n").unwrap();
        let mut spec = with_cpu(Some("6-7"), None, None);
        assert_eq!(
            apply(&mut spec, tree.path(), &off, &[]).unwrap(),
            Outcome::default()
        );
        let bad = tree.path().join("bad.toml");
        fs::write(&bad, "[numa]\nalign = \"sometimes\"\n").unwrap();
        let mut spec = with_cpu(Some("6-7"), None, None);
        let err = apply(&mut spec, tree.path(), &bad, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("align") || err.contains("sometimes"), "{err}");
    }

    #[test]
    fn no_cpu_left_names_the_spec_cpus_and_the_reserved_set() {
        let t = Topology {
            nodes: std::collections::BTreeMap::from([(0, set("0-1"))]),
            with_memory: set("0"),
        };
        let e = place(&t, "0", Some("5"), None, &BTreeSet::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "no CPU left on node 0 (from annotation cnfbox.io/numa-node): linux.resources.cpu.cpus \"5\" names none of the node's CPUs 0-1 (reserved none)"
        );
        let e = place(&t, "0", None, None, &set("0-1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("[numa] reserved_cpus 0-1 takes all of the node's CPUs 0-1"),
            "{e}"
        );
    }
}
