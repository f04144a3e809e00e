//! RPCs rocketlog does not serve yet: each answers with a typed status and a message saying
//! what is missing (never a fake success).

use rocketlog_proto::v2;
use tokio_stream::wrappers::ReceiverStream;

use super::error::status;

pub fn pull_consumers() -> v2::Status {
    status(
        v2::Code::NotImplemented,
        "pull consumers (PullMessage and the offset RPCs) are not supported yet",
    )
}

pub fn lite_topics() -> v2::Status {
    status(v2::Code::Unsupported, "lite topics are not supported")
}

/// A PullMessage stream carrying only the not-implemented status.
pub fn pull_message() -> ReceiverStream<Result<v2::PullMessageResponse, tonic::Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // The channel has room for this one item, so try_send cannot fail.
    let _ = tx.try_send(Ok(v2::PullMessageResponse {
        content: Some(v2::pull_message_response::Content::Status(pull_consumers())),
    }));
    ReceiverStream::new(rx)
}
