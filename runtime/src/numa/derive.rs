//! Which node a container follows when the inputs that name one disagree,
//! or when none is the `cnfbox.io/numa-node` annotation (`[numa] align`).
//!
//! Telecom nodes run kubelet's static CPU Manager (exclusive CPUs in
//! `linux.resources.cpu.cpus`), its Memory Manager (`cpu.mems`) and the
//! Topology Manager; device plugins hand out VFs and VFIO groups with a
//! topology hint. Each of these, and the annotation, is an [`Input`]
//! naming the nodes it lies on. The decision is pure (no sysfs here; see
//! `inputs` for where the nodes come from):
//!
//! - `off`: only the annotation pins, as before `align` existed.
//! - `auto` (the default): what kubelet decided wins, in the order mems,
//!   cpus, then the annotation, then the devices; every input that names
//!   another node is a warning. CPUs (or mems) across nodes are kubelet's
//!   decision too: no binding, and `inspect` says why.
//! - `strict`: every input must name the same single node; two that do
//!   not are refused with one line naming both and their nodes.

use std::collections::BTreeSet;

use super::{format_list, NumaError};

/// `[numa] align`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    #[default]
    Auto,
    Strict,
    Off,
}

impl std::fmt::Display for Align {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Align::Auto => "auto",
            Align::Strict => "strict",
            Align::Off => "off",
        })
    }
}

/// Which kind of input, in the order `auto` follows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// `linux.resources.cpu.mems` (kubelet's Memory Manager).
    Mems,
    /// `linux.resources.cpu.cpus` (kubelet's CPU Manager).
    Cpus,
    /// `cnfbox.io/numa-node`.
    Annotation,
    /// A VF, VFIO group or device node the pod is given.
    Device,
}

/// One input and the nodes it lies on (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// What it is, as the spec says it: `linux.resources.cpu.cpus 2-3`,
    /// `interface fh0: 0000:3b:02.1`.
    pub what: String,
    pub rank: Rank,
    pub nodes: BTreeSet<u32>,
}

impl Input {
    fn node(&self) -> Option<u32> {
        match self.nodes.len() {
            1 => self.nodes.first().copied(),
            _ => None,
        }
    }

    fn on(&self) -> String {
        match self.node() {
            Some(n) => format!("{} (node {n})", self.what),
            None => format!("{} (nodes {})", self.what, format_list(&self.nodes)),
        }
    }
}

/// What the inputs decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing names a node.
    None,
    /// Placement follows `node`, as `from` says; `warnings` name the
    /// inputs that said otherwise (`auto`).
    Bound {
        node: u32,
        from: String,
        warnings: Vec<String>,
    },
    /// No binding, for the reason given.
    Unbound { why: String, warnings: Vec<String> },
}

