//! Mapping lines, `START:SIZE` ranges and the config file (`idmap::fuzzing::mapping`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    idmap::fuzzing::mapping(data);
});
