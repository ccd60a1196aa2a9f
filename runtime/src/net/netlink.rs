//! A small synchronous rtnetlink client (rtnetlink(7)) on the
//! `netlink-packet-route` message types: the link, address and route
//! operations pod attachments (`net::attach`) and CNI namespace adoption
//! (`adopt`) need.
//!
//! A netlink socket acts on the network namespace it was created in, so a
//! client for another namespace is made by a short-lived thread that
//! setns(2)s into it, opens the socket and exits: the namespace switch
//! dies with the thread and the rest of cnfbox never leaves its own.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVeth, InfoVlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use serde::{Deserialize, Serialize};

/// A link as cnfbox needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    /// `IFLA_ADDRESS`: its MAC address (empty when it has none).
    pub mac: Vec<u8>,
    /// `IFLA_MTU`, 0 when the kernel did not say.
    pub mtu: u32,
    pub identity: Identity,
}

/// What a link is beyond its index, name and MAC address, all of which
/// root in the link's network namespace can give a device of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `IFLA_INFO_KIND` (`veth`, `macvlan`, `ifb`...); none for hardware,
    /// which no one can create from inside a network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `IFLA_PERM_ADDRESS`, the address the hardware came with (when not
    /// zero); changing the MAC address leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perm_address: Option<String>,
    /// `IFLA_PARENT_DEV_BUS_NAME`/`IFLA_PARENT_DEV_NAME`: the bus device
    /// behind it (`pci/0000:3b:02.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_dev: Option<String>,
    /// `IFLA_LINK`: the index of a veth's peer or a stacked device's lower
    /// device, when that is another device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the namespace that device is in, when another,
    /// as this link's namespace numbers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_netnsid: Option<i32>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kind {}", self.kind.as_deref().unwrap_or("hardware"))?;
        if let Some(a) = &self.perm_address {
            write!(f, ", permanent address {a}")?;
        }
        if let Some(p) = &self.parent_dev {
            write!(f, ", device {p}")?;
        }
        match (self.link, self.link_netnsid) {
            (Some(l), Some(n)) => write!(f, ", link {l} in netns id {n}"),
            (Some(l), None) => write!(f, ", link {l}"),
            _ => Ok(()),
        }
    }
}

/// An interface address (`ip addr`): what a moved device keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// A kind of child link cnfbox creates on a host parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Macvlan(MacVlanMode),
    Vlan(u16),
}

