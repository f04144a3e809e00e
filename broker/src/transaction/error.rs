//! Why a transaction operation failed.

use std::path::PathBuf;

use super::state::Resolution;

/// Failures of transactional messages: client mistakes (unknown or already resolved
/// transactions) and storage failures.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    #[error("transaction {id} is unknown to this broker (never issued, or resolved long ago)")]
    Unknown { id: String },
    #[error("transaction {id} was already {}", .was.as_str())]
    AlreadyResolved { id: String, was: Resolution },
    #[error("transaction {id} belongs to message {expected} of topic {topic:?}, not to {given}")]
    WrongMessage {
        id: String,
        expected: String,
        topic: String,
        given: String,
    },
    #[error("op record is {len} bytes; expected {expected}")]
    OpLength { len: usize, expected: usize },
    #[error("op record has unknown format version {0}")]
    OpVersion(u8),
    #[error("op record has unknown kind {0}")]
    OpKind(u8),
    #[error("half message at {offset} lacks property {property}")]
    HalfProperty { offset: u64, property: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid transaction checkpoint: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] rocketlog_store::StoreError),
}
