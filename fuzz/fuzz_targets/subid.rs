//! /etc/subuid and /etc/subgid text: parse, then the queries `cnfbox setup`
//! and the allocator make of it.
#![no_main]

use std::path::Path;

use idmap::subid::Owner;
use idmap::{IdRange, SubIdFile};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = SubIdFile::parse(Path::new("/etc/subuid"), text) else {
        return;
    };
    for owner in [
        Owner {
            name: "cnfbox".into(),
            uid: Some(999),
        },
        Owner {
            name: "root".into(),
            uid: Some(0),
        },
        Owner {
            name: "999".into(),
            uid: None,
        },
    ] {
        if let Ok(Some(r)) = file.contiguous_range(&owner) {
            // The merged range is a valid half-open range.
            assert!(r.start() <= r.end());
            assert!(r.size() > 0);
        }
        let probe = IdRange::new(100_000, 65_536).unwrap();
        let _ = file.foreign_overlap(&owner, &probe);
        let _ = file.owned_by(&owner).count();
    }
});
