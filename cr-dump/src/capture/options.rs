//! What a capture is asked to do ([`Options`]) and what it reports ([`Stats`]), plus the test
//! hooks. Nothing here depends on another capture module.

use std::time::Duration;

/// What happens to the task once it has been captured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum After {
    /// It runs on (the default).
    #[default]
    Continue,
    /// It is left stopped (`SIGSTOP`), not traced.
    Stop,
    /// It is killed (`SIGKILL`), e.g. after a checkpoint for migration.
    Kill,
}

/// Capture options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// What to do with the task afterwards.
    pub after: After,
    /// Lazy mode: how the memory is held (see [`LazyMode`]).
    pub lazy: LazyMode,
    /// The task's state besides memory (open files, ...).
    pub state: StateOptions,
}

/// How the task's state besides memory is captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateOptions {
    /// Refuse the checkpoint (the task left running, no image) when anything would not be
    /// restored exactly (a `Lost` or `Partial` line of the fidelity report).
    pub strict: bool,
    /// The largest deleted-but-open file whose contents go into the image, in bytes; a larger
    /// one is reported lost.
    pub ghost_limit: u64,
}

/// Default of [`StateOptions::ghost_limit`]: 64 MiB.
pub const DEFAULT_GHOST_LIMIT: u64 = 64 << 20;

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            strict: false,
            ghost_limit: DEFAULT_GHOST_LIMIT,
        }
    }
}

/// How a lazy checkpoint holds the task's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LazyMode {
    /// A copy-on-write twin when there is at least [`TWIN_MIN_BYTES`] to copy, else a copy
    /// (the default).
    #[default]
    Auto,
    /// A copy-on-write twin ([`crate::capture::twin`]) whatever the size.
    Twin,
    /// A copy into a pre-faulted buffer while the task is stopped.
    Copy,
}

/// Below this much memory to copy, copying while the task is stopped is shorter than making a
/// twin (about 1 ms on an idle machine, a few under load, against 8 GiB/s of copy).
pub const TWIN_MIN_BYTES: u64 = 32 << 20;

/// Test hook: when this environment variable holds a number of milliseconds, the dumper prints
/// `cr-dump: test-hook: frozen` to stderr right after the freeze and sleeps that long, so tests
/// can kill the target (or the dumper) mid-capture.
pub const TEST_PAUSE_ENV: &str = "CR_DUMP_TEST_PAUSE_MS";

/// Test hook: milliseconds to sleep before the write-back from a copy-on-write twin starts, so
/// tests can let the task rewrite its memory first.
pub const TEST_WRITEBACK_PAUSE_ENV: &str = "CR_DUMP_TEST_WRITEBACK_PAUSE_MS";

/// The milliseconds a test hook variable holds, if set.
pub(crate) fn test_pause(var: &str) -> Option<Duration> {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Figures of one capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// How long the task was stopped.
    pub downtime: Duration,
    /// From the start of the capture to the image records being ready (lazy mode) or written
    /// (direct mode).
    pub capture: Duration,
    /// Pages stored with their data.
    pub data_pages: u64,
    /// Present pages found all zero.
    pub zero_pages: u64,
    /// Pages found unchanged since the parent image (incremental checkpoints; 0 otherwise).
    pub parent_pages: u64,
    /// VMAs whose pages came from write-protect dirty tracking (incremental checkpoints).
    pub tracked_vmas: u64,
    /// VMAs recorded.
    pub vmas: u64,
}
