//! `cnfbox inspect POD_OR_CONTAINER`: what an operator auditing tenant
//! isolation needs: the pod's host ID range, its containers, their
//! capabilities, namespaces and id-mapped mounts.

use std::fs;
use std::io::Write as _;

use clap::Args;
use libcontainer::container::ContainerStatus;
use serde::Serialize;

use super::Ctx;
use crate::meta::{ContainerMeta, STAGED_BUNDLE};

/// `cnfbox inspect`
#[derive(Args, Debug)]
pub struct Inspect {
    /// A pod (sandbox) id or a container id
    pub id: String,
    /// Output format: text or json
    #[arg(long, default_value = "text")]
    pub format: String,
}

#[derive(Serialize)]
struct PodView {
    pod: String,
    /// The pod's host uids (`null`: the host user namespace).
    host_uids: Option<idmap::report::SideView>,
    /// The pod's host gids.
    host_gids: Option<idmap::report::SideView>,
    containers: Vec<ContainerView>,
    /// The pod's secondary interfaces and where they came from.
    interfaces: Vec<InterfaceView>,
}

#[derive(Serialize)]
struct InterfaceView {
    /// Its name inside the pod.
    name: String,
    /// `move`, `macvlan` or `vlan`.
    kind: &'static str,
    /// The host device it was, or its parent.
    host_device: String,
    /// What exactly: `move:vf3`, `macvlan:trunk0:bridge`, `vlan:trunk0:100`.
    attachment: String,
    /// The request: `linux.netDevices.vf3` or the annotation entry.
    origin: String,
    /// A moved device's host addresses, given back with it.
    host_addresses: Vec<String>,
}

fn interfaces(found: &[(String, ContainerMeta, std::path::PathBuf)]) -> Vec<InterfaceView> {
    use crate::net::Kind;
    found
        .iter()
        .filter_map(|f| f.1.network.as_ref())
        .flat_map(|n| &n.attachments)
        .map(|a| InterfaceView {
            name: a.request.name.clone(),
            kind: match a.request.kind {
                Kind::Move { .. } => "move",
                Kind::Macvlan { .. } => "macvlan",
                Kind::Vlan { .. } => "vlan",
            },
            host_device: a.request.kind.host_device().to_string(),
            attachment: a.request.kind.to_string(),
            origin: a.request.origin.clone(),
            host_addresses: a.host_addrs.iter().map(|x| x.to_string()).collect(),
        })
        .collect()
}

#[derive(Serialize)]
struct ContainerView {
    id: String,
    sandbox: bool,
    status: String,
    pid: Option<i32>,
    /// When it was created (ISO-8601, UTC).
    created: Option<String>,
    capabilities: Vec<String>,
    namespaces: std::collections::BTreeMap<String, String>,
    idmapped_mounts: Vec<String>,
    /// The container's volumes: the bundle's source, where the container
    /// sees it, and the id-mapped view that is mounted there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<VolumeView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    numa: Option<NumaView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hugepages: Vec<HugepageView>,
    /// Device nodes cnfbox made for `linux.devices`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    devices: Vec<DeviceView>,
}

#[derive(Serialize)]
struct VolumeView {
    source: String,
    destination: String,
    view: String,
}

/// The container's volumes: each view's destination in the staged spec
/// (whose mount source is the view, or a path below it for a subPath),
/// and the user bundle's source for that destination.
fn volumes(spec: Option<&oci_spec::runtime::Spec>, meta: &ContainerMeta) -> Vec<VolumeView> {
    let user = oci_spec::runtime::Spec::load(meta.bundle.join("config.json")).ok();
    let mounts = |s: Option<&oci_spec::runtime::Spec>| {
        s.and_then(|s| s.mounts().clone()).unwrap_or_default()
    };
    let (staged, user) = (mounts(spec), mounts(user.as_ref()));
    meta.volume_views
        .iter()
        .map(|v| {
            let dest = staged
                .iter()
                .find(|m| m.source().as_ref().is_some_and(|s| s.starts_with(v)))
                .map(|m| m.destination().clone());
            let source = dest
                .as_ref()
                .and_then(|d| user.iter().find(|m| m.destination() == d))
                .and_then(|m| m.source().clone());
            let show = |p: Option<std::path::PathBuf>| {
                p.map_or_else(|| "-".to_string(), |p| p.display().to_string())
            };
            VolumeView {
                source: show(source),
                destination: show(dest),
                view: v.display().to_string(),
            }
        })
        .collect()
}

/// Bytes with a binary unit (`4 MiB`, `1.5 GiB`, `512 B`).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[derive(Serialize)]
struct DeviceView {
    /// Where the container sees it.
    path: String,
    /// `c 10:232`.
    device: String,
    /// The node on the host.
    host_path: String,
    /// Its host owner and mode as they are now (as made, if it is gone).
    host_uid: u32,
    host_gid: u32,
    mode: String,
}

