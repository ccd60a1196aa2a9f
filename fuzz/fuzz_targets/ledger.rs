//! The ledger loader (`idmap::fuzzing::ledger`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    idmap::fuzzing::ledger(data);
});
