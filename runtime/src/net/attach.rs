//! Doing and undoing a pod's attachments.

use std::collections::HashMap;
use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

use netlink_packet_route::link::MacVlanMode;

use super::identity::{check_verifiable, same_device};
use super::netlink::{Child, Link, Netlink};
use super::request::{Kind, MacvlanMode, Request};
use super::{Attachment, NetError, NsId, PodNetwork};

/// Serialises attachment checks and changes of all pods under one state
/// root, so two creates cannot both take one device. Private to root: a
/// host user who could open it could flock(2) it and hang every create
/// that attaches interfaces.
const LOCK: &str = ".network.lock";

/// Refuses to lock in a state root another user could plant the lock
/// file in (not ours, or writable by group or others).
fn check_lock_dir(root: &Path) -> Result<(), NetError> {
    let m = fs::metadata(root).map_err(|source| NetError::Lock {
        path: root.to_path_buf(),
        source,
    })?;
    let euid = nix::unistd::geteuid().as_raw();
    match crate::host::owner::unsafe_reason(&m, euid) {
        None => Ok(()),
        Some(reason) => Err(NetError::LockUnsafe {
            path: root.to_path_buf(),
            reason,
        }),
    }
}

fn lock(root: &Path) -> Result<nix::fcntl::Flock<fs::File>, NetError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    check_lock_dir(root)?;
    let path = root.join(LOCK);
    let err = |source| NetError::Lock {
        path: path.clone(),
        source,
    };
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(err)?;
    let m = file.metadata().map_err(err)?;
    let euid = nix::unistd::geteuid().as_raw();
    if !m.is_file() || m.uid() != euid {
        return Err(NetError::LockUnsafe {
            path: path.clone(),
            reason: format!("not a regular file owned by uid {euid}"),
        });
    }
    // One an older cnfbox made 0644.
    if m.mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| err(e.into()))
}

fn open_ns(path: &Path) -> Result<fs::File, NetError> {
    fs::File::open(path).map_err(|source| NetError::OpenNetns {
        path: path.to_path_buf(),
        source,
    })
}

fn socket_in(file: &fs::File, label: &Path) -> Result<Netlink, NetError> {
    Netlink::in_netns(file.as_fd()).map_err(|source| NetError::Socket {
        netns: label.display().to_string(),
        source,
    })
}

/// Host devices the `claims` of other pods hold: device -> (pod, moved?).
fn in_use(claims: &[(String, PodNetwork)]) -> HashMap<String, (String, bool)> {
    let mut used = HashMap::new();
    for (pod, net) in claims {
        for a in &net.attachments {
            let moved = matches!(a.request.kind, Kind::Move { .. });
            let slot = used
                .entry(a.request.kind.host_device().to_string())
                .or_insert((pod.clone(), moved));
            slot.1 |= moved;
        }
    }
    used
}

/// Drops the pins of a pod's network record, its relays first.
pub fn unpin_all(net: &PodNetwork) {
    if let Some(relay) = &net.relay_pin {
        crate::host::unpin(relay);
    }
    crate::host::unpin(&net.pod_pin);
    crate::host::unpin(&net.host_pin);
}

/// The host-side link `device` that `origin` asks for; it must exist.
fn host_device(host: &mut Netlink, origin: &str, device: &str) -> Result<Link, NetError> {
    host.link(device)
        .map_err(NetError::netlink(origin, "look up host device", device))?
        .ok_or_else(|| NetError::NoDevice {
            origin: origin.to_string(),
            device: device.to_string(),
        })
}

fn macvlan_mode(m: MacvlanMode) -> MacVlanMode {
    match m {
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
    }
}

