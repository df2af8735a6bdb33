//! Inspection of image files: what `show`, `encode`, `verify`, `chain`, `extract`, `diff`, `core`
//! and `squash` do, as library functions. Pure code over image bytes: no ptrace, no task is
//! touched; the only files read are the images (and, to resolve an untouched page of a file
//! mapping, the mapped file).
//!
//! - [`chain`]: image files mapped (or standard input read), the parent found beside its child,
//!   and [`ChainFiles`] / [`LoadedChain`]: the one way to read, parse and link a chain;
//! - [`names`]: the names of flags, kinds, signals and limits, both ways;
//! - [`show`]: the text rendering (`show`, `show -v`), with [`state`] for the 1.1 state records;
//!   [`json`]: the JSON form and back (`show --json`, `encode`), with `json_value` (its value
//!   conventions) and `json_state` (the state records' form);
//! - `verify` (its items are re-exported here, the module is private: `inspect::verify` is the
//!   function): one image streamed with bounded memory ([`verify_stream`]), or a chain
//!   ([`verify()`], [`chain_report`]);
//! - [`extract`](mod@extract): memory through the chain, page by page; [`diff`]: two images
//!   compared, every other field by name through [`diff_fields`];
//! - [`core`]: an ELF core file for gdb; [`squash`]: a chain folded into one full image.
//!
//! Dependencies run one way (A ← B: B uses A): `names` ← everything that prints; `names` ←
//! `state` ← `show`; `chain` ← `show` ← `json`, `extract`, `diff`; `json_value` ← `json_state`
//! ← `json`; `show` ← `diff_fields` ← `diff`; `chain` ← `verify`; `extract` ← `core`, `squash`.
//! This file only declares and re-exports.

pub mod chain;
pub mod core;
pub mod diff;
pub mod diff_fields;
pub mod extract;
pub mod json;
mod json_state;
mod json_value;
pub mod names;
pub mod show;
pub mod squash;
pub mod state;
// Private: its items are re-exported below, and `inspect::verify` names the function.
mod verify;

pub use chain::{
    image_error, load_chain, open_image, parent_path, sibling, with_chain, ChainFiles, LoadedChain,
    Mapped, Parse,
};
pub use extract::{extract, hexdump, page_content, page_content_with, Page};
pub use verify::{
    chain_report, check_stream, problem_json, verify, verify_mapped, verify_reader, verify_stream,
    verify_with, ChainReport, ImageReport, Report,
};
