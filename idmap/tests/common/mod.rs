//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use idmap::{Allocator, IdRange, PodEntry, Pools, ID_BLOCK};

/// Pools of `slots` ranges of 65536 IDs from `start`, the same for uids and
/// gids.
pub fn pools(start: u32, slots: u32) -> Pools {
    let r = IdRange::new(start, slots * ID_BLOCK).expect("pool range");
    Pools::new(r, r, ID_BLOCK).expect("pools")
}

/// An allocator with its ledger in `dir`.
pub fn allocator(dir: &Path, slots: u32) -> Allocator {
    Allocator::new(dir, pools(1 << 20, slots)).expect("allocator")
}

/// Panics unless no two entries share a host uid or gid and none dips below
/// 65536. Brute force on purpose: independent of the B-tree index.
pub fn assert_disjoint(entries: &[PodEntry]) {
    for side in ["uid", "gid"] {
        let mut ranges: Vec<(u64, u64, &str)> = entries
            .iter()
            .map(|e| {
                let m = if side == "uid" {
                    e.mapping.uid
                } else {
                    e.mapping.gid
                };
                let r = m.host_range();
                (
                    u64::from(r.start()),
                    u64::from(r.start()) + u64::from(r.size()),
                    e.pod.as_str(),
                )
            })
            .collect();
        ranges.sort();
        for r in &ranges {
            assert!(r.0 >= 65_536, "{side} range of {} below 65536", r.2);
            assert!(
                r.1 <= u64::from(u32::MAX),
                "{side} range of {} past u32::MAX",
                r.2
            );
        }
        for w in ranges.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "{side} ranges of {} [{}, {}) and {} [{}, {}) overlap",
                w[0].2,
                w[0].0,
                w[0].1,
                w[1].2,
                w[1].0,
                w[1].1
            );
        }
    }
}
