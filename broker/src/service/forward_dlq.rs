//! ForwardMessageToDeadLetterQueue: the client gave up on a delivery (FIFO push consumers after
//! their local retries); move it to `%DLQ%<group>` now. Durable before the answer.

use rocketlog_common::names::dlq_topic;
use rocketlog_proto::v2;

use super::error::{ok, ApiError};
use super::handles::ClientHandle;
use super::validate;
use crate::broker::Broker;
use crate::topics::{TopicConfig, TopicError, TopicMessageType};

pub async fn handle(
    b: &Broker,
    req: v2::ForwardMessageToDeadLetterQueueRequest,
) -> v2::ForwardMessageToDeadLetterQueueResponse {
    let status = match forward(b, req).await {
        Ok(()) => ok(),
        Err(e) => e.status(),
    };
    v2::ForwardMessageToDeadLetterQueueResponse {
        status: Some(status),
    }
}

async fn forward(
    b: &Broker,
    req: v2::ForwardMessageToDeadLetterQueueRequest,
) -> Result<(), ApiError> {
    let topic = validate::topic(req.topic.as_ref())?;
    let group = validate::group(req.group.as_ref())?;
    ensure_dlq_topic(b, &group)?;
    let handle = ClientHandle::resolve(b, &group, &req.receipt_handle);
    let engine = b.consumption.clone();
    tokio::task::spawn_blocking(move || {
        let current = handle.current();
        engine.forward_to_dlq(&group, &topic, current.as_str())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("dead-letter task failed: {e}")))?
    .map_err(ApiError::from)
}

/// Registers the group's dead-letter topic (one queue) so it can be routed and consumed.
pub(super) fn ensure_dlq_topic(b: &Broker, group: &str) -> Result<(), ApiError> {
    let name = dlq_topic(group);
    if b.topics.get(&name).is_some() {
        return Ok(());
    }
    match b.topics.create(TopicConfig::new(
        name,
        1,
        [TopicMessageType::Normal, TopicMessageType::Fifo],
    )) {
        Ok(_) | Err(TopicError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
