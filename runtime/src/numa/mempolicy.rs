//! `linux.memoryPolicy` and the kernel: which modes and flags it accepts,
//! for `features` (each probe in a thread of its own so no policy stays
//! behind), and the policy of an exec'd process. libcontainer applies the
//! policy in the container's init (set_mempolicy(2) before exec; children
//! inherit it), but a process `cnfbox exec` starts descends from cnfbox,
//! not from the init: cnfbox sets the policy on itself before it forks.

use oci_spec::runtime::{LinuxMemoryPolicy, MemoryPolicyFlagType, MemoryPolicyModeType};

/// Errors setting a memory policy.
#[derive(Debug, thiserror::Error)]
pub enum MempolicyError {
    #[error("linux.memoryPolicy.nodes {nodes:?}: {reason}")]
    Nodes { nodes: String, reason: String },
    #[error("set_mempolicy({mode}, nodes {nodes:?}) for the exec'd process")]
    Set {
        mode: String,
        nodes: String,
        #[source]
        source: std::io::Error,
    },
}

const MODES: [(&str, i32, bool); 7] = [
    ("MPOL_DEFAULT", 0, false),
    ("MPOL_PREFERRED", 1, true),
    ("MPOL_BIND", 2, true),
    ("MPOL_INTERLEAVE", 3, true),
    ("MPOL_LOCAL", 4, false),
    ("MPOL_PREFERRED_MANY", 5, true),
    ("MPOL_WEIGHTED_INTERLEAVE", 6, true),
];

const FLAGS: [(&str, i32); 3] = [
    ("MPOL_F_NUMA_BALANCING", 1 << 13),
    ("MPOL_F_RELATIVE_NODES", 1 << 14),
    ("MPOL_F_STATIC_NODES", 1 << 15),
];

/// MPOL_BIND, the mode flags are tried with.
const BIND: i32 = 2;

/// set_mempolicy(2) of the calling thread: `mode` (flags or'ed in) over
/// `nodes` (none: a null mask).
fn set_mempolicy(mode: i32, nodes: &[u32]) -> std::io::Result<()> {
    let bits = u64::BITS;
    let words = nodes.iter().max().map_or(1, |n| (n / bits + 1) as usize);
    let mut mask = vec![0u64; words];
    for n in nodes {
        mask[(n / bits) as usize] |= 1 << (n % bits);
    }
    let (ptr, maxnode) = if nodes.is_empty() {
        (std::ptr::null(), 0)
    } else {
        (mask.as_ptr(), (mask.len() as u64 * u64::from(bits)) + 1)
    };
    // SAFETY: set_mempolicy reads `maxnode - 1` bits from `ptr`, which
    // points at `mask` (alive for the call) sized to hold them, or is null
    // with maxnode 0; it changes only the calling thread's policy.
    let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, maxnode) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// set_mempolicy(mode, {node}) in a new thread; true if the kernel took it.
fn accepted(mode: i32, node: Option<u32>) -> bool {
    std::thread::spawn(move || set_mempolicy(mode, &node.into_iter().collect::<Vec<_>>()).is_ok())
        .join()
        .unwrap_or(false)
}

/// Sets `policy` on the calling thread (the `cnfbox exec` process, whose
/// children inherit it), as libcontainer sets it in the init.
pub fn set(policy: &LinuxMemoryPolicy) -> Result<(), MempolicyError> {
    let mode = match policy.mode() {
        MemoryPolicyModeType::MpolDefault => 0,
        MemoryPolicyModeType::MpolPreferred => 1,
        MemoryPolicyModeType::MpolBind => 2,
        MemoryPolicyModeType::MpolInterleave => 3,
        MemoryPolicyModeType::MpolLocal => 4,
        MemoryPolicyModeType::MpolPreferredMany => 5,
        MemoryPolicyModeType::MpolWeightedInterleave => 6,
    };
    let flags = policy
        .flags()
        .iter()
        .flatten()
        .map(|f| match f {
            MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
            MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
            MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
        })
        .fold(0, |a, f| a | f);
    let raw = policy.nodes().clone().unwrap_or_default();
    let nodes: Vec<u32> = crate::numa::parse_list("linux.memoryPolicy.nodes", &raw)
        .map_err(|e| MempolicyError::Nodes {
            nodes: raw.clone(),
            reason: e.to_string(),
        })?
        .into_iter()
        .collect();
    set_mempolicy(mode | flags, &nodes).map_err(|source| MempolicyError::Set {
        mode: policy.mode().to_string(),
        nodes: raw,
        source,
    })
}

/// The modes and flags the kernel accepts with `node` (a node with memory).
pub fn probe(node: u32) -> (Vec<&'static str>, Vec<&'static str>) {
    let modes = MODES
        .iter()
        .filter(|(_, mode, nodes)| accepted(*mode, nodes.then_some(node)))
        .map(|(name, ..)| *name)
        .collect();
    let flags = FLAGS
        .iter()
        .filter(|(_, flag)| accepted(BIND | flag, Some(node)))
        .map(|(name, _)| *name)
        .collect();
    (modes, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_takes_bind_and_default_but_not_garbage() {
        let (modes, flags) = probe(0);
        assert!(modes.contains(&"MPOL_BIND"), "{modes:?}");
        assert!(modes.contains(&"MPOL_DEFAULT"), "{modes:?}");
        assert!(flags.contains(&"MPOL_F_STATIC_NODES"), "{flags:?}");
        // An unknown mode and a node far beyond any machine are refused.
        assert!(!accepted(77, Some(0)));
        assert!(!accepted(BIND, Some(4000)));
    }

    #[test]
    fn set_binds_the_calling_thread() {
        let mut p = LinuxMemoryPolicy::default();
        p.set_mode(MemoryPolicyModeType::MpolBind);
        p.set_nodes(Some("0".into()));
        let got = std::thread::spawn(move || {
            set(&p).unwrap();
            // get_mempolicy(2) of this thread: its mode.
            let mut mode: i32 = -1;
            // SAFETY: only `mode` is written; no nodemask is asked for.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_get_mempolicy,
                    &mut mode as *mut i32,
                    std::ptr::null_mut::<u64>(),
                    0u64,
                    std::ptr::null_mut::<libc::c_void>(),
                    0u64,
                )
            };
            (rc, mode)
        })
        .join()
        .unwrap();
        assert_eq!(got, (0, BIND));
        let mut bad = LinuxMemoryPolicy::default();
        bad.set_mode(MemoryPolicyModeType::MpolBind);
        bad.set_nodes(Some("4000".into()));
        let err = std::thread::spawn(move || set(&bad).unwrap_err().to_string())
            .join()
            .unwrap();
        assert!(
            err.contains("set_mempolicy(MPOL_BIND, nodes \"4000\")"),
            "{err}"
        );
    }
}
