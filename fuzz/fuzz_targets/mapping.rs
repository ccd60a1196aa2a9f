//! Mapping validation: uid/gid mapping lines (from a spec or the ledger),
//! ranges in `START:SIZE` syntax and the pool config, with the arithmetic
//! invariants every accepted value must hold.
#![no_main]

use std::path::Path;

use idmap::{Config, IdRange, Mapping};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() >= 12 {
        let n = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
        let (c, h, s) = (n(0), n(4), n(8));
        if let Ok(m) = Mapping::new(c, h, s) {
            // Accepted: nothing overflows and the ranges say what was given.
            assert!(s > 0);
            assert!(u64::from(h) + u64::from(s) <= 1 << 32);
            assert!(u64::from(c) + u64::from(s) <= 1 << 32);
            let r = m.host_range();
            assert_eq!((r.start(), r.size()), (h, s));
            let line = m.to_proc_line();
            let fields: Vec<u64> = line
                .split_whitespace()
                .map(|f| f.parse().unwrap())
                .collect();
            assert_eq!(fields, [u64::from(c), u64::from(h), u64::from(s)]);
        }
        if let (Ok(a), Ok(b)) = (IdRange::new(c, s), IdRange::new(h, s)) {
            assert_eq!(a.overlaps(&b), b.overlaps(&a));
            assert!(a.contains_range(&a));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(r) = text.parse::<IdRange>() {
            assert!(u64::from(r.start()) + u64::from(r.size()) <= 1 << 32);
        }
        let _ = Config::parse(Path::new("/etc/cnfbox/config.toml"), text);
    }
});
