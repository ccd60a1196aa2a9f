//! Adopting a CRI sandbox's CNI network namespace.
//!
//! containerd's CRI creates a pod's network namespace itself, in the host
//! user namespace, runs the CNI plugins in it (veth `eth0`, addresses,
//! routes) and passes its path (`/var/run/netns/cni-...`) in the sandbox's
//! spec. cnfbox cannot let the pod join it: the pod's init is already in
//! the pod's user namespace when it would setns(2) (EPERM), and NET_ADMIN
//! in the pod's user namespace would not reach a host-owned namespace
//! anyway (see `profile::userns::check_netns_path`).
//!
//! So cnfbox adopts it: the sandbox gets a fresh network namespace owned by
//! the pod's user namespace (the path is dropped from the spec), and once
//! the init exists the CNI interfaces (all but `lo`) are moved into it.
//! Moving a link drops its addresses and routes and takes it down, so they
//! are read first and re-applied on the other side, and the links and `lo`
//! are brought up. Then the CNI namespace file shows the pod's namespace
//! (`show_pod_netns`), so containerd's port-forward and CNI's DEL, which
//! enter the path containerd recorded, reach the pod and its `eth0`; the
//! emptied CNI namespace goes away with its last reference. Only paths
//! directly under `/run/netns` or `/var/run/netns` are adopted: never
//! `/proc/*` (another process's namespace) nor cnfbox's own pins.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::route::{
    RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
};
use netlink_packet_route::AddressFamily;

use crate::net::netlink::{exists_ok, Netlink};

/// Directories whose namespace files CRI runtimes create for pods.
pub const NETNS_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];