fn devices(meta: &ContainerMeta) -> Vec<DeviceView> {
    meta.devices
        .iter()
        .flat_map(|d| &d.nodes)
        .map(|n| {
            let (uid, gid, mode) =
                crate::devices::host_owner(n).unwrap_or((n.host_uid, n.host_gid, n.mode));
            DeviceView {
                path: n.path.display().to_string(),
                device: n.device(),
                host_path: n.host_path.display().to_string(),
                host_uid: uid,
                host_gid: gid,
                mode: format!("{mode:04o}"),
            }
        })
        .collect()
}

#[derive(Serialize)]
struct NumaView {
    /// The node placement follows (`numa`).
    node: Option<u32>,
    /// Where the node came from: the annotation, kubelet's cpuset, a device.
    from: Option<String>,
    /// Why no node is bound although inputs named nodes.
    unbound: Option<String>,
    cpus: Option<String>,
    mems: Option<String>,
    memory_policy: Option<String>,
}

#[derive(Serialize)]
struct HugepageView {
    page_size: String,
    limit: u64,
    /// Bytes faulted in (`hugetlb.<size>.current`), where cnfbox enforces.
    usage: Option<u64>,
    /// Bytes reserved (`hugetlb.<size>.rsvd.current`).
    reserved: Option<u64>,
}

fn status_name(s: ContainerStatus) -> String {
    s.to_string().to_lowercase()
}

fn staged_spec(dir: &std::path::Path) -> Option<oci_spec::runtime::Spec> {
    oci_spec::runtime::Spec::load(dir.join(STAGED_BUNDLE).join("config.json")).ok()
}

/// NUMA placement: the hint's record, else the spec's cpuset and policy.
fn numa(spec: Option<&oci_spec::runtime::Spec>, meta: &ContainerMeta) -> Option<NumaView> {
    let linux = spec.and_then(|s| s.linux().as_ref());
    let cpu = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref());
    let policy = linux.and_then(|l| l.memory_policy().as_ref()).map(|p| {
        match p.nodes().as_deref().filter(|n| !n.is_empty()) {
            Some(nodes) => format!("{} {nodes}", p.mode()),
            None => p.mode().to_string(),
        }
    });
    let view = NumaView {
        node: meta.numa.as_ref().map(|r| r.node),
        from: meta
            .numa
            .as_ref()
            .map(|r| r.from.clone())
            .filter(|f| !f.is_empty()),
        unbound: meta.numa_unbound.clone(),
        cpus: cpu.and_then(|c| c.cpus().clone()),
        mems: cpu.and_then(|c| c.mems().clone()),
        memory_policy: policy,
    };
    (view.node.is_some()
        || view.cpus.is_some()
        || view.mems.is_some()
        || view.memory_policy.is_some())
    .then_some(view)
}

/// Effective capabilities from the container's staged spec.
fn capabilities(spec: Option<&oci_spec::runtime::Spec>) -> Vec<String> {
    let Some(spec) = spec else {
        return Vec::new();
    };
    let mut caps: Vec<String> = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.effective().as_ref())
        .map(|s| s.iter().map(|c| format!("CAP_{c}")).collect())
        .unwrap_or_default();
    caps.sort();
    caps
}

fn view(dir: &std::path::Path, id: &str, meta: &ContainerMeta) -> ContainerView {
    let container = crate::state_lock::load_with(dir, meta.init_start).ok();
    let status = container.as_ref().map(|c| c.status());
    let pid = container
        .as_ref()
        .filter(|_| status != Some(ContainerStatus::Stopped))
        .and_then(|c| c.pid())
        .map(|p| p.as_raw());
    let mut namespaces = std::collections::BTreeMap::new();
    if let Some(pid) = pid {
        for ns in ["user", "net", "pid", "mnt", "ipc", "uts", "cgroup"] {
            if let Ok(target) = fs::read_link(crate::host::ns::of_pid(pid, ns)) {
                let host = fs::read_link(crate::host::ns::own(ns)).ok();
                let shared = if host.as_ref() == Some(&target) {
                    " (host)"
                } else {
                    ""
                };
                namespaces.insert(ns.to_string(), format!("{}{shared}", target.display()));
            }
        }
    }
    let mut mounts: Vec<String> = meta
        .rootfs_view
        .iter()
        .map(|v| format!("rootfs {} -> {}", meta.rootfs.display(), v.display()))
        .collect();
    mounts.extend(
        meta.hugepages
            .iter()
            .flat_map(|h| &h.mounts)
            .map(|m| format!("hugetlbfs {} (owned by pod root)", m.display())),
    );
    let spec = staged_spec(dir);
    let hugepages = meta
        .hugepages
        .iter()
        .flat_map(|h| h.usage())
        .map(|(page_size, limit, usage, reserved)| HugepageView {
            page_size,
            limit,
            usage,
            reserved,
        })
        .collect();
    let created = container
        .as_ref()
        .and_then(|c| c.state.created)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    ContainerView {
        id: id.to_string(),
        sandbox: meta.sandbox,
        status: status.map(status_name).unwrap_or_else(|| "unknown".into()),
        pid,
        created,
        capabilities: capabilities(spec.as_ref()),
        namespaces,
        idmapped_mounts: mounts,
        volumes: volumes(spec.as_ref(), meta),
        numa: numa(spec.as_ref(), meta),
        hugepages,
        devices: devices(meta),
    }
}

