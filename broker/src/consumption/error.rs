//! The one error type of the consumption engine. The gRPC layer maps each variant to an
//! `apache.rocketmq.v2.Code` (noted per variant).

use std::path::PathBuf;
use std::time::Duration;

use rocketlog_store::StoreError;

/// Why a consumption call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// Unknown, stale (already acked, redelivered or changed) or malformed receipt handle.
    /// Maps to INVALID_RECEIPT_HANDLE.
    #[error("invalid receipt handle: {reason}")]
    InvalidReceiptHandle { reason: &'static str },

    /// The tag expression cannot be parsed. Maps to ILLEGAL_FILTER_EXPRESSION.
    #[error("illegal filter expression {expression:?}: {reason}")]
    IllegalFilterExpression { expression: String, reason: String },

    /// Invisible duration outside the accepted range. Maps to ILLEGAL_INVISIBLE_TIME.
    #[error("illegal invisible duration {requested:?}; accepted range is {min:?}..={max:?}")]
    IllegalInvisibleTime {
        requested: Duration,
        min: Duration,
        max: Duration,
    },

    /// A receive asked for zero messages or more than the limit. Maps to BAD_REQUEST.
    #[error("illegal batch size {requested}; accepted range is 1..={max}")]
    IllegalBatchSize { requested: usize, max: usize },

    /// The topic has no queues on this broker (queue_count 0). Maps to TOPIC_NOT_FOUND.
    #[error("topic {topic:?} has no queues")]
    NoQueues { topic: String },

    /// The storage engine failed. Maps to INTERNAL_ERROR (or the store error's own code).
    #[error("store: {0}")]
    Store(#[from] StoreError),

    /// Reading or writing the consumption state directory failed. Maps to INTERNAL_ERROR.
    #[error("consumption state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A state file failed validation before its end (not a torn tail). Maps to INTERNAL_ERROR.
    #[error("consumption state {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// A write or fsync of the state journal failed (e.g. the disk is full). State changes are
    /// refused until the engine repairs the journal by itself, which it tries at most once a
    /// second. Maps to INTERNAL_SERVER_ERROR (retriable).
    #[error(
        "consumption state cannot be saved ({reason}); state changes resume by themselves \
         once it can be written again"
    )]
    JournalFailed { reason: String },

    /// A state image given to `Consumption::install_state` (a master's copy, shipped over
    /// replication) failed validation; nothing was changed. Maps to INTERNAL_ERROR.
    #[error("invalid consumption state image: {reason}")]
    InvalidStateImage { reason: &'static str },

    /// The engine was shut down. Maps to INTERNAL_ERROR.
    #[error("consumption engine is shut down")]
    ShutDown,
}

impl ConsumeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConsumeError::Io {
            path: path.into(),
            source,
        }
    }
}
