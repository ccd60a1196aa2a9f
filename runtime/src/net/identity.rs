//! Telling a moved device from one pod root put in its place.
//!
//! Pod root (NET_ADMIN in the pod's network namespace) can delete a device
//! handed to the pod and make one of its own with the same name, index
//! and MAC address; given back at delete, the host would get pod root's
//! device (a tap it still drives, say) under the host device's name and
//! addresses. So a moved device's identity is recorded (`Attachment::identity`)
//! from what pod root cannot choose: its kind (hardware has none, and no
//! one makes hardware from inside a namespace), its permanent address and
//! bus device, and for a virtual device the device it links to outside
//! the pod (a veth's peer, a macvlan's lower device) with that device's
//! namespace as the pod's namespace numbers it (an id pod root cannot
//! reassign, for a namespace it does not own).

use super::netlink::{Identity, Link};
use super::request::Kind;
use super::{Attachment, NetError};

/// Refuses to move a device that could not be told apart from one pod
/// root makes when it comes back: pod root cannot make hardware (no kind),
/// nor a device linked to one in another namespace it does not own (a
/// veth whose peer stays on the host, a macvlan on a host trunk). A
/// virtual device linked to nothing outside (a dummy, a bridge, a veth
/// whose peer goes into the pod too) could be replaced by an identical one.
pub fn check_verifiable(attachments: &[Attachment], host_links: &[Link]) -> Result<(), NetError> {
    let is_move = |a: &Attachment| matches!(a.request.kind, Kind::Move { .. });
    let moved: Vec<u32> = attachments
        .iter()
        .zip(host_links)
        .filter(|(a, _)| is_move(a))
        .map(|(_, l)| l.index)
        .collect();
    for (a, l) in attachments.iter().zip(host_links) {
        let id = &l.identity;
        if !is_move(a) || id.kind.is_none() {
            continue;
        }
        let outside = match (id.link, id.link_netnsid) {
            (Some(_), Some(_)) => true,
            (Some(peer), None) => !moved.contains(&peer),
            (None, _) => false,
        };
        if !outside {
            return Err(NetError::Unverifiable {
                origin: a.request.origin.clone(),
                device: l.name.clone(),
                identity: Box::new(id.clone()),
            });
        }
    }
    Ok(())
}

/// Whether `now`, found at a moved device's place in the pod, is the device
/// recorded as `then`. `after_move`: `then` was read in the pod right after
/// the move (else only on the host, by a create that died before it
/// finished: nothing of the pod ran yet). A record without an identity
/// (written by an older cnfbox) matches hardware only.
pub fn same_device(then: Option<&Identity>, now: &Identity, after_move: bool) -> bool {
    let Some(then) = then else {
        return now.kind.is_none();
    };
    let kept = |a: &Option<String>, b: &Option<String>| a.is_none() || a == b;
    then.kind == now.kind
        && kept(&then.perm_address, &now.perm_address)
        && kept(&then.parent_dev, &now.parent_dev)
        && (!after_move || (then.link == now.link && then.link_netnsid == now.link_netnsid))
        // Nothing else tells a virtual device from one pod root made.
        && (then.kind.is_none() || (now.link.is_some() && now.link_netnsid.is_some()))
}

#[cfg(test)]
mod tests {
    use super::super::request::parse_annotation;
    use super::*;

    fn veth_in_pod() -> Identity {
        Identity {
            kind: Some("veth".into()),
            link: Some(7),
            link_netnsid: Some(0),
            ..Identity::default()
        }
    }

    fn vf() -> Identity {
        Identity {
            perm_address: Some("3c:fd:fe:00:00:01".into()),
            parent_dev: Some("pci/0000:3b:02.1".into()),
            ..Identity::default()
        }
    }

    #[test]
    fn the_moved_device_matches() {
        assert!(same_device(Some(&veth_in_pod()), &veth_in_pod(), true));
        assert!(same_device(Some(&vf()), &vf(), true));
        // Recorded on the host only (a create that died midway): the link's
        // namespace id is not known yet.
        let before = Identity {
            link: None,
            link_netnsid: None,
            ..veth_in_pod()
        };
        assert!(same_device(Some(&before), &veth_in_pod(), false));
        // A record of an older cnfbox: hardware only.
        assert!(same_device(None, &vf(), true));
        assert!(!same_device(None, &veth_in_pod(), true));
    }

    #[test]
    fn impostors_do_not_match() {
        let veth = veth_in_pod();
        for (what, now) in [
            (
                "another kind",
                Identity {
                    kind: Some("tun".into()),
                    ..Identity::default()
                },
            ),
            (
                "a veth whose peer is in the pod",
                Identity {
                    link_netnsid: None,
                    ..veth_in_pod()
                },
            ),
            (
                "a veth with another peer",
                Identity {
                    link: Some(8),
                    ..veth_in_pod()
                },
            ),
            (
                "a veth into another namespace",
                Identity {
                    link_netnsid: Some(1),
                    ..veth_in_pod()
                },
            ),
            ("hardware", Identity::default()),
        ] {
            assert!(!same_device(Some(&veth), &now, true), "{what}");
        }
        // Pod root can set a MAC address but not the permanent one, nor
        // make a device without a kind.
        for (what, now) in [
            (
                "another NIC",
                Identity {
                    perm_address: Some("3c:fd:fe:00:00:02".into()),
                    ..vf()
                },
            ),
            (
                "another bus device",
                Identity {
                    parent_dev: Some("pci/0000:3b:02.2".into()),
                    ..vf()
                },
            ),
            (
                "a tap",
                Identity {
                    kind: Some("tun".into()),
                    ..vf()
                },
            ),
        ] {
            assert!(!same_device(Some(&vf()), &now, true), "{what}");
        }
        // A crash record of a virtual device still wants a link outside.
        let before = Identity {
            link: None,
            link_netnsid: None,
            ..veth_in_pod()
        };
        let inside = Identity {
            link_netnsid: None,
            ..veth_in_pod()
        };
        assert!(!same_device(Some(&before), &inside, false));
    }

    fn link(index: u32, identity: Identity) -> Link {
        Link {
            index,
            name: format!("if{index}"),
            up: false,
            loopback: false,
            mac: Vec::new(),
            mtu: 0,
            identity,
        }
    }

    fn moves(n: usize) -> Vec<Attachment> {
        let value: Vec<String> = (0..n).map(|i| format!("n{i}=move:if{i}")).collect();
        parse_annotation(&value.join(","))
            .unwrap()
            .into_iter()
            .map(|request| Attachment {
                request,
                host_addrs: Vec::new(),
                host_up: false,
                pod_index: None,
                identity: None,
            })
            .collect()
    }

    #[test]
    fn only_verifiable_devices_are_moved() {
        let veth_to = |peer| Identity {
            kind: Some("veth".into()),
            link: Some(peer),
            ..Identity::default()
        };
        // Hardware, and a veth whose peer stays on the host.
        check_verifiable(&moves(2), &[link(3, vf()), link(4, veth_to(9))]).unwrap();
        // Both ends of one pair: nothing outside to tell them by.
        let err = check_verifiable(&moves(2), &[link(3, veth_to(4)), link(4, veth_to(3))])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("if3") && err.contains("cannot be moved"),
            "{err}"
        );
        // A bridge links to nothing.
        let bridge = Identity {
            kind: Some("bridge".into()),
            ..Identity::default()
        };
        let err = check_verifiable(&moves(1), &[link(3, bridge)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kind bridge") && err.contains("n0=move:if0"),
            "{err}"
        );
    }
}
