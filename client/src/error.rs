//! The one error type of the SDK.

use std::time::Duration;

pub use rocketlog_proto::v2::Code;

/// Everything that can go wrong in this crate.
///
/// Errors the server reports in-band (a non-OK `Status`) arrive as [`Error::Server`] with the
/// server's [`Code`] and message; [`Error::code`] reads it from any variant.
///
/// ```no_run
/// use rocketlog_client::{ClientConfig, Code, Error, Message, Producer};
///
/// # async fn demo() -> Result<(), Error> {
/// let producer = Producer::builder(ClientConfig::new("127.0.0.1:8081")?).build().await?;
/// match producer.send(Message::builder("orders").body("x").build()?).await {
///     Ok(receipt) => println!("stored at offset {}", receipt.offset()),
///     Err(e) if e.code() == Some(Code::TopicNotFound) => eprintln!("create the topic first"),
///     Err(e) if e.is_retryable() => eprintln!("the producer already retried; later: {e}"),
///     Err(e) => return Err(e),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration or builder value was refused before anything was sent.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The message cannot be sent as built.
    #[error("invalid message: {0}")]
    InvalidMessage(String),

    /// The body is larger than the server's limit (from the settings handshake).
    #[error("message body of {size} bytes exceeds the server's limit of {max} bytes")]
    BodyTooLarge {
        /// Body size.
        size: usize,
        /// The limit.
        max: usize,
    },

    /// The server answered with a non-OK status.
    #[error("{endpoint}: {code:?} ({}): {message}", code_number(.code))]
    Server {
        /// The status code (`Unspecified` when the server sent a number this SDK does not
        /// know; the message then names it).
        code: Code,
        /// The server's message.
        message: String,
        /// Which endpoint answered.
        endpoint: String,
    },

    /// The call failed below the RocketMQ protocol (connection refused, reset, gRPC error).
    #[error("{endpoint}: rpc failed: {status}")]
    Rpc {
        /// The gRPC status.
        status: tonic::Status,
        /// Which endpoint was called.
        endpoint: String,
    },

    /// A channel to an endpoint could not be set up.
    #[error("{endpoint}: cannot connect: {source}")]
    Connect {
        /// What failed.
        source: tonic::transport::Error,
        /// Which endpoint.
        endpoint: String,
    },

    /// No answer within the time limit.
    #[error("{endpoint}: {operation} timed out after {timeout:?}")]
    Timeout {
        /// The RPC or step.
        operation: &'static str,
        /// The limit that passed.
        timeout: Duration,
        /// Which endpoint was called.
        endpoint: String,
    },

    /// The server's answer breaks the protocol (missing status, wrong number of entries...).
    #[error("{endpoint}: malformed response: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
        /// Which endpoint answered.
        endpoint: String,
    },

    /// The broker answered a batch send with send results that cannot be matched to the
    /// batch's messages: neither one result per message nor one result for the whole batch
    /// naming one id per message (comma-separated) or a single id for the batch. The broker
    /// may have stored the messages, so sending them again may duplicate them; not retried.
    #[error("{endpoint}: the answer to a batch of {messages} messages names {ids} message ids in {entries} send results")]
    BatchReceiptMismatch {
        /// Messages in the batch.
        messages: usize,
        /// Send results in the answer.
        entries: usize,
        /// Message ids those results name.
        ids: usize,
        /// Which endpoint answered.
        endpoint: String,
    },

    /// The route of a topic has no queue usable for the operation.
    #[error("topic {topic}: {reason}")]
    NoRoute {
        /// The topic.
        topic: String,
        /// Why no queue fits.
        reason: String,
    },

    /// The client was shut down.
    #[error("the client is shut down")]
    Shutdown,
}

fn code_number(code: &Code) -> i32 {
    *code as i32
}

impl Error {
    /// The server's code, when the server reported one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether sending again (to another queue or broker, after a pause) may succeed: network
    /// failures, timeouts, throttling, and server-side failures that are not about the request.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Rpc { status, .. } => !matches!(
                status.code(),
                tonic::Code::InvalidArgument
                    | tonic::Code::Unimplemented
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
                    | tonic::Code::OutOfRange
            ),
            Error::Connect { .. } | Error::Timeout { .. } => true,
            Error::Server { code, .. } => matches!(
                code,
                Code::TooManyRequests
                    | Code::RequestTimeout
                    | Code::InternalError
                    | Code::InternalServerError
                    | Code::HaNotAvailable
                    | Code::ProxyTimeout
                    | Code::MasterPersistenceTimeout
                    | Code::SlavePersistenceTimeout
                    | Code::TopicNotFound
                    | Code::NotFound
            ),
            _ => false,
        }
    }

    /// Whether the server asked the client to slow down.
    pub fn is_throttled(&self) -> bool {
        self.code() == Some(Code::TooManyRequests)
    }

    /// Whether the client's view of the topic's route may be stale (refresh it).
    pub(crate) fn suggests_route_refresh(&self) -> bool {
        match self {
            Error::Rpc { status, .. } => status.code() == tonic::Code::Unavailable,
            Error::Connect { .. } => true,
            Error::Server { code, .. } => {
                matches!(code, Code::TopicNotFound | Code::NotFound | Code::Forbidden)
            }
            _ => false,
        }
    }

    /// `Ok` for OK and MULTIPLE_RESULTS; the server's error otherwise, or a protocol error when
    /// the status is missing.
    pub(crate) fn from_status(
        status: Option<&rocketlog_proto::v2::Status>,
        endpoint: &impl std::fmt::Display,
    ) -> Result<(), Error> {
        let Some(status) = status else {
            return Err(Error::Protocol {
                reason: "response without a status".into(),
                endpoint: endpoint.to_string(),
            });
        };
        match Code::try_from(status.code) {
            Ok(Code::Ok | Code::MultipleResults) => Ok(()),
            Ok(code) => Err(Error::Server {
                code,
                message: status.message.clone(),
                endpoint: endpoint.to_string(),
            }),
            Err(_) => Err(Error::Server {
                code: Code::Unspecified,
                message: format!("(unknown code {}) {}", status.code, status.message),
                endpoint: endpoint.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketlog_proto::v2::Status;

    fn status(code: i32, message: &str) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    #[test]
    fn ok_statuses_pass() {
        assert!(Error::from_status(Some(&status(Code::Ok as i32, "OK")), &"e").is_ok());
        assert!(Error::from_status(Some(&status(30000, "")), &"e").is_ok());
    }

    #[test]
    fn errors_carry_the_code_and_message() {
        let e =
            Error::from_status(Some(&status(40402, "no such topic")), &"127.0.0.1:1").unwrap_err();
        assert_eq!(e.code(), Some(Code::TopicNotFound));
        let text = e.to_string();
        assert!(
            text.contains("40402") && text.contains("no such topic"),
            "{text}"
        );
        assert!(e.is_retryable());
        assert!(e.suggests_route_refresh());

        let e = Error::from_status(Some(&status(40000, "bad")), &"e").unwrap_err();
        assert!(!e.is_retryable());
        let e = Error::from_status(Some(&status(42900, "slow down")), &"e").unwrap_err();
        assert!(e.is_throttled() && e.is_retryable());
    }

    #[test]
    fn missing_or_unknown_statuses() {
        let e = Error::from_status(None, &"e").unwrap_err();
        assert!(matches!(e, Error::Protocol { .. }));
        let e = Error::from_status(Some(&status(12345, "odd")), &"e").unwrap_err();
        assert_eq!(e.code(), Some(Code::Unspecified));
        assert!(e.to_string().contains("12345"));
    }
}
