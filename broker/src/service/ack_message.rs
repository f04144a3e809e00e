//! AckMessage: finish deliveries. One result entry per request entry (message id and handle
//! echoed); the top status is their common code, else MULTIPLE_RESULTS. Acks are as durable
//! as messages before the answer: fsynced in Sync flush mode, written in Async.

use rocketlog_proto::v2;

use super::error::{batch_status, ok, ApiError};
use super::handles::ClientHandle;
use super::validate::{self, MAX_ACK_ENTRIES};
use crate::broker::Broker;

pub async fn handle(b: &Broker, req: v2::AckMessageRequest) -> v2::AckMessageResponse {
    match ack(b, req).await {
        Ok(entries) => {
            let status = batch_status(entries.iter().map(|e| e.status.as_ref()));
            v2::AckMessageResponse {
                status: Some(status),
                entries,
            }
        }
        Err(e) => v2::AckMessageResponse {
            status: Some(e.status()),
            entries: Vec::new(),
        },
    }
}

async fn ack(
    b: &Broker,
    req: v2::AckMessageRequest,
) -> Result<Vec<v2::AckMessageResultEntry>, ApiError> {
    let topic = validate::topic(req.topic.as_ref())?;
    let group = validate::group(req.group.as_ref())?;
    if req.entries.is_empty() {
        return Err(ApiError::BadRequest("no entries to acknowledge".into()));
    }
    if req.entries.len() > MAX_ACK_ENTRIES {
        return Err(ApiError::BadRequest(format!(
            "{} entries in one request; the limit is {MAX_ACK_ENTRIES}",
            req.entries.len()
        )));
    }
    let handles: Vec<ClientHandle> = req
        .entries
        .iter()
        .map(|e| ClientHandle::resolve(b, &group, &e.receipt_handle))
        .collect();
    let engine = b.consumption.clone();
    let results = b
        .consumption
        .call(move || {
            // Every renewal entry stays locked while acking (see ClientHandle::current).
            let current: Vec<_> = handles.iter().map(ClientHandle::current).collect();
            let refs: Vec<&str> = current.iter().map(|c| c.as_str()).collect();
            engine.ack_many(&group, &topic, &refs)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("ack task failed: {e}")))?;
    Ok(req
        .entries
        .into_iter()
        .zip(results)
        .map(|(entry, result)| v2::AckMessageResultEntry {
            message_id: entry.message_id,
            receipt_handle: entry.receipt_handle,
            status: Some(match result {
                Ok(()) => ok(),
                Err(e) => ApiError::from(e).status(),
            }),
        })
        .collect())
}
