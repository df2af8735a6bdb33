//! Capture of eventfd, timerfd, signalfd, epoll and memfd descriptors (owned by the "anon"
//! helper; a stub until then).

use super::Cx;
use crate::capture::state::{Action, Fidelity, FileEntry};
use crate::error::Result;

/// Describes the eventfd, timerfd, signalfd or epoll instance of `cx.fd` into `e`.
pub(super) fn capture(cx: &Cx, _e: &mut FileEntry) -> Result<Fidelity> {
    Ok(cx.line(cx.link_str(), Action::Lost, "not supported yet"))
}

/// Describes the memfd of `cx.fd` (name, seals, contents) into `e`.
pub(super) fn capture_memfd(cx: &Cx, _e: &mut FileEntry) -> Result<Fidelity> {
    Ok(cx.line(
        format!("memfd {}", cx.link_str()),
        Action::Lost,
        "not supported yet",
    ))
}