/// Checks `requests` against the host and the pod's network namespace
/// (the container's init is `pid`) and what the other pods of `root`
/// hold (`claimed`, read under the lock), pins both namespaces, calls `record`
/// with what is about to be done (so a crash midway can be cleaned up by
/// `delete --force`), then does it. On any failure what was done is undone
/// and the pins dropped.
pub fn attach(
    root: &Path,
    paths: &crate::views::Paths,
    id: &str,
    pid: i32,
    requests: &[Request],
    claimed: impl FnOnce() -> Vec<(String, PodNetwork)>,
    record: impl FnOnce(&PodNetwork) -> anyhow::Result<()>,
) -> anyhow::Result<PodNetwork> {
    let _guard = lock(root)?;
    let host_path = crate::host::ns::own("net");
    let pod_path = crate::host::ns::of_pid(pid, "net");
    let host_ns = open_ns(&host_path)?;
    let pod_ns = open_ns(&pod_path)?;
    let mut host = socket_in(&host_ns, &host_path)?;
    let mut pod = socket_in(&pod_ns, &pod_path)?;
    let used = in_use(&claimed());
    let mut attachments = Vec::new();
    let mut host_links = Vec::new();
    for r in requests {
        let dev = r.kind.host_device();
        if let Some((other, moved)) = used.get(dev) {
            if *moved || matches!(r.kind, Kind::Move { .. }) {
                return Err(NetError::InUse {
                    origin: r.origin.clone(),
                    device: dev.to_string(),
                    pod: other.clone(),
                }
                .into());
            }
        }
        let link = host_device(&mut host, &r.origin, dev)?;
        if pod
            .link(&r.name)
            .map_err(NetError::netlink(
                &r.origin,
                "look up pod interface",
                &r.name,
            ))?
            .is_some()
        {
            return Err(NetError::NameClash {
                origin: r.origin.clone(),
                name: r.name.clone(),
            }
            .into());
        }
        let (host_addrs, host_up) = match r.kind {
            Kind::Move { .. } => (
                host.addresses(link.index).map_err(NetError::netlink(
                    &r.origin,
                    "read addresses of",
                    dev,
                ))?,
                link.up,
            ),
            _ => (Vec::new(), false),
        };
        let identity = match r.kind {
            Kind::Move { .. } => Some(link.identity.clone()),
            _ => None,
        };
        host_links.push(link);
        attachments.push(Attachment {
            request: r.clone(),
            host_addrs,
            host_up,
            pod_index: None,
            identity,
        });
    }
    check_verifiable(&attachments, &host_links)?;
    // Before the move only what is the same on both sides is kept; the
    // link's namespace id is what the pod's namespace calls it, read there.
    for a in &mut attachments {
        if let Some(id) = &mut a.identity {
            id.link = None;
            id.link_netnsid = None;
        }
    }
    let host_id = NsId::of(&host_ns).map_err(|source| NetError::OpenNetns {
        path: host_path.clone(),
        source,
    })?;
    let relayed = attachments.iter().any(|a| relayed(&a.request.kind));
    let mut net = PodNetwork {
        host_netns: host_id,
        host_pin: paths.host_pin.clone(),
        pod_pin: paths.pod_pin.clone(),
        relay_pin: relayed.then(|| paths.relay_pin.clone()),
        attachments,
    };
    // Recorded before anything is pinned or changed: a crash from here on
    // leaves a record `delete --force` acts on (missing pins and interfaces
    // never attached are skipped there).
    record(&net)?;
    crate::host::pin(&host_path, &net.host_pin).map_err(NetError::Pin)?;
    if let Err(e) = crate::host::pin(&pod_path, &net.pod_pin).map_err(NetError::Pin) {
        crate::host::unpin(&net.host_pin);
        return Err(e.into());
    }
    let mut relay = match &net.relay_pin {
        Some(path) => {
            match super::relay::create(path).and_then(|ns| Ok((socket_in(&ns, path)?, ns))) {
                Ok(r) => Some(r),
                Err(e) => {
                    unpin_all(&net);
                    return Err(e.into());
                }
            }
        }
        None => None,
    };
    for i in 0..net.attachments.len() {
        let a = &net.attachments[i];
        let ends = relay.as_mut().map(|(nl, ns)| (nl, &*ns));
        let applied = apply_one(&mut host, &mut pod, &pod_ns, ends, i, a).and_then(|()| {
            pod.link(&a.request.name).map_err(NetError::netlink(
                &a.request.origin,
                "look up pod interface",
                &a.request.name,
            ))
        });
        if let Ok(Some(link)) = &applied {
            let a = &mut net.attachments[i];
            a.pod_index = Some(link.index);
            if a.identity.is_some() {
                a.identity = Some(link.identity.clone());
            }
            continue;
        }
        let a = &net.attachments[i];
        let e = match applied {
            Err(e) => e,
            _ => NetError::NoDevice {
                origin: a.request.origin.clone(),
                device: a.request.name.clone(),
            },
        };
        tracing::warn!(%id, interface = %a.request.name, err = %e, "attachment failed; undoing");
        // The failed one too: a move whose address restore failed is in
        // the pod (found by name, which was checked free before).
        let done = PodNetwork {
            attachments: net.attachments[..=i].to_vec(),
            ..net.clone()
        };
        if let Err(undo) = give_back(&done, &mut host, &mut pod, &host_ns) {
            tracing::warn!(%id, err = %undo, "undo attachments after a failed one");
        }
        if let Some(path) = &net.relay_pin {
            super::relay::clear(id, path);
        }
        unpin_all(&net);
        return Err(e.into());
    }
    tracing::info!(%id, count = net.attachments.len(), "pod interfaces attached");
    Ok(net)
}

