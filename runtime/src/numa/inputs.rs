//! Where the inputs of `derive` come from: the spec's cpuset and the
//! annotation, and the sysfs `numa_node` of the devices the pod is given,
//! all under an injectable sysfs root.
//!
//! - `linux.resources.cpu.mems`: the nodes it names, when each exists and
//!   has memory.
//! - `linux.resources.cpu.cpus`: the nodes of its CPUs, when every CPU is
//!   online on some node (a CPU the host does not have decides nothing;
//!   the placement then says it has no CPU left).
//! - an interface moved in (`linux.netDevices`, `cnfbox.io/interfaces`
//!   `move`) or stacked on a host device (macvlan, VLAN): the host
//!   device's PCI function, `class/net/<dev>/device/numa_node`;
//! - a VFIO group (`linux.devices` `/dev/vfio/<group>`): the nodes of the
//!   group's devices, `kernel/iommu_groups/<group>/devices/*/numa_node`;
//! - any other `linux.devices` node whose device has one:
//!   `dev/{char,block}/<major>:<minor>/device/numa_node`.
//!
//! A device without a node (`-1`, no `numa_node` file, a virtual device)
//! names none.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceType, Spec};

use super::derive::{Input, Rank};
use super::{parse_list, NumaError, Topology};
use crate::net::request::Request;

/// The kubelet inputs of `spec` (mems, cpus) against `topo`.
pub fn kubelet(spec: &Spec, topo: &Topology) -> Result<Vec<Input>, NumaError> {
    let cpu = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref());
    let mut out = Vec::new();
    if let Some(mems) = cpu
        .and_then(|c| c.mems().as_deref())
        .filter(|m| !m.trim().is_empty())
    {
        let nodes = parse_list("linux.resources.cpu.mems", mems)?;
        if nodes.is_subset(&topo.with_memory) {
            out.push(Input {
                what: format!("linux.resources.cpu.mems {mems}"),
                rank: Rank::Mems,
                nodes,
            });
        }
    }
    if let Some(cpus) = cpu
        .and_then(|c| c.cpus().as_deref())
        .filter(|c| !c.trim().is_empty())
    {
        let wanted = parse_list("linux.resources.cpu.cpus", cpus)?;
        let node_of = |cpu: &u32| {
            topo.nodes
                .iter()
                .find(|(_, on)| on.contains(cpu))
                .map(|(n, _)| *n)
        };
        let nodes: Option<BTreeSet<u32>> = wanted.iter().map(node_of).collect();
        if let Some(nodes) = nodes.filter(|n| !n.is_empty()) {
            out.push(Input {
                what: format!("linux.resources.cpu.cpus {cpus}"),
                rank: Rank::Cpus,
                nodes,
            });
        }
    }
    Ok(out)
}

/// Whether `spec` or `interfaces` could name a node at all (so a plain
/// container reads no sysfs).
pub fn any(spec: &Spec, interfaces: &[Request]) -> bool {
    let linux = spec.linux().as_ref();
    let cpu = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref());
    let set = |v: Option<&String>| v.is_some_and(|s| !s.trim().is_empty());
    set(cpu.and_then(|c| c.cpus().as_ref()))
        || set(cpu.and_then(|c| c.mems().as_ref()))
        || !interfaces.is_empty()
        || linux
            .and_then(|l| l.devices().as_ref())
            .is_some_and(|d| !d.is_empty())
}

/// The device inputs: interfaces and `linux.devices`, under `sys`.
pub fn devices(spec: &Spec, interfaces: &[Request], sys: &Path) -> Vec<Input> {
    let mut out = Vec::new();
    for req in interfaces {
        let dev = sys
            .join("class/net")
            .join(req.kind.host_device())
            .join("device");
        if let Some((pci, node)) = device_node(&dev) {
            out.push(Input {
                what: format!("interface {}: {pci}", req.name),
                rank: Rank::Device,
                nodes: BTreeSet::from([node]),
            });
        }
    }
    let entries = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for d in entries {
        let path = d.path();
        if let Some(group) = vfio_group(path) {
            let dir = sys.join("kernel/iommu_groups").join(group).join("devices");
            let mut nodes = BTreeSet::new();
            let mut first = None;
            for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if let Some((pci, node)) = device_node(&e.path()) {
                    first.get_or_insert(pci);
                    nodes.insert(node);
                }
            }
            if let Some(pci) = first {
                out.push(Input {
                    what: format!("vfio group {group}: {pci}"),
                    rank: Rank::Device,
                    nodes,
                });
            }
            continue;
        }
        let class = match d.typ() {
            LinuxDeviceType::B => "block",
            LinuxDeviceType::C | LinuxDeviceType::U => "char",
            _ => continue,
        };
        let dev = sys
            .join("dev")
            .join(class)
            .join(format!("{}:{}", d.major(), d.minor()))
            .join("device");
        if let Some((name, node)) = device_node(&dev) {
            out.push(Input {
                what: format!("device {}: {name}", path.display()),
                rank: Rank::Device,
                nodes: BTreeSet::from([node]),
            });
        }
    }
    out
}

