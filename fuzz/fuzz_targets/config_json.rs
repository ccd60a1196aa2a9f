//! A bundle's config.json, through everything `create` decides from the
//! spec alone: parse, pod role, capability policy, NUMA hint, mappings.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cnfbox::check_untrusted_spec(data);
});
