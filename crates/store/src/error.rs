//! The one error type of the store. Every limit has its own variant carrying the numbers.

use rocketlog_common::NameError;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The message's body plus encoded properties exceed `max_message_size`, or the whole
    /// record would not fit in one commit-log segment.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },

    /// A string field of the message is longer than the record format can carry.
    #[error("field {field} is {len} bytes long; the limit is {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },

    /// The topic name breaks the naming rules.
    #[error(transparent)]
    BadTopic(#[from] NameError),

    /// No room for a new file of `needed` bytes: the file system refused to preallocate it
    /// (ENOSPC), or creating it would leave less than `keep_free` bytes available (room kept
    /// for files that matter more: a commit-log segment keeps room for the consume queues
    /// and the index, an index file for the consume queues). Nothing was written: the store
    /// stays consistent and the next attempt retries once space is free.
    #[error(
        "disk full: {} needs {needed} bytes and {keep_free} more kept free, {available} available",
        path.display()
    )]
    DiskFull {
        path: PathBuf,
        needed: u64,
        keep_free: u64,
        available: u64,
    },

    /// A flush failed earlier; the store refuses writes until it is reopened.
    #[error("store is read-only: {reason}")]
    ReadOnly { reason: String },

    /// The flush that had to make this append durable failed. The append may or may not
    /// survive a crash; the store is now read-only.
    #[error("flush failed: {reason}")]
    FlushFailed { reason: String },

    /// Bad bytes on disk. `offset` is the global physical offset for commit-log files and
    /// the byte offset inside `file` for every other file.
    #[error("corrupt data in {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The requested offset is outside what the store holds: `[min, max)` for queue offsets,
    /// `[min, max)` of the written log for physical offsets.
    #[error("offset {offset} is outside [{min}, {max})")]
    OffsetOutOfRange { offset: u64, min: u64, max: u64 },

    /// An I/O error, with the file it happened on.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The configuration cannot work (e.g. segments too small for the message limit).
    #[error("invalid store configuration: {reason}")]
    Config { reason: String },

    /// Another process (or another open `Store`) holds the data directory.
    #[error("data directory {} is in use by another store", path.display())]
    Locked { path: PathBuf },

    /// The store was shut down (or dropped) before the operation could complete.
    #[error("store is shut down")]
    ShutDown,

    /// The store follows another store's log (a replica): only replicated bytes are appended.
    #[error("this store is a replica: it appends only the bytes its master ships")]
    Replica,

    /// Replicated bytes were refused: they do not start at this log's end, do not decode as
    /// whole records at the positions they claim, or do not continue the queues as the log
    /// does. Nothing was written.
    #[error("replicated bytes at log offset {offset} refused: {reason}")]
    BadReplicaChunk { offset: u64, reason: String },

    /// [`crate::truncate_log`] refused to cut the log at `offset`; nothing was changed.
    #[error("cannot truncate the log to offset {offset}: {why}")]
    BadTruncation { offset: u64, why: TruncateRefusal },
}

/// Why an offset cannot be the new end of the log (see [`crate::truncate_log`]). The new end
/// must be a record boundary in `[log start, log end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TruncateRefusal {
    /// The offset falls inside a record; `before` and `after` are the boundaries around it.
    #[error("it is not the start of a record (records start at {before} and {after})")]
    NotRecordStart { before: u64, after: u64 },
    /// The segment that held the offset was deleted by retention.
    #[error("it is below the log start {log_start} (deleted by retention)")]
    BelowLogStart { log_start: u64 },
    /// The log never reached the offset.
    #[error("it is beyond the log end {log_end}")]
    BeyondLogEnd { log_end: u64 },
}

impl StoreError {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            file: file.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    /// A copy for fanning one failure out to many waiters (io errors become their text).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            StoreError::MessageTooLarge { size, max } => StoreError::MessageTooLarge {
                size: *size,
                max: *max,
            },
            StoreError::FieldTooLong { field, len, max } => StoreError::FieldTooLong {
                field,
                len: *len,
                max: *max,
            },
            StoreError::BadTopic(e) => StoreError::BadTopic(e.clone()),
            StoreError::Replica => StoreError::Replica,
            StoreError::BadTruncation { offset, why } => StoreError::BadTruncation {
                offset: *offset,
                why: *why,
            },
            StoreError::BadReplicaChunk { offset, reason } => StoreError::BadReplicaChunk {
                offset: *offset,
                reason: reason.clone(),
            },
            StoreError::DiskFull {
                path,
                needed,
                keep_free,
                available,
            } => StoreError::DiskFull {
                path: path.clone(),
                needed: *needed,
                keep_free: *keep_free,
                available: *available,
            },
            StoreError::ReadOnly { reason } => StoreError::ReadOnly {
                reason: reason.clone(),
            },
            StoreError::FlushFailed { reason } => StoreError::FlushFailed {
                reason: reason.clone(),
            },
            StoreError::Corrupt {
                file,
                offset,
                reason,
            } => StoreError::Corrupt {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            StoreError::OffsetOutOfRange { offset, min, max } => StoreError::OffsetOutOfRange {
                offset: *offset,
                min: *min,
                max: *max,
            },
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::Config { reason } => StoreError::Config {
                reason: reason.clone(),
            },
            StoreError::Locked { path } => StoreError::Locked { path: path.clone() },
            StoreError::ShutDown => StoreError::ShutDown,
        }
    }
}

/// True when the error means "no space left on the device".
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull
}