/// An rtnetlink socket bound in one network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket in cnfbox's own network namespace.
    pub fn here() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        Ok(Self { socket, seq: 0 })
    }

    /// A socket in the network namespace `netns` refers to.
    pub fn in_netns(netns: BorrowedFd<'_>) -> io::Result<Self> {
        let fd: OwnedFd = netns.try_clone_to_owned()?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                Self::here()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
        })
    }

    /// Sends `msg` and collects the replies until the kernel's ack, its
    /// NLMSG_DONE, or an error (the errno as an `io::Error`).
    pub(super) fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut out = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut rx[..], 0)?;
            let mut off = 0;
            while off < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                        NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }

    /// The link named `name`, `None` when there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg)
    }

    /// The link with index `index`, `None` when there is none.
    pub fn link_at(&mut self, index: u32) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg)
    }

    fn get_link(&mut self, msg: LinkMessage) -> io::Result<Option<Link>> {
        match self.exchange(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(&l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            |m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(&l)),
                _ => None,
            },
        )
    }

    /// Sends the dump request `query` and keeps the replies `pick` maps.
    fn dump<T>(
        &mut self,
        query: RouteNetlinkMessage,
        pick: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> io::Result<Vec<T>> {
        let replies = self.exchange(query, NLM_F_DUMP)?;
        Ok(replies.into_iter().filter_map(pick).collect())
    }

    /// Brings link `index` up or down.
    pub fn set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        self.exchange(RouteNetlinkMessage::SetLink(msg), 0)?;
        Ok(())
    }

    /// Moves link `index` into the namespace `netns`, named `name` there, in
    /// one message: the kernel renames while moving (rtnetlink do_setlink),
    /// so the device never holds its old name in the target namespace.
    pub fn move_to(&mut self, index: u32, netns: BorrowedFd<'_>, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.exchange(RouteNetlinkMessage::SetLink(msg), 0)?;
        Ok(())
    }

    /// Creates `name`, a child of this namespace's link `parent`, directly in
    /// the namespace `netns`: it never exists on the host side.
    pub fn add_child(
        &mut self,
        name: &str,
        parent: u32,
        child: Child,
        netns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Link(parent));
        msg.attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        let info = match child {
            Child::Macvlan(mode) => vec![
                LinkInfo::Kind(InfoKind::MacVlan),
                LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)])),
            ],
            Child::Vlan(id) => vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)])),
            ],
        };
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        self.exchange(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// Creates the veth pair `name` (here) and `peer` (in the namespace
    /// `peer_netns`), both with MTU `mtu`, the peer with MAC address `mac`.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
        mac: &[u8],
        mtu: u32,
    ) -> io::Result<()> {
        let mut other = LinkMessage::default();
        other
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        other
            .attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        other.attributes.push(LinkAttribute::Address(mac.to_vec()));
        other.attributes.push(LinkAttribute::Mtu(mtu));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(other))),
        ]));
        self.exchange(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// Deletes link `index`.
    pub fn delete(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.exchange(RouteNetlinkMessage::DelLink(msg), 0)?;
        Ok(())
    }

    /// The permanent, global addresses of link `index`: the ones an operator
    /// configured, as runc keeps them when it moves a device (dynamic and
    /// link-local ones belong to the namespace the device leaves).
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<Addr>> {
        let mut out = Vec::new();
        for a in self.address_messages()? {
            if a.header.index != index || a.header.scope != AddressScope::Universe {
                continue;
            }
            let permanent = a.attributes.iter().any(|at| match at {
                AddressAttribute::Flags(f) => f.contains(AddressFlags::Permanent),
                _ => false,
            }) || a.header.flags.contains(AddressHeaderFlags::Permanent);
            if !permanent {
                continue;
            }
            // IFA_LOCAL is the interface's own address on point-to-point
            // links; IFA_ADDRESS otherwise (rtnetlink(7)).
            let ip = a
                .attributes
                .iter()
                .find_map(|at| match at {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                })
                .or_else(|| {
                    a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                });
            if let Some(ip) = ip {
                out.push(Addr {
                    ip,
                    prefix: a.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    /// Adds `addr` to link `index`.
    pub fn add_address(&mut self, index: u32, addr: Addr) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = addr.prefix;
        msg.header.scope = AddressScope::Universe;
        msg.header.family = match addr.ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.attributes.push(AddressAttribute::Local(addr.ip));
        msg.attributes.push(AddressAttribute::Address(addr.ip));
        self.add_address_message(msg)
    }

    /// Every address in the namespace, as the kernel dumps them.
    pub fn address_messages(&mut self) -> io::Result<Vec<AddressMessage>> {
        self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            |m| match m {
                RouteNetlinkMessage::NewAddress(a) => Some(a),
                _ => None,
            },
        )
    }

    /// Adds the address `msg` describes (EEXIST when it is already there).
    pub fn add_address_message(&mut self, msg: AddressMessage) -> io::Result<()> {
        self.exchange(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Every route of address family `family`, in all tables.
    pub fn routes(&mut self, family: AddressFamily) -> io::Result<Vec<RouteMessage>> {
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        self.dump(RouteNetlinkMessage::GetRoute(query), |m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        })
    }

    /// Adds the route `msg` describes (EEXIST when it is already there).
    pub fn add_route(&mut self, msg: RouteMessage) -> io::Result<()> {
        self.exchange(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }
}

/// `result`, with the kernel's EEXIST ("already there") counted as success:
/// for changes whose goal state may already hold.
pub fn exists_ok(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

fn link_of(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        up: l.header.flags.contains(LinkFlags::Up),
        loopback: l.header.flags.contains(LinkFlags::Loopback),
        mac: Vec::new(),
        mtu: 0,
        identity: Identity::default(),
    };
    let id = &mut link.identity;
    let (mut bus, mut dev) = (None, None);
    for at in &l.attributes {
        match at {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) => link.mac = a.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                id.kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            LinkAttribute::PermAddress(a) if a.iter().any(|b| *b != 0) => {
                id.perm_address = Some(
                    a.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
            LinkAttribute::ParentDevBusName(b) => bus = Some(b.clone()),
            LinkAttribute::ParentDevName(d) => dev = Some(d.clone()),
            LinkAttribute::Link(i) if *i != l.header.index && *i != 0 => id.link = Some(*i),
            LinkAttribute::LinkNetNsId(n) if *n >= 0 => id.link_netnsid = Some(*n),
            _ => {}
        }
    }
    id.parent_dev = dev.map(|d| match bus {
        Some(b) => format!("{b}/{d}"),
        None => d,
    });
    link
}