/// Decides from `inputs` (any order) under `align`.
pub fn decide(inputs: &[Input], align: Align) -> Result<Decision, NumaError> {
    let mut inputs: Vec<&Input> = inputs
        .iter()
        .filter(|i| !i.nodes.is_empty())
        .filter(|i| align != Align::Off || i.rank == Rank::Annotation)
        .collect();
    inputs.sort_by_key(|i| i.rank);
    let Some(top) = inputs.first() else {
        return Ok(Decision::None);
    };
    if align == Align::Strict {
        for other in &inputs[1..] {
            if top.node().is_none() || other.nodes != top.nodes {
                return Err(NumaError::Disagree {
                    first: top.on(),
                    second: other.on(),
                });
            }
        }
    }
    let Some(node) = top.node() else {
        let warnings = inputs[1..]
            .iter()
            .map(|o| format!("{} ignored: {} spans nodes", o.on(), top.what))
            .collect();
        return Ok(Decision::Unbound {
            why: format!("{} spans nodes {}", top.what, format_list(&top.nodes)),
            warnings,
        });
    };
    let warnings = inputs[1..]
        .iter()
        .filter(|o| o.nodes != top.nodes)
        .map(|o| format!("{} ignored: following {} on node {node}", o.on(), top.what))
        .collect();
    Ok(Decision::Bound {
        node,
        from: top.what.clone(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(rank: Rank, what: &str, nodes: &[u32]) -> Input {
        Input {
            what: what.to_string(),
            rank,
            nodes: nodes.iter().copied().collect(),
        }
    }

    fn bound(d: Decision) -> (u32, String, Vec<String>) {
        match d {
            Decision::Bound {
                node,
                from,
                warnings,
            } => (node, from, warnings),
            other => panic!("not bound: {other:?}"),
        }
    }

    #[test]
    fn one_input_decides_alone_under_auto_and_strict() {
        for align in [Align::Auto, Align::Strict] {
            let cpus = input(Rank::Cpus, "linux.resources.cpu.cpus 2-3", &[1]);
            let (node, from, warnings) = bound(decide(&[cpus], align).unwrap());
            assert_eq!((node, from.as_str()), (1, "linux.resources.cpu.cpus 2-3"));
            assert!(warnings.is_empty());
        }
        assert_eq!(decide(&[], Align::Auto).unwrap(), Decision::None);
    }

    #[test]
    fn off_follows_the_annotation_only() {
        let cpus = input(Rank::Cpus, "linux.resources.cpu.cpus 2-3", &[1]);
        assert_eq!(
            decide(std::slice::from_ref(&cpus), Align::Off).unwrap(),
            Decision::None
        );
        let ann = input(Rank::Annotation, "annotation cnfbox.io/numa-node 0", &[0]);
        let (node, _, warnings) = bound(decide(&[cpus, ann], Align::Off).unwrap());
        assert_eq!(node, 0);
        assert!(warnings.is_empty(), "off does not look at kubelet's inputs");
    }

    #[test]
    fn auto_follows_kubelet_and_warns() {
        let cpus = input(Rank::Cpus, "linux.resources.cpu.cpus 0-1", &[0]);
        let vf = input(Rank::Device, "interface fh0: 0000:3b:02.1", &[1]);
        let ann = input(Rank::Annotation, "annotation cnfbox.io/numa-node 1", &[1]);
        let (node, from, warnings) =
            bound(decide(&[vf.clone(), ann.clone(), cpus.clone()], Align::Auto).unwrap());
        assert_eq!(node, 0);
        assert_eq!(from, "linux.resources.cpu.cpus 0-1");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("annotation cnfbox.io/numa-node 1 (node 1) ignored"));
        assert!(warnings[1].contains("interface fh0: 0000:3b:02.1 (node 1)"));
        // mems comes before cpus.
        let mems = input(Rank::Mems, "linux.resources.cpu.mems 1", &[1]);
        let (node, from, _) = bound(decide(&[cpus, mems], Align::Auto).unwrap());
        assert_eq!((node, from.as_str()), (1, "linux.resources.cpu.mems 1"));
        // The annotation comes before the devices.
        let (node, _, _) = bound(decide(&[vf, ann], Align::Auto).unwrap());
        assert_eq!(node, 1);
    }

    #[test]
    fn cpus_across_nodes_bind_nothing_and_say_why() {
        let cpus = input(Rank::Cpus, "linux.resources.cpu.cpus 0-3", &[0, 1]);
        let vf = input(Rank::Device, "interface fh0: 0000:3b:02.1", &[1]);
        match decide(&[cpus.clone(), vf.clone()], Align::Auto).unwrap() {
            Decision::Unbound { why, warnings } => {
                assert_eq!(why, "linux.resources.cpu.cpus 0-3 spans nodes 0-1");
                assert_eq!(warnings.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        let err = decide(&[cpus, vf], Align::Strict).unwrap_err().to_string();
        assert!(
            err.contains("linux.resources.cpu.cpus 0-3 (nodes 0-1)")
                && err.contains("interface fh0: 0000:3b:02.1 (node 1)"),
            "{err}"
        );
    }

    #[test]
    fn strict_refuses_two_nodes_naming_both() {
        let cpus = input(Rank::Cpus, "linux.resources.cpu.cpus 0-1", &[0]);
        let vf = input(Rank::Device, "interface fh0: 0000:3b:02.1", &[1]);
        let err = decide(&[vf.clone(), cpus.clone()], Align::Strict)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "[numa] align = \"strict\": linux.resources.cpu.cpus 0-1 (node 0) and interface fh0: 0000:3b:02.1 (node 1) disagree"
        );
        let same = input(Rank::Device, "interface fh1: 0000:3b:02.2", &[0]);
        let (node, _, warnings) = bound(decide(&[cpus, same], Align::Strict).unwrap());
        assert_eq!(node, 0);
        assert!(warnings.is_empty());
    }
}