/// Errors adopting a CNI network namespace.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("open network namespace {path}")]
    OpenNs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rtnetlink socket in network namespace {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink {op} in {path}")]
    Netlink {
        op: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unmount the CNI namespace file {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("bind the pod's network namespace {from} over the CNI namespace file {path}")]
    Bind {
        from: PathBuf,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("link {name} vanished from {path} after the move")]
    Vanished { name: String, path: PathBuf },
}

/// Whether a sandbox's network namespace `path` is a CRI runtime's
/// namespace file that cnfbox may adopt.
pub fn adoptable(path: &Path) -> bool {
    NETNS_DIRS
        .iter()
        .any(|d| path.parent() == Some(Path::new(d)) && path.file_name().is_some())
}

/// The namespace file at `path`, and an rtnetlink socket in it.
fn open(path: &Path) -> Result<(File, Netlink), AdoptError> {
    let ns = File::open(path).map_err(|source| AdoptError::OpenNs {
        path: path.to_owned(),
        source,
    })?;
    let nl = Netlink::in_netns(ns.as_fd()).map_err(|source| AdoptError::Socket {
        path: path.to_owned(),
        source,
    })?;
    Ok((ns, nl))
}

/// Maps a netlink failure of step `op` in the namespace at `path`.
fn step<'a>(op: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AdoptError + 'a {
    move |source| AdoptError::Netlink {
        op: op.to_owned(),
        path: path.to_owned(),
        source,
    }
}

/// What was configured on the moved links.
#[derive(Debug, Default)]
pub struct Moved {
    /// Interface names moved, in order.
    pub links: Vec<String>,
    pub addresses: usize,
    pub routes: usize,
}

/// Moves every link but loopback from the namespace at `from` into the
/// one at `to`, with their addresses and main-table routes, and brings
/// them (and `to`'s loopback) up.
pub fn move_links(from: &Path, to: &Path) -> Result<Moved, AdoptError> {
    let (_, mut src) = open(from)?;
    let (target, mut dst) = open(to)?;

    let links: HashMap<u32, String> = src
        .links()
        .map_err(step("dump links", from))?
        .into_iter()
        .filter(|l| !l.loopback)
        .map(|l| (l.index, l.name))
        .collect();
    let addrs: Vec<AddressMessage> = src
        .address_messages()
        .map_err(step("dump addresses", from))?
        .into_iter()
        .filter(|a| links.contains_key(&a.header.index))
        // IPv6 link-local addresses come back by themselves.
        .filter(|a| {
            !(a.header.family == AddressFamily::Inet6 && a.header.scope == AddressScope::Link)
        })
        .collect();
    let mut routes: Vec<RouteMessage> = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        routes.extend(src.routes(family).map_err(step("dump routes", from))?);
    }
    let oif = |r: &RouteMessage| {
        r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })
    };
    // Main table, on a moved link, not the kernel's own prefix routes.
    routes.retain(|r| {
        r.header.table == RouteHeader::RT_TABLE_MAIN
            && r.header.protocol != RouteProtocol::Kernel
            && oif(r).is_some_and(|i| links.contains_key(&i))
    });

    let mut moved = Moved::default();
    let mut order: Vec<(&u32, &String)> = links.iter().collect();
    order.sort();
    for (index, name) in &order {
        // Same name on the other side: the CNI result names it.
        exists_ok(src.move_to(**index, target.as_fd(), name))
            .map_err(step(&format!("move {name}"), from))?;
        moved.links.push((*name).clone());
    }

    let now: HashMap<String, u32> = dst
        .links()
        .map_err(step("dump links", to))?
        .into_iter()
        .map(|l| (l.name, l.index))
        .collect();
    let new_index = |old: u32| -> Result<u32, AdoptError> {
        let name = &links[&old];
        now.get(name).copied().ok_or_else(|| AdoptError::Vanished {
            name: name.clone(),
            path: to.to_owned(),
        })
    };
    if let Some(lo) = now.get("lo") {
        exists_ok(dst.set_up(*lo, true)).map_err(step("set lo up", to))?;
    }
    for (index, name) in &order {
        exists_ok(dst.set_up(new_index(**index)?, true))
            .map_err(step(&format!("set {name} up"), to))?;
    }
    for a in addrs {
        let mut add = AddressMessage::default();
        add.header = a.header.clone();
        add.header.index = new_index(a.header.index)?;
        if add.header.family == AddressFamily::Inet6 {
            add.header.flags |= AddressHeaderFlags::Nodad;
        }
        add.attributes = a
            .attributes
            .iter()
            .filter(|at| {
                matches!(
                    at,
                    AddressAttribute::Address(_)
                        | AddressAttribute::Local(_)
                        | AddressAttribute::Broadcast(_)
                        | AddressAttribute::Label(_)
                )
            })
            .cloned()
            .collect();
        exists_ok(dst.add_address_message(add)).map_err(step("add address", to))?;
        moved.addresses += 1;
    }
    // Routes without a gateway first: gateways must be reachable.
    let has_gateway = |r: &RouteMessage| {
        r.attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_)))
    };
    routes.sort_by_key(has_gateway);
    for r in routes {
        let mut add = RouteMessage::default();
        add.header = r.header.clone();
        // Dump-only flags (linkdown, offload, ...) are EINVAL on input.
        add.header.flags = RouteFlags::empty();
        add.attributes = Vec::new();
        for at in &r.attributes {
            match at {
                RouteAttribute::Oif(i) => add.attributes.push(RouteAttribute::Oif(new_index(*i)?)),
                RouteAttribute::Destination(_)
                | RouteAttribute::Gateway(_)
                | RouteAttribute::PrefSource(_)
                | RouteAttribute::Priority(_)
                | RouteAttribute::Table(_) => add.attributes.push(at.clone()),
                _ => {}
            }
        }
        exists_ok(dst.add_route(add)).map_err(step("add route", to))?;
        moved.routes += 1;
    }
    tracing::info!(
        from = %from.display(),
        to = %to.display(),
        links = ?moved.links,
        addresses = moved.addresses,
        routes = moved.routes,
        "adopted the CNI network namespace's interfaces"
    );
    Ok(moved)
}