/// Whether an attachment of `kind` goes through the pod's relay namespace
/// (`relay`): every child on a shared parent. A moved device and a
/// passthru macvlan (the parent itself, which the policy must grant as
/// `passthru = true`) are the pod's whole.
fn relayed(kind: &Kind) -> bool {
    match kind {
        Kind::Move { .. } => false,
        Kind::Macvlan { mode, .. } => *mode != MacvlanMode::Passthru,
        Kind::Vlan { .. } => true,
    }
}

fn apply_one(
    host: &mut Netlink,
    pod: &mut Netlink,
    pod_ns: &fs::File,
    relay: Option<(&mut Netlink, &fs::File)>,
    i: usize,
    a: &Attachment,
) -> Result<(), NetError> {
    let r = &a.request;
    let dev = r.kind.host_device();
    let link = host_device(host, &r.origin, dev)?;
    match &r.kind {
        Kind::Move { .. } => {
            host.move_to(link.index, pod_ns.as_fd(), &r.name)
                .map_err(NetError::netlink(
                    &r.origin,
                    "move into the pod's network namespace: host device",
                    dev,
                ))?;
            let inside = pod
                .link(&r.name)
                .map_err(NetError::netlink(
                    &r.origin,
                    "look up pod interface",
                    &r.name,
                ))?
                .ok_or_else(|| NetError::NoDevice {
                    origin: r.origin.clone(),
                    device: r.name.clone(),
                })?;
            restore(pod, inside.index, a, &r.name)
        }
        Kind::Macvlan {
            mode: MacvlanMode::Passthru,
            ..
        } => host
            .add_child(
                &r.name,
                link.index,
                Child::Macvlan(macvlan_mode(MacvlanMode::Passthru)),
                pod_ns.as_fd(),
            )
            .map_err(NetError::netlink(&r.origin, "create macvlan child of", dev)),
        Kind::Macvlan { mode, .. } => {
            let (relay, relay_ns) = relay.expect("a relay namespace for every child");
            let child = Child::Macvlan(macvlan_mode(*mode));
            super::relay::wire(host, relay, relay_ns, pod_ns, i, &link, child, r)
        }
        Kind::Vlan { id, .. } => {
            let (relay, relay_ns) = relay.expect("a relay namespace for every child");
            super::relay::wire(host, relay, relay_ns, pod_ns, i, &link, Child::Vlan(*id), r)
        }
    }
}

/// Puts a moved device's addresses and up state back where it now is.
fn restore(nl: &mut Netlink, index: u32, a: &Attachment, name: &str) -> Result<(), NetError> {
    let origin = &a.request.origin;
    for addr in &a.host_addrs {
        match nl.add_address(index, *addr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(NetError::netlink(origin, "add address to", name)(e)),
        }
    }
    if a.host_up {
        nl.set_up(index, true)
            .map_err(NetError::netlink(origin, "bring up", name))?;
    }
    Ok(())
}