pub fn inspect(ctx: &Ctx, a: &Inspect) -> anyhow::Result<()> {
    super::check_id(&a.id)?;
    let all = crate::journal::records(&ctx.root);
    // A container id names its pod: show the whole pod.
    let pod_name = all
        .iter()
        .find(|r| r.id == a.id || r.record.pod.as_deref() == Some(a.id.as_str()))
        .and_then(|r| r.record.pod.clone());
    let mut found: Vec<(String, ContainerMeta, std::path::PathBuf)> = all
        .into_iter()
        .filter(|r| r.id == a.id || (pod_name.is_some() && r.record.pod == pod_name))
        .map(|r| {
            let dir = ctx.root.join(&r.id);
            (r.id, r.record, dir)
        })
        .collect();
    if found.is_empty() {
        anyhow::bail!("no pod or container {:?} in {}", a.id, ctx.root.display());
    }
    found.sort_by(|x, y| (!x.1.sandbox, &x.0).cmp(&(!y.1.sandbox, &y.0)));
    let mapping = found.iter().find_map(|f| f.1.mapping);
    let side = |s: &Option<idmap::report::SideView>| {
        s.as_ref().map_or_else(
            || "host user namespace".to_string(),
            |s| format!("{} -> [{}, {})", s.container_id, s.host_start, s.host_end),
        )
    };
    let pod = PodView {
        pod: pod_name.unwrap_or_else(|| a.id.clone()),
        host_uids: mapping.map(|m| m.uid.into()),
        host_gids: mapping.map(|m| m.gid.into()),
        containers: found
            .iter()
            .map(|(id, meta, dir)| view(dir, id, meta))
            .collect(),
        interfaces: interfaces(&found),
    };
    let mut out = std::io::stdout().lock();
    match a.format.as_str() {
        "json" => writeln!(out, "{}", serde_json::to_string_pretty(&pod)?)?,
        "text" => {
            writeln!(out, "pod {}", pod.pod)?;
            writeln!(out, "  host uids {}", side(&pod.host_uids))?;
            writeln!(out, "  host gids {}", side(&pod.host_gids))?;
            for i in &pod.interfaces {
                writeln!(
                    out,
                    "  interface {} <- {} ({})",
                    i.name, i.attachment, i.origin
                )?;
            }
            for c in &pod.containers {
                let role = if c.sandbox { "sandbox" } else { "container" };
                writeln!(
                    out,
                    "  {role} {} ({}, pid {}, created {})",
                    c.id,
                    c.status,
                    c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    c.created.as_deref().unwrap_or("-")
                )?;
                writeln!(out, "    capabilities: {}", c.capabilities.join(","))?;
                for (k, v) in &c.namespaces {
                    writeln!(out, "    ns {k}: {v}")?;
                }
                for m in &c.idmapped_mounts {
                    writeln!(out, "    idmapped {m}")?;
                }
                for v in &c.volumes {
                    writeln!(
                        out,
                        "    volume {} -> {} (id-mapped view {})",
                        v.source, v.destination, v.view
                    )?;
                }
                if let Some(n) = &c.numa {
                    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                    let node = match (n.node, &n.from, &n.unbound) {
                        (Some(node), Some(from), _) => format!("{node} (from {from})"),
                        (Some(node), None, _) => node.to_string(),
                        (None, _, Some(why)) => format!("- ({why})"),
                        (None, _, None) => "-".into(),
                    };
                    writeln!(
                        out,
                        "    numa node {node} cpus {} mems {} policy {}",
                        opt(&n.cpus),
                        opt(&n.mems),
                        opt(&n.memory_policy)
                    )?;
                }
                for h in &c.hugepages {
                    let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), bytes);
                    writeln!(
                        out,
                        "    hugepages {} limit {} usage {} reserved {}",
                        h.page_size,
                        bytes(h.limit),
                        opt(h.usage),
                        opt(h.reserved)
                    )?;
                }
                for d in &c.devices {
                    writeln!(
                        out,
                        "    device {} {} mode {} host owner {}:{} ({})",
                        d.path, d.device, d.mode, d.host_uid, d.host_gid, d.host_path
                    )?;
                }
            }
        }
        other => anyhow::bail!("--format {other:?}: expected text or json"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn sizes_carry_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(4 << 20), "4 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(1 << 30), "1 GiB");
    }
}