/// Makes the CNI namespace file `path` show the pod's own network
/// namespace `pod_ns` (`/proc/PID/ns/net` of the sandbox's init) once its
/// links were moved there.
///
/// containerd keeps using the path it recorded: port-forward dials
/// `127.0.0.1:PORT` in it, and CNI's DEL at pod stop runs the plugins in
/// it. Left as it is, the path names the emptied CNI namespace, where no
/// pod process listens and no `eth0` is left to delete. The namespace
/// file is a bind mount of an nsfs inode; cnfbox replaces it with a bind
/// of the pod's namespace, so the emptied one goes away with its last
/// reference and containerd's own teardown (unmount, then remove the file)
/// works as before. On failure the original is bound back.
pub fn show_pod_netns(path: &Path, pod_ns: &Path) -> Result<(), AdoptError> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let bind = |from: &Path| {
        mount(
            Some(from),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    // Held so that it can be bound back if the new bind fails.
    let original = File::open(path).map_err(|source| AdoptError::OpenNs {
        path: path.to_owned(),
        source,
    })?;
    umount2(path, MntFlags::MNT_DETACH).map_err(|source| AdoptError::Unmount {
        path: path.to_owned(),
        source,
    })?;
    if let Err(source) = bind(pod_ns) {
        let again = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&original)
        ));
        if let Err(err) = bind(&again) {
            tracing::warn!(path = %path.display(), %err, "bind the CNI namespace back");
        }
        return Err(AdoptError::Bind {
            from: pod_ns.to_owned(),
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn only_runtime_netns_files_are_adoptable() {
        assert!(adoptable(Path::new("/var/run/netns/cni-1234")));
        assert!(adoptable(Path::new("/run/netns/cni-1234")));
        assert!(!adoptable(Path::new("/proc/42/ns/net")));
        assert!(!adoptable(Path::new("/run/netns")));
        assert!(!adoptable(Path::new("/run/netns/sub/x")));
        assert!(!adoptable(Path::new("/run/cnfbox-mnt/abc/ns/pod-net")));
    }

    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("spawn ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Named network namespaces, deleted on drop.
    struct Netns(Vec<String>);
    impl Drop for Netns {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", n]).status();
            }
        }
    }

    #[test]
    fn moves_a_cni_style_veth_with_addresses_and_routes() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIP moves_a_cni_style_veth_with_addresses_and_routes: needs root");
            return;
        }
        if Command::new("ip").arg("-V").output().is_err() {
            eprintln!("SKIP moves_a_cni_style_veth_with_addresses_and_routes: no ip(8)");
            return;
        }
        let pid = std::process::id();
        let (host, cni, pod) = (
            format!("cnfbox-adopt-h-{pid}"),
            format!("cnfbox-adopt-c-{pid}"),
            format!("cnfbox-adopt-p-{pid}"),
        );
        let _ns = Netns(vec![host.clone(), cni.clone(), pod.clone()]);
        for n in [&host, &cni, &pod] {
            ip(&["netns", "add", n]);
        }
        // What the bridge plugin leaves: eth0 in the CNI netns, its peer
        // on the "host" side, an address, a default route via the gateway.
        ip(&[
            "-n", &host, "link", "add", "veth-h", "type", "veth", "peer", "name", "eth0", "netns",
            &cni,
        ]);
        ip(&["-n", &cni, "link", "set", "lo", "up"]);
        ip(&["-n", &cni, "link", "set", "eth0", "up"]);
        ip(&["-n", &cni, "addr", "add", "10.213.7.2/24", "dev", "eth0"]);
        ip(&[
            "-n",
            &cni,
            "-6",
            "addr",
            "add",
            "fd00:213:7::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&["-n", &cni, "route", "add", "default", "via", "10.213.7.1"]);
        ip(&[
            "-n",
            &cni,
            "route",
            "add",
            "10.214.0.0/16",
            "via",
            "10.213.7.254",
        ]);

        let moved = move_links(
            &Path::new("/run/netns").join(&cni),
            &Path::new("/run/netns").join(&pod),
        )
        .expect("move links");
        assert_eq!(moved.links, vec!["eth0".to_string()]);
        assert_eq!(moved.addresses, 2, "{moved:?}");
        assert_eq!(moved.routes, 2, "{moved:?}");

        let links = ip(&["-n", &cni, "-o", "link"]);
        assert!(
            !links.contains("eth0"),
            "eth0 still in the CNI netns: {links}"
        );
        let addrs = ip(&["-n", &pod, "-o", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains("10.213.7.2/24"), "{addrs}");
        assert!(addrs.contains("fd00:213:7::2/64"), "{addrs}");
        let routes = ip(&["-n", &pod, "route"]);
        assert!(
            routes.contains("default via 10.213.7.1 dev eth0"),
            "{routes}"
        );
        assert!(
            routes.contains("10.214.0.0/16 via 10.213.7.254 dev eth0"),
            "{routes}"
        );
        let state = ip(&["-n", &pod, "-o", "link", "show", "dev", "eth0"]);
        assert!(state.contains(",UP"), "eth0 not up: {state}");
        let lo = ip(&["-n", &pod, "-o", "link", "show", "dev", "lo"]);
        assert!(lo.contains(",UP"), "lo not up: {lo}");
    }

    #[test]
    fn a_missing_namespace_names_the_path() {
        let err = move_links(
            Path::new("/run/netns/cnfbox-no-such-ns"),
            Path::new("/proc/self/ns/net"),
        )
        .expect_err("missing");
        assert!(
            err.to_string().contains("/run/netns/cnfbox-no-such-ns"),
            "{err}"
        );
    }
}
