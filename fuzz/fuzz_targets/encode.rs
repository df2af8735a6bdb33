//! Arbitrary JSON text (and structural mutations of it) into encode: an image that passes the
//! reader, or an error (`cr_fuzz::dump::encode`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cr_fuzz::dump::encode(data));
