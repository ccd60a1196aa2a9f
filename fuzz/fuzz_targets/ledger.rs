//! The ledger loader. Raw bytes rarely pass the sha256 trailer, so the
//! input is also tried as a ledger body with a correct checksum appended;
//! whatever decodes must encode and decode back to the same state.
#![no_main]

use std::path::Path;

use idmap::ledger::{decode, encode};
use idmap::state::State;

/// The checksum line prefix, learnt from an encoded empty ledger.
fn with_checksum(body: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let empty = encode(&State::with_generation(0));
    let text = String::from_utf8(empty).unwrap();
    let last = text.trim_end().lines().last().unwrap();
    let prefix = &last[..last.len() - 64];
    let mut out = body.to_vec();
    let sum = sha2::Sha256::digest(body);
    out.extend_from_slice(prefix.as_bytes());
    for b in sum {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    out.push(b'\n');
    out
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = Path::new("/var/lib/cnfbox/idmap/ledger");
    let _ = decode(path, data);
    if let Ok(state) = decode(path, &with_checksum(data)) {
        let again = decode(path, &encode(&state)).expect("an encoded ledger decodes");
        assert_eq!(
            again.entries().collect::<Vec<_>>(),
            state.entries().collect::<Vec<_>>()
        );
        assert_eq!(again.generation, state.generation);
        assert!(
            state.is_disjoint(),
            "a decoded ledger has no overlapping pods"
        );
    }
});
