//! show, show --json (with and without pages), verify (and --all) and core on arbitrary bytes,
//! as they are and resealed (`cr_fuzz::dump::inspect`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cr_fuzz::dump::inspect(data));
