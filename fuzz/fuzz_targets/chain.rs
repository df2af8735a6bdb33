//! Arbitrary sets of images resolved as a chain: wrong parents, cycles, depth
//! (`cr_fuzz::format::chain`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cr_fuzz::format::chain(&mut arbitrary::Unstructured::new(data))
});
