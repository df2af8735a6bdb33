//! The one error type: `Copy`, no allocation, always with the byte offset where it applies.

use core::fmt;

/// An error with the byte offset in the image where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// Byte offset in the image (for chain errors: of the child's Header record; for writer and
    /// sink errors: where the record would have started).
    pub offset: u64,
    /// What was wrong.
    pub kind: ErrorKind,
}

/// What was wrong, and what was expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ended; `needed` more bytes were expected at `offset`.
    Truncated {
        /// Bytes needed past the end of the input.
        needed: u64,
    },
    /// The Header does not start with the magic.
    BadMagic,
    /// A major version this reader does not know.
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// An architecture this reader does not know.
    UnsupportedArch {
        /// `e_machine` found.
        arch: u16,
    },
    /// A record kind not allowed here.
    UnexpectedRecord {
        /// Kind found.
        found: u16,
        /// What the record order allows here.
        expected: &'static str,
    },
    /// A record of unknown kind flagged critical.
    UnknownCritical {
        /// Kind found.
        kind: u16,
    },
    /// A record's index is not its position.
    BadIndex {
        /// Position of the record.
        expected: u32,
        /// Index found.
        found: u32,
    },
    /// A record's payload length is wrong for its kind or contents.
    BadLength {
        /// Kind of the record.
        kind: u16,
        /// Length the contents call for (or the limit).
        expected: u64,
        /// Length found.
        found: u64,
    },
    /// A record's CRC does not match its bytes.
    BadCrc {
        /// CRC stored in the record.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A Pages record's data CRC does not match the data.
    BadDataCrc {
        /// CRC stored in the record.
        stored: u32,
        /// CRC of the data.
        computed: u32,
    },
    /// A field holds a value the spec forbids.
    BadField {
        /// Field name as in FORMAT.md.
        field: &'static str,
        /// What a valid value looks like.
        expected: &'static str,
        /// The value found (truncated to 64 bits).
        found: u64,
    },
    /// A limit of FORMAT.md §10 is exceeded.
    LimitExceeded {
        /// Name of the limit.
        limit: &'static str,
        /// Its value.
        max: u64,
        /// The value found or claimed.
        found: u64,
    },
    /// A Tail field disagrees with the image.
    BadTail {
        /// Field name.
        field: &'static str,
        /// Value the image calls for.
        expected: u64,
        /// Value stored in the tail.
        found: u64,
    },
    /// Bytes follow the Tail.
    TrailingData,
    /// An image of a chain is not the parent its child names.
    WrongParent {
        /// CRID the child names.
        expected_crid: u64,
        /// CRID of the image given as its parent.
        found_crid: u64,
    },
    /// An image's parent digest does not match the parent image's tail digest.
    ParentDigestMismatch {
        /// Digest the child names.
        expected: u64,
        /// Tail digest of the image given as its parent.
        found: u64,
    },
    /// A chain ends at an incremental image: its parent is missing.
    MissingParent {
        /// CRID of the missing parent.
        crid: u64,
    },
    /// Images given after the chain's full image.
    ExtraImage {
        /// CRID of the image that belongs to no chain.
        crid: u64,
    },
    /// An address is not inside any VMA of the image that should hold it.
    NotMapped {
        /// The address.
        addr: u64,
    },
    /// The writer was asked for a record the order does not allow, or to finish early.
    OutOfOrder {
        /// What the record order allows now.
        expected: &'static str,
    },
    /// The sink has no room, or an I/O error happened (the I/O sink keeps the error itself).
    SinkFull,
    /// The sink failed with an I/O error (kept by the sink).
    Io,
}

impl Error {
    /// An error at `offset`.
    pub const fn new(offset: u64, kind: ErrorKind) -> Self {
        Error { offset, kind }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offset {:#x}: {}", self.offset, self.kind)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match *self {
            Truncated { needed } => write!(f, "image truncated: {needed} more bytes expected"),
            BadMagic => f.write_str("not a cr image: bad magic (expected 89 43 52 49 0d 0a 1a 0a)"),
            UnsupportedVersion { major, minor } => {
                write!(
                    f,
                    "unsupported format version {major}.{minor} (this reader knows 1.x)"
                )
            }
            UnsupportedArch { arch } => {
                write!(f, "unsupported architecture {arch} (expected 62, x86-64)")
            }
            UnexpectedRecord { found, expected } => {
                write!(
                    f,
                    "record of kind {} not allowed here: expected {expected}",
                    kind_name(found)
                )
            }
            UnknownCritical { kind } => write!(f, "unknown critical record kind {kind}"),
            BadIndex { expected, found } => write!(f, "record index {found}, expected {expected}"),
            BadLength {
                kind,
                expected,
                found,
            } => {
                write!(
                    f,
                    "{} record: payload length {found}, expected {expected}",
                    kind_name(kind)
                )
            }
            BadCrc { stored, computed } => {
                write!(
                    f,
                    "record CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            BadDataCrc { stored, computed } => {
                write!(
                    f,
                    "page data CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            BadField {
                field,
                expected,
                found,
            } => {
                write!(f, "bad {field} {found:#x}: expected {expected}")
            }
            LimitExceeded { limit, max, found } => write!(f, "{found} exceeds {limit} ({max})"),
            BadTail { field: "digest", expected, found } => write!(
                f,
                "tail digest is {found:#018x}, expected {expected:#018x} (the records before it differ)"
            ),
            BadTail {
                field,
                expected,
                found,
            } => {
                write!(f, "tail {field} is {found}, expected {expected}")
            }
            TrailingData => f.write_str("data after the tail"),
            WrongParent {
                expected_crid,
                found_crid,
            } => {
                write!(
                    f,
                    "wrong parent: expected CRID {expected_crid}, found CRID {found_crid}"
                )
            }
            ParentDigestMismatch { expected, found } => write!(
                f,
                "parent digest mismatch: expected {expected:#018x}, parent has {found:#018x}"
            ),
            MissingParent { crid } => write!(f, "missing parent image with CRID {crid}"),
            ExtraImage { crid } => write!(f, "image with CRID {crid} is not part of the chain"),
            NotMapped { addr } => write!(f, "address {addr:#x} is not in any VMA"),
            OutOfOrder { expected } => write!(f, "record out of order: expected {expected}"),
            SinkFull => f.write_str("output full"),
            Io => f.write_str("I/O error"),
        }
    }
}

/// Name of a record kind, for messages.
pub fn kind_name(kind: u16) -> &'static str {
    use crate::raw::*;
    match kind {
        KIND_HEADER => "Header",
        KIND_TASK => "Task",
        KIND_REGS => "Regs",
        KIND_MM => "Mm",
        KIND_VMA => "Vma",
        KIND_PAGES => "Pages",
        KIND_TAIL => "Tail",
        KIND_FILE => "File",
        KIND_FILE_DATA => "FileData",
        KIND_SIGNALS => "Signals",
        KIND_TIMERS => "Timers",
        KIND_PROCESS => "Process",
        KIND_VMA_ATTR => "VmaAttr",
        KIND_INOTIFY => "Inotify",
        KIND_INOTIFY_WATCH => "InotifyWatch",
        KIND_LOCK => "Lock",
        KIND_VDSO_DATA => "VdsoData",
        _ => "unknown",
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Result with [`Error`].
pub type Result<T> = core::result::Result<T, Error>;
