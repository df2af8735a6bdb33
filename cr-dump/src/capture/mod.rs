//! Capture of one task into a cr-format image: the checkpointability check, the freeze,
//! registers, `/proc` state and memory, and the image records built from them.
//!
//! # Ways to take a checkpoint
//!
//! - **lazy, twin** ([`registry::Registry::checkpoint_lazy`], the default for tasks with at
//!   least [`TWIN_MIN_BYTES`] to copy): freeze, inject `clone()` to make a copy-on-write twin of
//!   the task ([`twin`]), resume the task at once (downtime = a fork); the image is streamed
//!   from the twin at write-back;
//! - **lazy, copy** ([`LazyMode::Copy`], small tasks, and wherever no twin can stand for the
//!   task): copy the memory into a pre-faulted buffer while frozen, resume, plan the records
//!   ([`lazy`]);
//! - **direct** ([`checkpoint_direct`]): stream the image out while the task is frozen, with
//!   peak memory that does not grow with the task's size ([`direct`]);
//! - **incremental** (a [`incremental::Parent`]): pages equal to what the parent chain holds
//!   become "in the parent" runs. Which pages: from write-protect dirty tracking when it is
//!   armed with the parent as its baseline ([`tracking`]), else by comparing contents
//!   ([`incremental`] has the rules), as a twin's pages are streamed or over a copy
//!   ([`delta`]);
//! - **pre-copy** ([`precopy`]): copy while the task runs, round after round of written pages,
//!   then freeze only for the last delta.
//!
//! [`checkpoint::checkpoint`] runs a whole checkpoint as the `cr-dump checkpoint` command does
//! (choose the mode, write the file, report).
//!
//! # How page bytes travel from the task to the image
//!
//! 1. Which pages: `memory::for_each_vma_span` walks the VMAs with `PAGEMAP_SCAN` (one call
//!    covers many VMAs) as each one's [`vma::Policy`] says (present or swapped anonymous
//!    pages; only the copied-on-write pages of a private file mapping; nothing of shared
//!    mappings and the vDSO), or a tracker's [`Scan`] says which were written.
//! 2. Read: `process_vm_readv` from the frozen task (`memory::read_memory`, split over two
//!    threads for a large copy), or `/proc/PID/mem` from a twin (pinning would unshare its
//!    copy-on-write pages).
//! 3. Plan: [`plan::plan_pages`] turns the pages, back to back in a buffer, into Pages
//!    records within the format's limits: all-zero pages become zero runs, pages equal to the
//!    parent's parent runs, and the data of the others is squeezed together in place, so each
//!    record's data is one slice of the buffer.
//! 4. Write: in a stream ([`stream`]), two workers each read and plan a chunk and compute its
//!    data CRC, then write it at its turn (`pipeline`, generic); from a copy, [`Snapshot::write_to`]
//!    writes the planned records from the buffer. Every byte goes through `cr-format`'s writer.
//!
//! # Layering
//!
//! The files import one another in one direction only: `options`, `check`, `plan` and
//! `pipeline` at the bottom; then `freeze`, `vma`, `memory`, `task`; `incremental` (the parent
//! and the comparison rules), `stream`, `tracking`, `twin`; `snapshot`, `lazy`, `direct`,
//! `delta`, `precopy`; `registry`; `checkpoint` at the top. This file only declares them and
//! re-exports the public API.

mod ask;
pub mod check;
pub mod checkpoint;
pub mod delta;
pub mod direct;
pub(crate) mod files;
pub mod freeze;
pub mod guard;
pub mod incremental;
pub mod lazy;
pub mod memory;
pub mod options;
pub(crate) mod pipeline;
pub mod plan;
pub mod precopy;
mod process;
pub mod registry;
mod signals;
pub mod snapshot;
pub mod splice;
pub mod state;
pub mod stream;
pub mod task;
pub mod tracking;
pub mod twin;
pub mod vma;

pub use crate::PRODUCER;
pub use check::{inspect, Inspection};
pub use checkpoint::{checkpoint, CheckpointOptions, Progress, Report};
pub use delta::{make_incremental, Delta};
pub use direct::{checkpoint_direct, DirectResult};
pub use freeze::{freeze, Frozen};
pub use incremental::Parent;
pub use memory::estimate_bytes;
pub use options::{
    After, LazyMode, Options, StateOptions, Stats, DEFAULT_GHOST_LIMIT, TEST_PAUSE_ENV,
    TEST_WRITEBACK_PAUSE_ENV, TWIN_MIN_BYTES,
};
pub use plan::RecordPlan;
pub use precopy::{PrecopyLimits, PrecopyReport};
pub use registry::Registry;
pub use snapshot::{SnapVma, Snapshot};
pub use task::Meta;
pub use vma::{vma_recs, Scan, Tracker, VmaKind, VmaRec};
