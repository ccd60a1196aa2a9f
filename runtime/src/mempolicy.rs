//! Which `linux.memoryPolicy` modes and flags this kernel accepts, for
//! `features`. libcontainer applies the policy in the container's init
//! (set_mempolicy(2) before exec; children inherit it); this only asks the
//! kernel, each probe in a thread of its own so no policy stays behind.

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

/// set_mempolicy(mode, {node}) in a new thread; true if the kernel took it.
fn accepted(mode: i32, node: Option<u32>) -> bool {
    std::thread::spawn(move || {
        let bits = u64::BITS;
        let mut mask = vec![0u64; node.map_or(1, |n| (n / bits + 1) as usize)];
        if let Some(n) = node {
            mask[(n / bits) as usize] |= 1 << (n % bits);
        }
        let (ptr, maxnode) = match node {
            Some(_) => (mask.as_ptr(), (mask.len() as u64 * u64::from(bits)) + 1),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: set_mempolicy reads `maxnode - 1` bits from `ptr`, which
        // points at `mask` (alive for the call) sized to hold them, or is
        // null with maxnode 0; it changes only this short-lived thread.
        let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, maxnode) };
        rc == 0
    })
    .join()
    .unwrap_or(false)
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
}
