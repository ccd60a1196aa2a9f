//! The placement: the node a CNF's container follows, turned into its
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

use super::{derive, inputs};

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
mod tests;
