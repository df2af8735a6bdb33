//! Arbitrary sets of images resolved as a chain: wrong parents, cycles, depth
//! (`cr_format::fuzz::chain`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cr_format::fuzz::chain(&mut arbitrary::Unstructured::new(data))
});
