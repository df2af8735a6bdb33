//! Capture of sockets (owned by the "anon" helper; a stub until then).

use super::Cx;
use crate::capture::state::{Action, Fidelity, FileEntry};
use crate::error::Result;

/// Describes the socket of `cx.fd` into `e`.
pub(super) fn capture(cx: &Cx, _e: &mut FileEntry) -> Result<Fidelity> {
    Ok(cx.line(
        format!("socket {}", cx.link_str()),
        Action::Lost,
        "not supported yet",
    ))
}
