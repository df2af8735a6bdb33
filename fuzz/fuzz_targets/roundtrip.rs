//! Arbitrary image → writer → reader → equal, re-emit identical; damage is caught
//! (`cr_fuzz::format::roundtrip`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cr_fuzz::format::roundtrip(&mut arbitrary::Unstructured::new(data))
});
