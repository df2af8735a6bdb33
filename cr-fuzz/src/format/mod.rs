//! The oracles of `cr-format`: the cargo-fuzz targets `parse`, `stream_vs_slice`, `roundtrip`
//! and `chain` in `fuzz/` are thin wrappers, and `cargo test` runs the same functions with a
//! seeded generator (`tests/format_smoke.rs`). They use only `cr-format`'s public API.
//!
//! Each function returns normally on any input and panics only when a property of the format
//! crate is violated: a panic is the fuzzer's signal. The properties:
//!
//! - [`parse`]: both slice walks (with and without page data) agree with each other and with
//!   [`Image::parse`] / [`Image::parse_metadata`]; every view accessor of every record holds
//!   what its header promises; [`Image::lookup`] agrees with a lookup written here from the
//!   record walk; a valid image re-emits byte for byte through [`ImageRepr`]; the records of
//!   1.1 and 1.2 follow their rules and the order of FORMAT.md §2.5 by checks written here, and
//!   `Image::files` / `inotify` / `locks` / `vdso_data` / `signals` / `timers` / `process`
//!   agree with the record walk.
//! - [`stream_vs_slice`]: the sans-I/O [`Parser`] fed in chunks, and the
//!   [`StreamReader`] over a reader (and a seekable reader) that
//!   returns those chunks, yield the records and the error of the slice reader;
//!   `StreamReader::resync` always ends.
//! - [`roundtrip`]: an arbitrary [`ImageRepr`] writes, reads back equal and re-emits identical;
//!   a flipped bit or a truncation of it is rejected.
//! - [`chain`]: sets of images with right, wrong, missing and too many links, in arbitrary
//!   orders: [`Chain::new`] accepts exactly the chains whose links hold, and on those
//!   [`Chain::resolve`] and [`ChainIndex::resolve`] agree.
//!
//! Input layout of [`stream_vs_slice`]: byte 0 selects how many chunk-size bytes follow
//! (`(byte0 & 3) + 1`); each of those gives a chunk size (`b + 1` for `b < 0x80`, else
//! `((b & 0x7f) + 1) KiB`, raised to `image.len() / MAX_CHUNKS`), used in turn; the rest is
//! the image.
//!
//! [`Image::parse`]: cr_format::read::Image::parse
//! [`Image::parse_metadata`]: cr_format::read::Image::parse_metadata
//! [`Image::lookup`]: cr_format::read::Image::lookup
//! [`ImageRepr`]: cr_format::repr::ImageRepr
//! [`Parser`]: cr_format::read::Parser
//! [`StreamReader`]: cr_format::read::StreamReader
//! [`Chain::new`]: cr_format::chain::Chain::new
//! [`Chain::resolve`]: cr_format::chain::Chain::resolve
//! [`ChainIndex::resolve`]: cr_format::chain::ChainIndex::resolve

mod chain;
mod roundtrip;
mod slice;
mod state;
mod stream;

pub use chain::chain;
pub use roundtrip::roundtrip;
pub use slice::parse;
pub use stream::{stream_vs_slice, stream_vs_slice_with};

use cr_format::error::Error;
use cr_format::raw::RecordHeader;
use cr_format::read::Options;

const REC_HDR: u64 = 16;
const BOTH: [Options; 2] = [
    Options { verify_data: true },
    Options { verify_data: false },
];
/// Most addresses looked up per image (each lookup walks the records).
const MAX_LOOKUPS: usize = 48;
/// Largest generated image [`roundtrip`] also runs [`parse`] and the streaming checks on.
const THOROUGH_MAX: usize = 256 * 1024;
/// The streaming checks split an image into at most about this many chunks.
pub const MAX_CHUNKS: usize = 2048;

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// What a reader yielded: each record's offset and header, then the error that ended it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Walk {
    records: Vec<(u64, RecordHeader)>,
    error: Option<Error>,
}