/// Undoes `net`'s attachments, last first: moved devices go back to the
/// host namespace under their original names with their addresses,
/// created ones are deleted. An interface no longer in the pod (never
/// attached, or already given back) is skipped, so this can be repeated.
fn give_back(
    net: &PodNetwork,
    host: &mut Netlink,
    pod: &mut Netlink,
    host_ns: &fs::File,
) -> Result<(), NetError> {
    let mut first = None;
    for a in net.attachments.iter().rev() {
        let r = &a.request;
        let result = (|| {
            // By index first: pod root may have renamed it. By name for a
            // record written before the attachment was made.
            let lookup = NetError::netlink(&r.origin, "look up pod interface", &r.name);
            let found = match a.pod_index {
                Some(i) => pod.link_at(i).map_err(lookup)?,
                None => pod.link(&r.name).map_err(lookup)?,
            };
            let Some(link) = found else {
                return Ok(());
            };
            match &r.kind {
                Kind::Move { host: name } => {
                    if !same_device(a.identity.as_ref(), &link.identity, a.pod_index.is_some()) {
                        // Pod root put a device of its own in its place:
                        // never the host's. It goes with the pod.
                        let deleted = pod.delete(link.index);
                        tracing::warn!(
                            interface = %link.name,
                            index = link.index,
                            found = %link.identity,
                            moved = %a.identity.as_ref().map_or("not recorded".to_string(), |i| i.to_string()),
                            host_device = %name,
                            deleted = deleted.is_ok(),
                            "not the device that was moved in: not given back to the host"
                        );
                        return Ok(());
                    }
                    // The kernel renames only after the move, and moves under
                    // the current name when that is free: a taken original
                    // name would leave the device on the host misnamed.
                    if host
                        .link(name)
                        .map_err(NetError::netlink(&r.origin, "look up host device", name))?
                        .is_some()
                    {
                        return Err(NetError::HostNameTaken {
                            origin: r.origin.clone(),
                            inside: r.name.clone(),
                            name: name.clone(),
                        });
                    }
                    pod.set_up(link.index, false).map_err(NetError::netlink(
                        &r.origin,
                        "bring down",
                        &r.name,
                    ))?;
                    pod.move_to(link.index, host_ns.as_fd(), name)
                        .map_err(NetError::netlink(
                            &r.origin,
                            "return to the host under its name",
                            name,
                        ))?;
                    let back = host_device(host, &r.origin, name)?;
                    restore(host, back.index, a, name)
                }
                Kind::Macvlan { .. } | Kind::Vlan { .. } => pod.delete(link.index).map_err(
                    NetError::netlink(&r.origin, "delete pod interface", &r.name),
                ),
            }
        })();
        if let Err(e) = result {
            tracing::warn!(interface = %r.name, err = %e, "give back pod interface");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Gives a deleted sandbox's interfaces back (see `give_back`) and drops
/// the namespace pins. On failure the pins stay, so a later delete can
/// retry; `delete --force` drops them anyway.
pub fn detach(pod: &str, net: &PodNetwork) -> Result<(), NetError> {
    let pod_ns = match fs::File::open(&net.pod_pin) {
        Ok(f) => f,
        Err(e) => {
            // Nothing pins the pod's namespace any more (a reboot, or a
            // forced delete already ran): the kernel has put its devices
            // back itself.
            tracing::warn!(%pod, pin = %net.pod_pin.display(), err = %e, "pod network namespace pin gone");
            unpin_all(net);
            return Ok(());
        }
    };
    let host_ns = match fs::File::open(&net.host_pin) {
        Ok(f) if NsId::of(&f).ok() == Some(net.host_netns) => f,
        _ => {
            let here = open_ns(Path::new("/proc/self/ns/net"))?;
            let current = NsId::of(&here).map_err(|source| NetError::OpenNetns {
                path: "/proc/self/ns/net".into(),
                source,
            })?;
            if current != net.host_netns {
                return Err(NetError::HostNetnsGone {
                    pod: pod.to_string(),
                    recorded: net.host_netns,
                    current,
                    pin: net.host_pin.clone(),
                });
            }
            here
        }
    };
    let mut host = socket_in(&host_ns, &net.host_pin)?;
    let mut inside = socket_in(&pod_ns, &net.pod_pin)?;
    give_back(net, &mut host, &mut inside, &host_ns)?;
    if let Some(path) = &net.relay_pin {
        super::relay::clear(pod, path);
    }
    unpin_all(net);
    tracing::info!(%pod, count = net.attachments.len(), "pod interfaces given back");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(requests: &[(&str, Kind)]) -> PodNetwork {
        PodNetwork {
            host_netns: NsId { dev: 1, ino: 2 },
            host_pin: "/h".into(),
            pod_pin: "/p".into(),
            relay_pin: None,
            attachments: requests
                .iter()
                .map(|(name, kind)| Attachment {
                    request: Request {
                        name: name.to_string(),
                        kind: kind.clone(),
                        origin: "test".into(),
                    },
                    host_addrs: Vec::new(),
                    host_up: false,
                    pod_index: None,
                    identity: None,
                })
                .collect(),
        }
    }

    #[test]
    fn claims_name_the_pod_and_whether_a_device_moved() {
        let mac = Kind::Macvlan {
            parent: "eth1".into(),
            mode: MacvlanMode::Bridge,
        };
        let claims = vec![
            ("p1".to_string(), net(&[("a", mac.clone())])),
            (
                "p2".to_string(),
                net(&[("b", Kind::Move { host: "vf0".into() })]),
            ),
            ("p3".to_string(), net(&[("c", mac)])),
        ];
        let used = in_use(&claims);
        assert_eq!(used.get("vf0"), Some(&("p2".to_string(), true)));
        // A parent shared by macvlans of two pods: first claimant, not moved.
        assert_eq!(used.get("eth1"), Some(&("p1".to_string(), false)));
        assert!(!used.contains_key("eth2"));
    }
}
