//! The slice reader walks every record and every view of arbitrary bytes
//! (`cr_format::fuzz::parse`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cr_format::fuzz::parse(data));
