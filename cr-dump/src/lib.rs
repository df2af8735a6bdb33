//! Linux userspace side of cr: capture of a live task into a cr-format image, the registry of
//! in-memory (lazy) checkpoints, checkpoint ids, and image inspection.
//!
//! - [`capture`]: the checkpointability check, the freeze, direct (streaming) capture;
//! - [`registry`]: lazy checkpoints kept in memory under their CRID, written back later;
//! - [`twin`]: copy-on-write snapshots (a stopped copy of the task) that lazy checkpoints use;
//! - [`crid`]: the node-wide CRID counter;
//! - [`output`]: image files, unnamed (`O_TMPFILE`) until complete, mode 0600;
//! - [`show`]: a text rendering of an image; [`json`]: its JSON form and back (`encode`);
//! - [`inspect`]: verify, extract, chains of image files; [`diff`]; [`elfcore`]: ELF cores for gdb;
//! - [`procfs`]: `/proc` parsers; [`sys`]: the only module with `unsafe` (raw system calls);
//! - [`span`]: address ranges and page spans (types, not tuples);
//!
//! Every byte of an image is written and read through `cr-format`.

pub mod capture;
pub mod crid;
pub mod diff;
pub mod elfcore;
pub mod error;
pub mod incremental;
pub mod inspect;
pub mod json;
pub mod output;
pub mod procfs;
pub mod registry;
pub mod restore;
pub mod show;
pub mod span;
pub mod squash;
pub mod sys;
pub mod tracking;
pub mod twin;

pub use capture::{After, Options, Stats};
pub use error::{Error, Result};
pub use registry::{checkpoint_lazy, discard, writeback, Registry};
