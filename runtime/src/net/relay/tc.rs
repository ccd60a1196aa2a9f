//! The two traffic-control messages the relay needs (tc-bpf(8)): an
//! `ingress` qdisc on a device, and a direct-action bpf filter on it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::net::netlink::Netlink;

/// `ETH_P_ALL`, in the byte order the filter's `tcm_info` wants.
const ALL_PROTOCOLS: u16 = (libc::ETH_P_ALL as u16).to_be();
/// The ingress qdisc's handle (`ffff:`), the parent of its filters.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

/// Adds the `ingress` qdisc to link `index`.
pub fn add_ingress(nl: &mut Netlink, index: u32) -> io::Result<()> {
    let mut msg = TcMessage::with_index(index as i32);
    msg.header.parent = TcHandle::INGRESS;
    msg.header.handle = INGRESS_HANDLE;
    msg.attributes
        .push(TcAttribute::Kind("ingress".to_string()));
    nl.exchange(
        RouteNetlinkMessage::NewQueueDiscipline(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )?;
    Ok(())
}

/// Attaches the loaded classifier `prog` to link `index`'s ingress, for
/// every protocol, in direct-action mode (its return value is the verdict).
pub fn add_bpf_filter(nl: &mut Netlink, index: u32, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut msg = TcMessage::with_index(index as i32);
    msg.header.parent = INGRESS_HANDLE;
    msg.header.info = (1u32 << 16) | u32::from(ALL_PROTOCOLS);
    msg.attributes.push(TcAttribute::Kind("bpf".to_string()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog.as_raw_fd() as u32)),
        TcOption::Bpf(TcFilterBpfOption::ProgName("cnfbox_relay".to_string())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    nl.exchange(
        RouteNetlinkMessage::NewTrafficFilter(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )?;
    Ok(())
}
