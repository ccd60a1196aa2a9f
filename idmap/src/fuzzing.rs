//! Entry points for the cargo-fuzz targets in `fuzz/` and for the tests
//! that replay their past crashes (`fuzz/regressions/`): each takes raw
//! bytes, feeds them to a parser of untrusted input, and asserts the
//! invariants an accepted value must hold. Errors are fine; a panic is a bug.

use std::path::Path;

use sha2::Digest;

use crate::ledger::{decode, encode};
use crate::state::State;
use crate::subid::Owner;
use crate::{Config, IdRange, Mapping, SubIdFile};

/// `/etc/subuid` or `/etc/subgid` text, and the queries setup and the
/// allocator make of it.
pub fn subid(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = SubIdFile::parse(Path::new("/etc/subuid"), text) else {
        return;
    };
    let probe = IdRange::new(100_000, 65_536).expect("a valid probe range");
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
            assert!(r.size() > 0 && r.start() <= r.end(), "merged range {r:?}");
        }
        let _ = file.foreign_overlap(&owner, &probe);
        let _ = file.owned_by(&owner).count();
    }
}

/// Mapping lines (container id, host id, size as three little-endian
/// u32s), ranges in `START:SIZE` syntax and the config file.
pub fn mapping(data: &[u8]) {
    if let [a, b, c, ..] = data.chunks_exact(4).collect::<Vec<_>>()[..] {
        let n = |x: &[u8]| u32::from_le_bytes(x.try_into().expect("4 bytes"));
        let (c, h, s) = (n(a), n(b), n(c));
        if let Ok(m) = Mapping::new(c, h, s) {
            assert!(s > 0);
            assert!(u64::from(h) + u64::from(s) <= 1 << 32, "{m:?}");
            assert!(u64::from(c) + u64::from(s) <= 1 << 32, "{m:?}");
            let r = m.host_range();
            assert_eq!((r.start(), r.size()), (h, s));
            let fields: Vec<u64> = m
                .to_proc_line()
                .split_whitespace()
                .map(|f| f.parse().expect("numeric proc line"))
                .collect();
            assert_eq!(fields, [u64::from(c), u64::from(h), u64::from(s)]);
        }
        if let (Ok(x), Ok(y)) = (IdRange::new(c, s), IdRange::new(h, s)) {
            assert_eq!(x.overlaps(&y), y.overlaps(&x));
            assert!(x.contains_range(&x));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(r) = text.parse::<IdRange>() {
            assert!(
                u64::from(r.start()) + u64::from(r.size()) <= 1 << 32,
                "{r:?}"
            );
        }
        let _ = Config::parse(Path::new("/etc/cnfbox/config.toml"), text);
    }
}

/// `body` with a correct checksum line appended, so that the fuzzer gets
/// past the sha256 trailer (the prefix is learnt from an encoded ledger).
fn with_checksum(body: &[u8]) -> Vec<u8> {
    let empty = String::from_utf8(encode(&State::with_generation(0))).expect("utf-8 ledger");
    let last = empty.trim_end().lines().last().expect("checksum line");
    let prefix = &last[..last.len() - 64];
    let mut out = body.to_vec();
    out.extend_from_slice(prefix.as_bytes());
    for b in sha2::Sha256::digest(body) {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    out.push(b'\n');
    out
}

/// The ledger loader, raw and with a valid checksum; whatever decodes must
/// encode and decode back to the same state, with no overlapping pods.
pub fn ledger(data: &[u8]) {
    let path = Path::new("/var/lib/cnfbox/idmap/ledger");
    let _ = decode(path, data);
    if let Ok(state) = decode(path, &with_checksum(data)) {
        let again = decode(path, &encode(&state)).expect("an encoded ledger decodes");
        assert_eq!(
            again.entries().collect::<Vec<_>>(),
            state.entries().collect::<Vec<_>>()
        );
        assert_eq!(again.generation, state.generation);
        assert!(state.is_disjoint(), "a decoded ledger has overlapping pods");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksummed_body_decodes() {
        let body = b"cnfbox-idmap-ledger v1\ngeneration 3\nentries 0\n";
        let state = decode(Path::new("l"), &with_checksum(body)).expect("decodes");
        assert_eq!(state.generation, 3);
        ledger(body);
        // The two-pod seed in fuzz/seeds/ledger/ gets past the parser too.
        let seed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/seeds/ledger/two-pods"
        ))
        .expect("seed");
        let state = decode(Path::new("l"), &with_checksum(&seed)).expect("seed decodes");
        assert_eq!(state.len(), 2);
    }
}
