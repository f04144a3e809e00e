//! Per-request failures of the client API and the one place they become an
//! `apache.rocketmq.v2.Status` (code + human-readable message). Every RPC answers in-band with
//! gRPC OK and this status, as the proxy does.

use rocketlog_proto::v2::{Code, Status};

use crate::consumption::ConsumeError;
use crate::topics::TopicError;

/// Why one request (or one entry of a batch) failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    IllegalTopic(String),
    #[error("{0}")]
    IllegalConsumerGroup(String),
    #[error("{0}")]
    IllegalMessageTag(String),
    #[error("{0}")]
    IllegalMessageKey(String),
    #[error("{0}")]
    IllegalMessageGroup(String),
    #[error("{0}")]
    IllegalPropertyKey(String),
    #[error("message id must not be blank")]
    IllegalMessageId,
    #[error("{0}")]
    IllegalInvisibleTime(String),
    #[error("{0}")]
    IllegalPollingTime(String),
    #[error("{0}")]
    IllegalDeliveryTime(String),
    #[error("{0}")]
    PropertyConflictWithType(String),
    #[error("{0}")]
    MessageCorrupted(String),
    #[error("the x-mq-client-id header is required")]
    ClientIdRequired,
    #[error("{0}")]
    UnrecognizedClientType(String),
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    /// A queue offset outside the range the request allows.
    #[error("illegal offset: {0}")]
    IllegalOffset(String),
    /// No committed offset for the group and queue.
    #[error("offset not found: {0}")]
    OffsetNotFound(String),
    #[error("message body is {size} bytes; the limit is {max}")]
    BodyTooLarge { size: usize, max: usize },
    #[error("message body must not be empty")]
    BodyEmpty,
    #[error("{0}")]
    PropertiesTooLarge(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotImplemented(&'static str),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    #[error(transparent)]
    Store(#[from] rocketlog_store::StoreError),
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// Sync replication: the message is stored on the master but too few slaves are connected.
    #[error("stored on the master, not replicated: {0}")]
    HaNotAvailable(String),
    /// Sync replication: the message is stored on the master; the slaves did not confirm it
    /// in time (it may or may not be on them).
    #[error("stored on the master, maybe not replicated: {0}")]
    SlaveTimeout(String),
}

impl ApiError {
    /// The same replication failure for another entry of a batch (the other variants are
    /// per message and never shared).
    pub fn clone_for_entry(&self) -> ApiError {
        match self {
            ApiError::HaNotAvailable(m) => ApiError::HaNotAvailable(m.clone()),
            ApiError::SlaveTimeout(m) => ApiError::SlaveTimeout(m.clone()),
            other => ApiError::Internal(other.to_string()),
        }
    }

    /// The protocol code of this failure.
    pub fn code(&self) -> Code {
        match self {
            ApiError::BadRequest(_) => Code::BadRequest,
            ApiError::IllegalTopic(_) => Code::IllegalTopic,
            ApiError::IllegalConsumerGroup(_) => Code::IllegalConsumerGroup,
            ApiError::IllegalMessageTag(_) => Code::IllegalMessageTag,
            ApiError::IllegalMessageKey(_) => Code::IllegalMessageKey,
            ApiError::IllegalMessageGroup(_) => Code::IllegalMessageGroup,
            ApiError::IllegalPropertyKey(_) => Code::IllegalMessagePropertyKey,
            ApiError::IllegalMessageId => Code::IllegalMessageId,
            ApiError::IllegalInvisibleTime(_) => Code::IllegalInvisibleTime,
            ApiError::IllegalPollingTime(_) => Code::IllegalPollingTime,
            ApiError::IllegalDeliveryTime(_) => Code::IllegalDeliveryTime,
            ApiError::PropertyConflictWithType(_) => Code::MessagePropertyConflictWithType,
            ApiError::MessageCorrupted(_) => Code::MessageCorrupted,
            ApiError::ClientIdRequired => Code::ClientIdRequired,
            ApiError::UnrecognizedClientType(_) => Code::UnrecognizedClientType,
            ApiError::TopicNotFound(_) => Code::TopicNotFound,
            ApiError::IllegalOffset(_) => Code::IllegalOffset,
            ApiError::OffsetNotFound(_) => Code::OffsetNotFound,
            ApiError::BodyTooLarge { .. } => Code::MessageBodyTooLarge,
            ApiError::BodyEmpty => Code::MessageBodyEmpty,
            ApiError::PropertiesTooLarge(_) => Code::MessagePropertiesTooLarge,
            ApiError::Forbidden(_) => Code::Forbidden,
            ApiError::NotImplemented(_) => Code::NotImplemented,
            ApiError::Unsupported(_) => Code::Unsupported,
            ApiError::Internal(_) => Code::InternalError,
            ApiError::Consume(e) => consume_code(e),
            ApiError::Store(e) => store_code(e),
            ApiError::Topic(e) => topic_code(e),
            ApiError::HaNotAvailable(_) => Code::HaNotAvailable,
            ApiError::SlaveTimeout(_) => Code::SlavePersistenceTimeout,
        }
    }

    /// The in-band status carrying this failure.
    pub fn status(&self) -> Status {
        let code = self.code();
        if code == Code::InternalError {
            tracing::warn!(error = %self, "request failed");
        }
        let message = if self.is_unavailable() {
            // The Apache broker's SERVICE_NOT_AVAILABLE remark, which its proxy passes on.
            format!("service not available now, retry later or elsewhere: {self}")
        } else {
            self.to_string()
        };
        Status {
            code: code as i32,
            message,
        }
    }

    /// The broker cannot take this request now (disk full, store read-only, consumption
    /// state not writable); retrying later, or on another broker, may succeed.
    fn is_unavailable(&self) -> bool {
        let store = |e: &rocketlog_store::StoreError| {
            matches!(
                e,
                rocketlog_store::StoreError::DiskFull { .. }
                    | rocketlog_store::StoreError::ReadOnly { .. }
                    | rocketlog_store::StoreError::Replica
            )
        };
        match self {
            ApiError::Store(e) => store(e),
            ApiError::Consume(ConsumeError::Store(e)) => store(e),
            ApiError::Consume(ConsumeError::JournalFailed { .. }) => true,
            _ => false,
        }
    }
}

fn consume_code(e: &ConsumeError) -> Code {
    match e {
        ConsumeError::InvalidReceiptHandle { .. } => Code::InvalidReceiptHandle,
        ConsumeError::IllegalFilterExpression { .. } => Code::IllegalFilterExpression,
        ConsumeError::IllegalInvisibleTime { .. } => Code::IllegalInvisibleTime,
        ConsumeError::IllegalBatchSize { .. } => Code::BadRequest,
        ConsumeError::NoQueues { .. } => Code::TopicNotFound,
        ConsumeError::Store(s) => store_code(s),
        // Retriable: the journal heals itself once it can write again.
        ConsumeError::JournalFailed { .. } => Code::InternalServerError,
        _ => Code::InternalError,
    }
}

fn store_code(e: &rocketlog_store::StoreError) -> Code {
    use rocketlog_store::StoreError as S;
    match e {
        S::MessageTooLarge { .. } | S::FieldTooLong { .. } => Code::MessagePropertiesTooLarge,
        S::BadTopic(_) => Code::IllegalTopic,
        // What the Apache proxy answers when its broker says SERVICE_NOT_AVAILABLE ("the
        // broker's disk is full, ..."): clients resend to another queue or retry later.
        S::DiskFull { .. } | S::ReadOnly { .. } => Code::InternalServerError,
        // The Apache broker answers a write to a slave with SERVICE_NOT_AVAILABLE too.
        S::Replica => Code::InternalServerError,
        _ => Code::InternalError,
    }
}

fn topic_code(e: &TopicError) -> Code {
    match e {
        TopicError::NotFound { .. } => Code::TopicNotFound,
        TopicError::InvalidName(_) => Code::IllegalTopic,
        TopicError::AlreadyExists { .. }
        | TopicError::InvalidQueueCount { .. }
        | TopicError::NoMessageTypes { .. } => Code::BadRequest,
        TopicError::Io { .. } | TopicError::Corrupt { .. } => Code::InternalError,
    }
}

/// `{OK, "OK"}`.
pub fn ok() -> Status {
    Status {
        code: Code::Ok as i32,
        message: "OK".to_owned(),
    }
}

/// A status with `code` and `message`.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status {
        code: code as i32,
        message: message.into(),
    }
}

