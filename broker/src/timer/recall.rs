//! RecallMessage: cancels a pending delayed message by the handle its send returned. The
//! cancellation is a tombstone in the commit log, so it survives restarts.

use rocketlog_proto::v2::{self, Code};

use super::RecallError;
use crate::broker::Broker;
use crate::service::error::{ok, status, ApiError};
use crate::service::validate;

pub async fn handle(b: &Broker, req: v2::RecallMessageRequest) -> v2::RecallMessageResponse {
    let failed = |s: v2::Status| v2::RecallMessageResponse {
        status: Some(s),
        message_id: String::new(),
    };
    let topic = match validate::topic(req.topic.as_ref()) {
        Ok(t) => t,
        Err(e) => return failed(e.status()),
    };
    let (message_id, pending) =
        match b
            .timer
            .recall(&topic, req.recall_handle.trim(), b.endpoint.address())
        {
            Ok(r) => r,
            Err(e) => return failed(recall_status(e)),
        };
    if let Err(e) = pending.durable().await {
        return failed(ApiError::Store(e).status());
    }
    tracing::debug!(%topic, %message_id, "delayed message recalled");
    v2::RecallMessageResponse {
        status: Some(ok()),
        message_id,
    }
}

fn recall_status(e: RecallError) -> v2::Status {
    match e {
        RecallError::Store(s) => ApiError::Store(s).status(),
        e @ (RecallError::BadHandle | RecallError::WrongTopic { .. }) => {
            status(Code::BadRequest, e.to_string())
        }
        e @ RecallError::AlreadyDelivered { .. } => status(Code::NotFound, e.to_string()),
    }
}
