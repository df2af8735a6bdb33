//! The `cr` checkpoint/restart image format.
//!
//! One format for kernel and userspace C/R code: fixed little-endian layouts, a CRC on every
//! record, a tail that seals the image, incremental images chained by CRID and digest. The
//! normative description is `spec/FORMAT.md`; this crate is `#![no_std]`, needs no allocator
//! (the `alloc` and `std` features add owned types and I/O adapters), has no `unsafe`, and
//! returns an error, never a panic, on any input.
//!
//! Layers, as in `object` and `smoltcp`:
//! - [`raw`]: on-disk structs and constants, no logic;
//! - [`read`]: the checked zero-copy record views ([`Record`](read::Record) and the views it
//!   holds), the validating [`Parser`](read::Parser) (sans-I/O), the slice reader
//!   [`Image`](read::Image) and, under `std`, [`StreamReader`](read::StreamReader);
//! - `validate` (crate-private): the rules of FORMAT.md, checked once; the reader runs them on
//!   what it parses and the writer on what it emits, so both accept the same images;
//! - [`write`](mod@write): the [`Writer`](write::Writer) over a [`Sink`](write::Sink);
//! - [`repr`] (under `alloc`): owned values that parse and emit;
//! - [`chain`]: resolution of pages through incremental images;
//! - [`limits`] and [`error`].
//!
//! The fuzz oracles of this crate are in the `cr-fuzz` crate of the workspace (they panic when a
//! property breaks, so they are not shipped here); the `arbitrary` feature gives them, and
//! property tests, arbitrary valid images ([`repr`]).
//!
//! # Example: write an image and read it back
//!
//! ```
//! use cr_format::raw::{self, PageRun, RUN_DATA, RUN_ZERO, VMA_ANON, PROT_READ, PROT_WRITE};
//! use cr_format::read::{Image, RunKind};
//! use cr_format::write::{SliceSink, Writer};
//! use zerocopy::FromZeros;
//!
//! // No allocator needed: write into a buffer.
//! let mut buf = [0u8; 16384];
//! let mut w = Writer::new(SliceSink::new(&mut buf));
//! let mut h = raw::Header::new_zeroed();
//! h.magic = raw::MAGIC;
//! h.version_major = raw::VERSION_MAJOR.into();
//! h.arch = raw::ARCH_X86_64.into();
//! h.page_size = 4096.into();
//! h.crid = 1.into();
//! w.header(&h)?;
//! let mut t = raw::Task::new_zeroed();
//! t.pid = 42.into();
//! t.state = b'S';
//! w.task(&t)?;
//! let mut r = raw::RegsX86_64::new_zeroed();
//! r.arch = raw::ARCH_X86_64.into();
//! w.regs(&r, &[])?;
//! w.mm(&raw::Mm::new_zeroed(), &[], b"/bin/true")?;
//! let mut v = raw::Vma::new_zeroed();
//! (v.start, v.end, v.kind) = (0x10000.into(), 0x13000.into(), VMA_ANON.into());
//! v.prot = (PROT_READ | PROT_WRITE).into();
//! w.vma(&v, &[])?;
//! let runs = [
//!     PageRun { addr: 0x10000.into(), pages: 1.into(), kind: RUN_DATA.into(), _reserved0: 0.into() },
//!     PageRun { addr: 0x11000.into(), pages: 2.into(), kind: RUN_ZERO.into(), _reserved0: 0.into() },
//! ];
//! w.pages(&runs, &[0xab; 4096])?;
//! let summary = w.finish()?;
//! let len = summary.image_len as usize;
//!
//! let img = Image::parse(&buf[..len])?;
//! assert_eq!(img.crid(), 1);
//! assert_eq!(img.digest(), summary.digest);
//! let run = img.records().find_map(|r| match r.record {
//!     cr_format::read::Record::Pages(p) => p.iter().next(),
//!     _ => None,
//! });
//! assert_eq!(run.unwrap().kind, RunKind::Data);
//! # Ok::<(), cr_format::Error>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo
    )
)]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod chain;
pub mod error;
pub mod limits;
pub mod raw;
pub mod read;
#[cfg(feature = "alloc")]
pub mod repr;
mod validate;
pub mod write;

pub use error::{Error, ErrorKind, Result};

/// The README's examples, run as doctests (the README is the crate's page on crates.io).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
