//! The relay's classifier: a direct-action tc program (bpf(2),
//! `BPF_PROG_TYPE_SCHED_CLS`) that drops every 802.1Q/802.1ad tagged frame
//! and redirects every other one to the egress of one device.
//!
//! The tag is checked twice: `vlan_present` (the kernel moves a frame's
//! outer tag out of the packet before tc sees it) and the protocol field
//! (a tag the kernel left in the packet).

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

/// `BPF_PROG_LOAD` (uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_int = 5;
/// `BPF_PROG_TYPE_SCHED_CLS`.
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// Bytes of verifier log kept for the error message.
const LOG_SIZE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("assemble the relay classifier: {0}")]
    Assemble(String),
    #[error("bpf(BPF_PROG_LOAD) of the relay classifier: {source}{}", log_line(.log))]
    Load {
        log: String,
        #[source]
        source: std::io::Error,
    },
}

fn log_line(log: &str) -> String {
    let last = log.lines().rev().find(|l| !l.trim().is_empty());
    last.map(|l| format!(" (verifier: {l})"))
        .unwrap_or_default()
}

/// The classifier's source: `ifindex` is where every untagged frame goes;
/// with `src`, only frames from that MAC address do (the pod's side: a
/// pod cannot speak as the gateway or another pod on the trunk).
/// Offsets are `struct __sk_buff`'s: `protocol` at 16 (network byte order),
/// `vlan_present` at 20, `data` and `data_end` at 76 and 80. Returns
/// `TC_ACT_SHOT` (2) for a frame it drops, and `bpf_redirect(ifindex, 0)`
/// (helper 23: `TC_ACT_REDIRECT`, to egress) otherwise.
pub fn source(ifindex: u32, src: Option<[u8; 6]>) -> String {
    let dot1q = u16::to_be(libc::ETH_P_8021Q as u16);
    let dot1ad = u16::to_be(libc::ETH_P_8021AD as u16);
    let mut code = vec![
        "ldxw r2, [r1+20]".to_string(),
        "jne r2, 0, DROP".into(),
        "ldxw r2, [r1+16]".into(),
        format!("jeq r2, {dot1q}, DROP"),
        format!("jeq r2, {dot1ad}, DROP"),
    ];
    if let Some(mac) = src {
        // The Ethernet header must be there to be read (the verifier's
        // bounds check), then its source address, two bytes at a time
        // (16-bit immediates compare without sign extension).
        code.extend([
            "ldxw r2, [r1+76]".to_string(),
            "ldxw r3, [r1+80]".into(),
            "mov64 r4, r2".into(),
            "add64 r4, 14".into(),
            "jgt r4, r3, DROP".into(),
        ]);
        for (i, pair) in mac.chunks(2).enumerate() {
            let half = u16::from_ne_bytes([pair[0], pair[1]]);
            code.push(format!("ldxh r4, [r2+{}]", 6 + 2 * i));
            code.push(format!("jne r4, {half}, DROP"));
        }
    }
    code.extend([
        format!("mov64 r1, {ifindex}"),
        "mov64 r2, 0".into(),
        "call 23".into(),
        "exit".into(),
    ]);
    let drop = code.len();
    code.extend(["mov64 r0, 2".to_string(), "exit".into()]);
    code.iter()
        .enumerate()
        .map(|(i, line)| match line.contains("DROP") {
            true => line.replace("DROP", &format!("+{}", drop - i - 1)),
            false => line.clone(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads the classifier that redirects to `ifindex` (what comes from
/// `src`, when given).
pub fn load(ifindex: u32, src: Option<[u8; 6]>) -> Result<OwnedFd, BpfError> {
    let code = rbpf::assembler::assemble(&source(ifindex, src)).map_err(BpfError::Assemble)?;
    let license = CString::from(c"GPL");
    let mut log = vec![0u8; LOG_SIZE];
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"cnfbox_relay");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: (code.len() / 8) as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: LOG_SIZE as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
    };
    // SAFETY: `attr` is a valid BPF_PROG_LOAD attribute block whose
    // pointers (instructions, license, log) stay alive across the call; the
    // size passed is the block's own, which the kernel accepts (fields it
    // knows beyond it are taken as zero).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let source = std::io::Error::last_os_error();
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        return Err(BpfError::Load {
            log: String::from_utf8_lossy(&log[..end]).into_owned(),
            source,
        });
    }
    // SAFETY: bpf(2) returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_drops_tagged_frames_and_redirects_the_rest() {
        let code = rbpf::assembler::assemble(&source(7, None)).unwrap();
        assert_eq!(code.len(), 11 * 8);
        // Run it in rbpf's interpreter on a fake __sk_buff (its context is
        // plain memory) with the helper recording its arguments.
        fn run(code: &[u8], protocol: u16, vlan_present: u32) -> u64 {
            let mut ctx = [0u8; 32];
            ctx[16..20].copy_from_slice(&u32::from(u16::to_be(protocol)).to_ne_bytes());
            ctx[20..24].copy_from_slice(&vlan_present.to_ne_bytes());
            let mut vm = rbpf::EbpfVmRaw::new(Some(code)).unwrap();
            vm.register_helper(23, |ifindex, flags, _, _, _| {
                assert_eq!(flags, 0, "redirect to egress");
                1000 + ifindex
            })
            .unwrap();
            vm.execute_program(&mut ctx).unwrap()
        }
        assert_eq!(run(&code, 0x0800, 0), 1007, "IPv4 goes to ifindex 7");
        assert_eq!(run(&code, 0x0806, 0), 1007, "ARP goes to ifindex 7");
        assert_eq!(run(&code, 0x0800, 1), 2, "an outer tag the kernel took out");
        assert_eq!(run(&code, 0x8100, 0), 2, "an 802.1Q tag in the frame");
        assert_eq!(run(&code, 0x88a8, 0), 2, "an 802.1ad tag in the frame");
    }

    #[test]
    fn the_pod_side_program_checks_the_source_address_two_bytes_at_a_time() {
        let text = source(7, Some([0x02, 0x42, 0xac, 0x11, 0x00, 0xff]));
        let code = rbpf::assembler::assemble(&text).unwrap();
        assert_eq!(code.len(), 22 * 8, "{text}");
        // Every jump lands on the drop (`mov64 r0, 2`, instruction 20).
        for (i, line) in text.lines().enumerate() {
            if let Some(off) = line.rsplit_once(", +").map(|(_, o)| o) {
                assert_eq!(i + 1 + off.parse::<usize>().unwrap(), 20, "{line}");
            }
        }
        let halves: Vec<&str> = text.lines().filter(|l| l.starts_with("jne r4")).collect();
        assert_eq!(
            halves,
            [
                format!("jne r4, {}, +8", u16::from_ne_bytes([0x02, 0x42])),
                format!("jne r4, {}, +6", u16::from_ne_bytes([0xac, 0x11])),
                format!("jne r4, {}, +4", u16::from_ne_bytes([0x00, 0xff])),
            ]
        );
    }
}
