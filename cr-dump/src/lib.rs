//! Linux userspace side of cr: capture of a live task into a cr-format image, the registry of
//! in-memory (lazy) checkpoints, checkpoint ids, and image inspection.
//!
//! - [`capture`]: everything that takes a checkpoint: the checkpointability check, the freeze,
//!   the task's state and memory, the page planner and the image stream, lazy checkpoints kept
//!   in memory under their CRID ([`capture::registry`]), copy-on-write twins
//!   ([`capture::twin`]), incremental images ([`capture::incremental`]), dirty tracking
//!   ([`capture::tracking`]), pre-copy, and a whole checkpoint as the CLI takes it
//!   ([`mod@capture::checkpoint`]);
//! - [`crid`]: the node-wide CRID counter;
//! - [`output`]: image files, unnamed (`O_TMPFILE`) until complete, mode 0600;
//! - [`show`]: a text rendering of an image; [`json`]: its JSON form and back (`encode`);
//! - [`inspect`]: verify, extract, chains of image files; [`diff`]; [`elfcore`]: ELF cores for gdb;
//! - [`procfs`]: `/proc` parsers; [`sys`]: the only module with `unsafe` (raw system calls);
//! - [`span`]: address ranges and page spans (types, not tuples);
//! - [`fuzz`]: the fuzz targets' logic over the inspection verbs (`fuzz/`, FUZZING.md).
//!
//! Every byte of an image is written and read through `cr-format`.

pub mod capture;
pub mod crid;
pub mod diff;
pub mod elfcore;
pub mod error;
pub mod fuzz;
pub mod inspect;
pub mod json;
pub mod output;
pub mod procfs;
pub mod restore;
pub mod show;
pub mod span;
pub mod squash;
pub mod sys;

pub use capture::registry::{checkpoint_lazy, discard, writeback, Registry};
pub use capture::{After, Options, Stats};
pub use error::{Error, Result};

/// The old path of [`capture::incremental`] (and of [`capture::plan::RunBuilder`]), for
/// callers not yet switched to the new one.
#[doc(hidden)]
pub mod incremental {
    pub use crate::capture::incremental::*;
    pub use crate::capture::plan::RunBuilder;
}
