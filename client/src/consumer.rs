//! Calls shared by the consumers: long-polling receive, ack, change of invisible duration,
//! dead-lettering.

use std::time::Duration;

use rocketlog_proto::v2;
use rocketlog_proto::v2::receive_message_response::Content;

use crate::convert::{duration_to_proto, message_view_from_proto, queue_to_proto, resource};
use crate::core::ClientCore;
use crate::endpoints::Endpoints;
use crate::error::{Code, Error};
use crate::message::MessageView;
use crate::route::MessageQueue;
use crate::rpc::rpc_error;
use crate::settings::FilterExpression;

/// One ReceiveMessage call.
pub(crate) struct ReceiveRequest<'a> {
    pub(crate) queue: &'a MessageQueue,
    pub(crate) filter: &'a FilterExpression,
    pub(crate) batch_size: u32,
    /// `None` asks the server to keep renewing it (push consumers).
    pub(crate) invisible_duration: Option<Duration>,
    pub(crate) long_polling: Duration,
    pub(crate) attempt_id: Option<String>,
}

/// Long-polls one queue. `MESSAGE_NOT_FOUND` is an empty result.
pub(crate) async fn receive(
    core: &ClientCore,
    r: ReceiveRequest<'_>,
) -> Result<Vec<MessageView>, Error> {
    let endpoints = &r.queue.broker.endpoints;
    let request = v2::ReceiveMessageRequest {
        group: core.group_resource(),
        message_queue: Some(queue_to_proto(r.queue, core.namespace())),
        filter_expression: Some(r.filter.to_proto()),
        batch_size: i32::try_from(r.batch_size).unwrap_or(i32::MAX),
        invisible_duration: r.invisible_duration.map(duration_to_proto),
        auto_renew: r.invisible_duration.is_none(),
        long_polling_timeout: Some(duration_to_proto(r.long_polling)),
        attempt_id: r.attempt_id,
    };
    let timeout = r.long_polling + core.request_timeout();
    let span = tracing::debug_span!("rpc", method = "ReceiveMessage", endpoint = %endpoints, queue = r.queue.id);
    let call = async {
        let mut stub = core.rpc.stub(endpoints)?;
        let request = core.rpc.request(request, Some(timeout));
        let mut stream = stub
            .receive_message(request)
            .await
            .map_err(|s| rpc_error(s, endpoints))?
            .into_inner();
        let mut status = None;
        let mut messages = Vec::new();
        while let Some(item) = stream
            .message()
            .await
            .map_err(|s| rpc_error(s, endpoints))?
        {
            match item.content {
                Some(Content::Status(s)) => status = Some(s),
                Some(Content::Message(m)) => {
                    messages.push(message_view_from_proto(m, Some(endpoints.clone())))
                }
                Some(Content::DeliveryTimestamp(_)) | None => {}
            }
        }
        Ok::<_, Error>((status, messages))
    };
    let (status, messages) =
        match tokio::time::timeout(timeout, tracing::Instrument::instrument(call, span)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Timeout {
                    operation: "ReceiveMessage",
                    timeout,
                    endpoint: endpoints.to_string(),
                })
            }
        };
    match status {
        Some(s) if s.code == Code::MessageNotFound as i32 => Ok(Vec::new()),
        Some(s) => Error::from_status(Some(&s), endpoints).map(|()| messages),
        None if !messages.is_empty() => Ok(messages),
        None => Err(Error::Protocol {
            reason: "receive stream ended without a status".into(),
            endpoint: endpoints.to_string(),
        }),
    }
}

fn endpoints_of(message: &MessageView) -> Result<&Endpoints, Error> {
    message
        .endpoints
        .as_ref()
        .ok_or_else(|| Error::InvalidMessage("this message was not received by a consumer".into()))
}

/// Acknowledges one delivery.
pub(crate) async fn ack(core: &ClientCore, message: &MessageView) -> Result<(), Error> {
    let endpoints = endpoints_of(message)?;
    let request = v2::AckMessageRequest {
        group: core.group_resource(),
        topic: Some(resource(core.namespace(), &message.topic)),
        entries: vec![v2::AckMessageEntry {
            message_id: message.message_id.clone(),
            receipt_handle: message.receipt_handle.clone(),
            ..Default::default()
        }],
    };
    let response = core
        .rpc
        .unary(
            endpoints,
            "AckMessage",
            request,
            core.request_timeout(),
            |mut stub, r| async move { stub.ack_message(r).await },
        )
        .await?;
    Error::from_status(response.status.as_ref(), endpoints)?;
    for entry in &response.entries {
        Error::from_status(entry.status.as_ref(), endpoints)?;
    }
    Ok(())
}

/// Hides the message for `duration` from now, and takes the new receipt handle.
pub(crate) async fn change_invisible_duration(
    core: &ClientCore,
    message: &mut MessageView,
    duration: Duration,
) -> Result<(), Error> {
    let endpoints = endpoints_of(message)?.clone();
    let request = v2::ChangeInvisibleDurationRequest {
        group: core.group_resource(),
        topic: Some(resource(core.namespace(), &message.topic)),
        receipt_handle: message.receipt_handle.clone(),
        invisible_duration: Some(duration_to_proto(duration)),
        message_id: message.message_id.clone(),
        ..Default::default()
    };
    let response = core
        .rpc
        .unary(
            &endpoints,
            "ChangeInvisibleDuration",
            request,
            core.request_timeout(),
            |mut stub, r| async move { stub.change_invisible_duration(r).await },
        )
        .await?;
    Error::from_status(response.status.as_ref(), &endpoints)?;
    if !response.receipt_handle.is_empty() {
        message.receipt_handle = response.receipt_handle;
    }
    Ok(())
}

/// Moves a message that exhausted its attempts to the group's dead-letter queue.
pub(crate) async fn forward_to_dead_letter_queue(
    core: &ClientCore,
    message: &MessageView,
    max_attempts: u32,
) -> Result<(), Error> {
    let endpoints = endpoints_of(message)?;
    let request = v2::ForwardMessageToDeadLetterQueueRequest {
        group: core.group_resource(),
        topic: Some(resource(core.namespace(), &message.topic)),
        receipt_handle: message.receipt_handle.clone(),
        message_id: message.message_id.clone(),
        delivery_attempt: i32::try_from(message.delivery_attempt).unwrap_or(i32::MAX),
        max_delivery_attempts: i32::try_from(max_attempts).unwrap_or(i32::MAX),
        ..Default::default()
    };
    let response = core
        .rpc
        .unary(
            endpoints,
            "ForwardMessageToDeadLetterQueue",
            request,
            core.request_timeout(),
            |mut stub, r| async move { stub.forward_message_to_dead_letter_queue(r).await },
        )
        .await?;
    Error::from_status(response.status.as_ref(), endpoints)
}
