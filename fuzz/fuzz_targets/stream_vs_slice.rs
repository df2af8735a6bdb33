//! The streaming readers fed in arbitrary chunks agree with the slice reader
//! (`cr_fuzz::format::stream_vs_slice`; the first bytes choose the chunk sizes).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cr_fuzz::format::stream_vs_slice(data));
