//! show, show --json (with and without pages), verify (and --all) and core on arbitrary bytes,
//! as they are and resealed (`cr_dump::fuzz::inspect`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cr_dump::fuzz::inspect(data));
