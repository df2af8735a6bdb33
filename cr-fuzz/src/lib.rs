//! The fuzz oracles of `cr`, in a crate of their own so that no library ships panicking public
//! code (as wasm-tools keeps its oracles apart from wasmparser).
//!
//! Each function takes arbitrary bytes (or an [`arbitrary::Unstructured`] over them), returns
//! normally on any input and panics only when a property is violated: a panic is the fuzzer's
//! signal. The same functions run three ways: as the cargo-fuzz targets in `fuzz/` (one-line
//! wrappers), under `cargo test` over the vectors and a seeded generator (`tests/`), and by
//! hand on a crash input (FUZZING.md).
//!
//! - [`format`](mod@format): the reader, streaming reader, writer and chain resolution of
//!   `cr-format` (targets `parse`, `stream_vs_slice`, `roundtrip`, `chain`);
//! - [`dump`]: the inspection verbs of `cr-dump` on images and on JSON (targets `inspect`,
//!   `encode`).

pub mod dump;
pub mod format;
