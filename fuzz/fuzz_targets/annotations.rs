//! Annotation values as a hostile pod spec sets them
//! (`cnfbox::check_untrusted_annotations`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cnfbox::check_untrusted_annotations(data);
});
