//! The slice reader walks every record and every view of arbitrary bytes
//! (`cr_fuzz::format::parse`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cr_fuzz::format::parse(data));
