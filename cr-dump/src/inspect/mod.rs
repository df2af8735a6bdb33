//! Inspection of image files (pure code, no ptrace).

pub mod core;
pub mod diff;
pub mod json;
pub mod show;
pub mod squash;
mod verify;

pub use verify::*;
