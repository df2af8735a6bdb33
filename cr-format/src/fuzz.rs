//! Fuzz logic as plain functions (under the `arbitrary` feature): the cargo-fuzz targets in
//! `fuzz/` are thin wrappers, and `cargo test` runs the same functions with a seeded generator.
