//! Reading images: one sans-I/O [`Parser`] that validates each record before it hands out a
//! view, the slice reader [`Image`] built on it, and (under `std`) the [`StreamReader`] adapter.
//!
//! Contract: once a record has been returned as a [`Parsed`] value, every accessor of its view is
//! infallible and cannot panic; the checks of FORMAT.md (length, order, CRC, field values, limits)
//! have all been made. The slice reader and the streaming reader run the same code, so they
//! accept the same images and report the same error at the same offset.
//!
//! The pieces: the checked record views ([`Record`], [`Parsed`] and the views they hold), the
//! sans-I/O [`Parser`], the slice reader ([`Image`], [`Records`]) and the streaming
//! [`StreamReader`]. The rules they check are in the crate's `validate` module, which the writer
//! shares.

mod image;
mod parser;
#[cfg(feature = "std")]
mod stream;
mod view;

pub use image::{FileContents, Files, Image, Inotifies, Lookup, Records, Watches};
pub use parser::{Chunk, Options, Parser};
#[cfg(feature = "std")]
pub use stream::StreamReader;
pub use view::{
    File, FileData, InotifyWatch, Mm, Pages, Parsed, Process, Record, RecordKind, Regs, Run,
    RunIter, RunKind, Signals, Timers, Unknown, VdsoData, Vma,
};