/// The top status of a batch answer (send, ack): the entries' common code (with the first
/// entry's message, so a single failure reads the same at the top), else MULTIPLE_RESULTS (the
/// proxy's rule).
pub fn batch_status<'a>(entries: impl IntoIterator<Item = Option<&'a Status>>) -> Status {
    let mut entries = entries.into_iter();
    let Some(first) = entries.next() else {
        return status(Code::BadRequest, "no entries");
    };
    let code_of = |s: Option<&Status>| s.map_or(Code::InternalError as i32, |s| s.code);
    let first_code = code_of(first);
    if entries.all(|s| code_of(s) == first_code) {
        first
            .cloned()
            .unwrap_or_else(|| status(Code::InternalError, "entry without status"))
    } else {
        status(Code::MultipleResults, "MULTIPLE_RESULTS")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_service_unavailable_not_a_permission_problem() {
        let full = ApiError::Store(rocketlog_store::StoreError::DiskFull {
            path: "/data/commitlog/00000000000008388608".into(),
            needed: 8 << 20,
            keep_free: 1 << 20,
            available: 4096,
        });
        let s = full.status();
        assert_eq!(s.code, Code::InternalServerError as i32);
        assert!(
            s.message.starts_with("service not available"),
            "{}",
            s.message
        );
        assert!(s.message.contains("disk full"), "{}", s.message);
        let journal = ApiError::Consume(ConsumeError::JournalFailed {
            reason: "No space left on device".into(),
        });
        assert_eq!(journal.status().code, Code::InternalServerError as i32);
    }

    #[test]
    fn batch_status_rules() {
        let okay = ok();
        let bad = status(Code::InvalidReceiptHandle, "stale");
        assert_eq!(batch_status([Some(&okay), Some(&okay)]), okay);
        assert_eq!(batch_status([Some(&bad)]), bad);
        assert_eq!(
            batch_status([Some(&okay), Some(&bad)]).code,
            Code::MultipleResults as i32
        );
        assert_eq!(batch_status([]).code, Code::BadRequest as i32);
    }
}
