//! Restore of pipes (owned by the "anon" helper; a stub until then).

use super::Prep;
use super::Prepared;
use crate::error::Result;
use crate::restore::child::Child;
use cr_format::read::File;

/// Work after placement (none yet).
pub(super) enum After {}

/// Creates the open file of `f` in cr-dump.
pub(super) fn prepare(cx: &mut Prep, f: &File<'_>, _data: &[u8]) -> Result<Prepared> {
    cx.outside(f, "restoring pipes is not supported yet")
}

/// Runs `work` in the child once `fd` is in place.
pub(super) fn after_placement(_c: &Child, _scratch: u64, _fd: u32, work: &After) -> Result<()> {
    match *work {}
}