/// The group number of a `/dev/vfio/<group>` path.
fn vfio_group(path: &Path) -> Option<&str> {
    let group = path.strip_prefix("/dev/vfio").ok()?.to_str()?;
    (!group.is_empty() && group.bytes().all(|b| b.is_ascii_digit())).then_some(group)
}

/// The name (its PCI address, the link's last part) and node of the device
/// at `dev` (a sysfs device directory or a link to one), if it has a node.
fn device_node(dev: &Path) -> Option<(String, u32)> {
    let text = fs::read_to_string(dev.join("numa_node")).ok()?;
    let node: i64 = text.trim().parse().ok()?;
    let node = u32::try_from(node).ok()?;
    let target = fs::read_link(dev).unwrap_or_else(|_| dev.to_path_buf());
    let name = target.file_name()?.to_string_lossy().into_owned();
    Some((name, node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn topo() -> Topology {
        Topology {
            nodes: BTreeMap::from([(0, BTreeSet::from([0, 1])), (1, BTreeSet::from([2, 3]))]),
            with_memory: BTreeSet::from([0, 1]),
        }
    }

    fn spec(v: serde_json::Value) -> Spec {
        let mut doc = serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}});
        doc.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        serde_json::from_value(doc).unwrap()
    }

    /// A fake sysfs with a PCI function `pci` on `node` and `link`
    /// (relative to the root) pointing at it.
    fn pci(root: &Path, pci: &str, node: &str, link: &str) {
        let dev = root.join("devices/pci0000:00").join(pci);
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("numa_node"), format!("{node}\n")).unwrap();
        let link = root.join(link);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&dev, &link).unwrap();
    }

    #[test]
    fn cpus_and_mems_name_their_nodes() {
        let s = spec(
            serde_json::json!({"linux": {"resources": {"cpu": {"cpus": "2-3", "mems": "1"}}}}),
        );
        let got = kubelet(&s, &topo()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].what, "linux.resources.cpu.mems 1");
        assert_eq!(got[1].what, "linux.resources.cpu.cpus 2-3");
        assert_eq!(got[1].nodes, BTreeSet::from([1]));
        let s = spec(serde_json::json!({"linux": {"resources": {"cpu": {"cpus": "1-2"}}}}));
        assert_eq!(
            kubelet(&s, &topo()).unwrap()[0].nodes,
            BTreeSet::from([0, 1])
        );
        // A CPU or a node the host does not have decides nothing.
        let s = spec(
            serde_json::json!({"linux": {"resources": {"cpu": {"cpus": "3,63", "mems": "5"}}}}),
        );
        assert!(kubelet(&s, &topo()).unwrap().is_empty());
        let s = spec(serde_json::json!({"linux": {"resources": {"cpu": {"cpus": "1-x"}}}}));
        let err = kubelet(&s, &topo()).unwrap_err().to_string();
        assert!(
            err.contains("linux.resources.cpu.cpus") && err.contains("1-x"),
            "{err}"
        );
    }

    #[test]
    fn interfaces_vfio_groups_and_device_nodes_name_their_nodes() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        pci(root, "0000:3b:02.1", "1", "class/net/ens1f0v1/device");
        pci(root, "0000:3b:00.0", "-1", "class/net/ens2/device");
        pci(
            root,
            "0000:5e:00.0",
            "0",
            "kernel/iommu_groups/12/devices/0000:5e:00.0",
        );
        pci(root, "0000:af:00.0", "1", "dev/char/240:0/device");
        let interfaces: Vec<Request> = serde_json::from_value(serde_json::json!([
            {"name": "fh0", "kind": "move", "host": "ens1f0v1", "origin": "linux.netDevices.ens1f0v1"},
            {"name": "mv0", "kind": "macvlan", "parent": "ens2", "mode": "bridge", "origin": "x"},
            {"name": "lo1", "kind": "move", "host": "dummy0", "origin": "y"}
        ]))
        .unwrap();
        let s = spec(serde_json::json!({"linux": {"devices": [
            {"path": "/dev/vfio/12", "type": "c", "major": 241, "minor": 0},
            {"path": "/dev/accel0", "type": "c", "major": 240, "minor": 0},
            {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200}
        ]}}));
        let got = devices(&s, &interfaces, root);
        let seen: Vec<(String, BTreeSet<u32>)> =
            got.into_iter().map(|i| (i.what, i.nodes)).collect();
        assert_eq!(
            seen,
            vec![
                (
                    "interface fh0: 0000:3b:02.1".to_string(),
                    BTreeSet::from([1])
                ),
                (
                    "vfio group 12: 0000:5e:00.0".to_string(),
                    BTreeSet::from([0])
                ),
                (
                    "device /dev/accel0: 0000:af:00.0".to_string(),
                    BTreeSet::from([1])
                ),
            ]
        );
        assert!(any(&s, &[]));
        assert!(!any(&spec(serde_json::json!({})), &[]));
    }
}
