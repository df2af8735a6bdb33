//! Linux userspace side of cr: capture of a live task into a cr-format image, inspection of
//! images, and restore. The folders show the layers: `capture/` and `restore/` work on live
//! tasks, `inspect/` only on images (no ptrace), and `sys/` is the one place that talks to the
//! kernel. Where to look first:
//!
//! - how a task is frozen and let go: [`mod@capture::freeze`];
//! - how a system call is injected into a stopped task: [`sys::inject`];
//! - how page bytes travel from the task to the image: the [`capture`] module docs.
//!
//! - [`capture`]: everything that takes a checkpoint: the checkpointability check, the freeze,
//!   the task's state and memory, the page planner and the image stream, lazy checkpoints kept
//!   in memory under their CRID ([`capture::registry`]), copy-on-write twins
//!   ([`capture::twin`]), incremental images ([`capture::incremental`]), dirty tracking
//!   ([`capture::tracking`]), pre-copy, and a whole checkpoint as the CLI takes it
//!   ([`mod@capture::checkpoint`]);
//! - [`crid`]: the node-wide CRID counter;
//! - [`output`]: image files, unnamed (`O_TMPFILE`) until complete, mode 0600;
//! - [`inspect`]: what the inspection verbs do, pure code with no ptrace: chains of image files
//!   ([`inspect::chain`]: the one chain loader), `show`, JSON and back (`encode`), `verify` and
//!   `chain`, `extract`, `diff`, `core` (ELF cores for gdb), `squash`;
//! - [`sys`]: every system call, ptrace ([`sys::Tracee`]), the one syscall injector
//!   ([`sys::inject`]), kernel ABI structs, `/proc` parsers ([`procfs`], re-exported): the only
//!   module with `unsafe`;
//! - [`restore`]: restart a task from an image chain;
//! - [`records`]: Pages records built page by page (capture and squash share it);
//! - [`span`]: address ranges and page spans (types, not tuples).
//!
//! Every byte of an image is written and read through `cr-format`.

// `unsafe` lives in `sys` only, and every block there says why it is sound.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod capture;
pub mod crid;
pub mod error;
pub mod inspect;
pub mod output;
pub mod records;
pub mod restore;
pub mod span;
#[allow(unsafe_code)]
pub mod sys;
pub use sys::procfs;

pub use capture::registry::{checkpoint_lazy, discard, writeback, Registry};
pub use capture::{After, Options, Stats};
pub use error::{Error, Result};

/// The producer named in the Header of every image cr-dump writes (checkpoint, squash).
pub const PRODUCER: &str = concat!("cr-dump ", env!("CARGO_PKG_VERSION"));
