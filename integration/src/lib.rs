//! Black-box tests of cnfbox live in `tests/`; this crate has no library code.
