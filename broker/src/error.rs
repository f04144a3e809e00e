//! The broker's process-level error: what can stop it from starting or end it.
//! Per-request failures are `service::ApiError`, mapped to `apache.rocketmq.v2.Code` there.

use std::path::PathBuf;

use crate::consumption::ConsumeError;
use crate::topics::TopicError;

/// Why the broker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Replication could not start (its epoch file, its settings).
    #[error("replication: {0}")]
    Replication(String),

    /// A configuration field is invalid.
    #[error("invalid broker config `{field}`: {reason}")]
    Config { field: &'static str, reason: String },

    /// The storage engine failed to open or shut down.
    #[error("store: {0}")]
    Store(#[from] rocketlog_store::StoreError),

    /// The consumption engine failed to open or shut down.
    #[error("consumption state: {0}")]
    Consumption(#[from] ConsumeError),

    /// The transaction state could not be rebuilt or saved.
    #[error("transactions: {0}")]
    Transactions(#[from] crate::transaction::TransactionError),

    /// The delayed-message timer could not be rebuilt or saved.
    #[error("timer: {0}")]
    Timer(#[from] crate::timer::TimerError),

    /// The topic table could not be read or written.
    #[error("topic table: {0}")]
    Topics(#[from] TopicError),

    /// The TLS certificate or key could not be loaded or generated.
    #[error("tls: {reason}")]
    Tls { reason: String },

    /// A file or socket operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A background or blocking task panicked or was cancelled.
    #[error("task failed: {0}")]
    Task(String),

    /// The gRPC reflection service could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(String),

    /// The user file could not be read.
    #[error("users: {0}")]
    Auth(String),

    /// The listener has no usable local address.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
}
