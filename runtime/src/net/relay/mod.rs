//! The relay between a host parent and a pod's macvlan or VLAN interface.
//!
//! A macvlan or 8021q device in the pod's network namespace is the pod's to
//! change: with its namespaced NET_ADMIN pod root can switch a macvlan to
//! `source` mode and receive what the gateway sends to other pods, and a
//! promiscuous or all-multicast child raises its parent's counts on the
//! host (the kernel checks neither against the parent's namespace). So the
//! child never enters the pod. It lives in the pod's relay namespace, a
//! network namespace of the initial user namespace that cnfbox pins and no
//! pod can enter, and the pod holds one end of a veth pair whose other end
//! is there too:
//!
//! ```text
//! host: trunk0 ── relay netns: h0 (macvlan|vlan) ⇄ q0 (veth) ── pod: data0 (veth)
//! ```
//!
//! A classifier on the ingress of `h0` and of `q0` (`bpf`) passes every
//! untagged frame to the other and drops every 802.1Q/802.1ad tagged one,
//! both ways: a pod carries no VLAN it was not given, whichever
//! attachment it holds. From the pod, only frames with the pod's own
//! source address pass: it cannot speak as the gateway or another pod. The pod's end has the child's MAC address and MTU.
//! Whatever pod root does to its veth (modes, promiscuity, addresses)
//! stays in the pod; `h0` only ever receives what the parent hands a child
//! with its own address.

mod bpf;
mod tc;

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

pub use bpf::BpfError;

use super::netlink::{Child, Link, Netlink};
use super::request::Request;
use super::NetError;

/// The relay's ends for attachment `i`: the child of the host parent and
/// the veth peer of the pod's interface.
pub fn names(i: usize) -> (String, String) {
    (format!("h{i}"), format!("q{i}"))
}

/// Creates a network namespace for a pod's relays (from a short-lived
/// thread, so cnfbox itself never leaves its own), with IPv6 off so the
/// relay's devices send nothing of their own, and pins it at `pin`.
pub fn create(pin: &Path) -> Result<fs::File, NetError> {
    let err = |step: &'static str| {
        let pin = pin.to_path_buf();
        move |source: std::io::Error| NetError::RelayNs { pin, step, source }
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| err("unshare(CLONE_NEWNET)")(e.into()))?;
            for conf in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                match fs::OpenOptions::new().write(true).open(&path) {
                    Ok(mut f) => f
                        .write_all(b"1")
                        .map_err(err("write net.ipv6.conf.*.disable_ipv6"))?,
                    // A kernel without IPv6.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(err("open net.ipv6.conf.*.disable_ipv6")(e)),
                }
            }
            crate::host::pin(Path::new("/proc/thread-self/ns/net"), pin).map_err(NetError::Pin)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(err("create")(std::io::Error::other(
                "relay thread panicked",
            )))
        })
    })?;
    fs::File::open(pin).map_err(err("open"))
}

/// Makes the relay for request `r` (attachment `i`): `child` of the host
/// link `parent` in the relay namespace, the veth pair to the pod, the
/// classifiers, all up; the pod's end stays down for pod root to bring up.
#[allow(clippy::too_many_arguments)]
pub fn wire(
    host: &mut Netlink,
    relay: &mut Netlink,
    relay_ns: &fs::File,
    pod_ns: &fs::File,
    i: usize,
    parent: &Link,
    child: Child,
    r: &Request,
) -> Result<(), NetError> {
    let origin = &r.origin;
    let (h, q) = names(i);
    let step = match child {
        Child::Macvlan(_) => "create macvlan child of",
        Child::Vlan(_) => "create VLAN sub-interface (8021q) of",
    };
    host.add_child(&h, parent.index, child, relay_ns.as_fd())
        .map_err(NetError::netlink(origin, step, &parent.name))?;
    let h_link = relay_link(relay, origin, &h)?;
    let mtu = if h_link.mtu > 0 {
        h_link.mtu
    } else {
        parent.mtu
    };
    relay
        .add_veth(&q, &r.name, pod_ns.as_fd(), &h_link.mac, mtu)
        .map_err(NetError::netlink(
            origin,
            "create the pod's veth pair",
            &r.name,
        ))?;
    let q_link = relay_link(relay, origin, &q)?;
    // From the pod (q's ingress) only frames from the pod's own address
    // go out; from the trunk, whatever the child receives goes in.
    let pod_mac: Option<[u8; 6]> = h_link.mac.as_slice().try_into().ok();
    for (from, to, src) in [(&h_link, &q_link, None), (&q_link, &h_link, pod_mac)] {
        let prog = bpf::load(to.index, src).map_err(|source| NetError::Relay {
            origin: origin.clone(),
            source,
        })?;
        tc::add_ingress(relay, from.index).map_err(NetError::netlink(
            origin,
            "add the ingress qdisc to relay",
            &from.name,
        ))?;
        tc::add_bpf_filter(relay, from.index, prog.as_fd()).map_err(NetError::netlink(
            origin,
            "attach the relay classifier to",
            &from.name,
        ))?;
    }
    for l in [&h_link, &q_link] {
        relay.set_up(l.index, true).map_err(NetError::netlink(
            origin,
            "bring up relay",
            &l.name,
        ))?;
    }
    Ok(())
}

fn relay_link(relay: &mut Netlink, origin: &str, name: &str) -> Result<Link, NetError> {
    relay
        .link(name)
        .map_err(NetError::netlink(origin, "look up relay device", name))?
        .ok_or_else(|| NetError::NoDevice {
            origin: origin.to_string(),
            device: name.to_string(),
        })
}

/// Deletes every device in the relay namespace pinned at `pin` (the
/// children leave their parents at once, not when the kernel gets to the
/// namespace after its pin is dropped). A pin already gone is fine.
pub fn clear(pod: &str, pin: &Path) {
    let Ok(ns) = fs::File::open(pin) else {
        return;
    };
    let links = Netlink::in_netns(ns.as_fd()).and_then(|mut nl| {
        let links = nl.links()?;
        for l in links.iter().filter(|l| !l.loopback) {
            if let Err(err) = nl.delete(l.index) {
                // A veth end goes with its peer.
                if err.raw_os_error() != Some(libc::ENODEV) {
                    tracing::warn!(%pod, device = %l.name, %err, "delete relay device");
                }
            }
        }
        Ok(links.len())
    });
    if let Err(err) = links {
        tracing::warn!(%pod, pin = %pin.display(), %err, "clear relay namespace");
    }
}
