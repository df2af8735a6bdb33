//! Arbitrary image → writer → reader → equal, re-emit identical; damage is caught
//! (`cr_format::fuzz::roundtrip`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cr_format::fuzz::roundtrip(&mut arbitrary::Unstructured::new(data))
});
