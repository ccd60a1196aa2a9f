//! /etc/subuid and /etc/subgid text (`idmap::fuzzing::subid`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    idmap::fuzzing::subid(data);
});
