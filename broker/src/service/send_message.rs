//! SendMessage: validate each message, append it to the store, answer once the flush mode is
//! satisfied. One `SendResultEntry` per message, in order, each with its own status; the top
//! status is their common code, else MULTIPLE_RESULTS.

use std::net::SocketAddr;
use std::sync::Arc;

use rocketlog_proto::v2;
use rocketlog_replication::master::SyncError;
use rocketlog_store::{AppendMessage, PendingAppend};
use tonic::Request;

use super::convert::{encode_flags, timestamp_ms, TRACE_CONTEXT_PROPERTY};
use super::error::{batch_status, ok, ApiError};
use super::validate::{self, MAX_MESSAGES_PER_SEND, MAX_USER_PROPERTY_BYTES};
use crate::broker::Broker;
use crate::consumption::MESSAGE_GROUP_PROPERTY;
use crate::metrics::TopicIn;
use crate::topics::{TopicConfig, TopicMessageType};

pub async fn handle(
    b: &Broker,
    request: Request<v2::SendMessageRequest>,
) -> v2::SendMessageResponse {
    let peer = request.remote_addr();
    let req = request.into_inner();
    if req.messages.is_empty() {
        return failed(ApiError::MessageCorrupted("no message to send".into()));
    }
    if req.messages.len() > MAX_MESSAGES_PER_SEND {
        return failed(ApiError::BadRequest(format!(
            "{} messages in one request; the limit is {MAX_MESSAGES_PER_SEND}",
            req.messages.len()
        )));
    }
    // A fenced master (lease lost, or just elected and waiting out its predecessor's)
    // writes nothing.
    if let Err(e) = b.role.check_writable() {
        return failed(ApiError::HaNotAvailable(e.to_string()));
    }
    // A draining broker takes no new sends; those already appended finish normally.
    if b.role.is_draining() {
        return failed(ApiError::HaNotAvailable(
            crate::replication::NotWritable::Draining.to_string(),
        ));
    }
    // Append everything first, then wait for durability once (group commit covers them all).
    let mut pending: Vec<Result<Appended, ApiError>> = Vec::with_capacity(req.messages.len());
    for msg in req.messages {
        pending.push(append(b, msg, peer));
    }
    // In sync replication the slaves' confirmation is awaited alongside the local flush: both
    // cover the whole batch, so one fsync and one slave round trip answer every message.
    let batch_end = pending
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .map(|a| a.pending.result.physical_offset.0 + u64::from(a.pending.result.size))
        .max();
    let replicated = async {
        match batch_end {
            Some(end) => b.role.replicated(end).await.map_err(|e| match e {
                SyncError::TooFewReplicas { .. } => ApiError::HaNotAvailable(e.to_string()),
                SyncError::Timeout { .. } => ApiError::SlaveTimeout(e.to_string()),
            }),
            None => Ok(()),
        }
    };
    let durable = futures::future::join_all(pending.into_iter().map(|p| async move {
        match p {
            Ok(Appended {
                message_id,
                counted,
                pending,
                transaction_id,
                recall_handle,
            }) => Ok((
                pending.durable().await,
                (message_id, transaction_id, recall_handle, counted),
            )),
            Err(e) => Err(e),
        }
    }));
    let (replicated, durable) = tokio::join!(replicated, durable);
    // The lease may have run out while the send waited: then another master may already
    // have been elected without it, and it must not be acknowledged.
    let replicated = replicated.and_then(|()| {
        b.role
            .check_writable()
            .map_err(|e| ApiError::HaNotAvailable(e.to_string()))
    });
    let mut entries = Vec::with_capacity(durable.len());
    for d in durable {
        let entry = match d {
            Ok((Ok(result), (message_id, transaction_id, recall_handle, counted))) => {
                match &replicated {
                    Ok(()) => {
                        if let Some((topic, bytes)) = counted {
                            topic.sent(bytes);
                        }
                        v2::SendResultEntry {
                            status: Some(ok()),
                            message_id,
                            transaction_id,
                            offset: i64::try_from(result.queue_offset.0).unwrap_or(i64::MAX),
                            recall_handle,
                        }
                    }
                    Err(e) => error_entry(e.clone_for_entry()),
                }
            }
            Ok((Err(e), _)) => error_entry(ApiError::Store(e)),
            Err(e) => error_entry(e),
        };
        entries.push(entry);
    }
    let status = batch_status(entries.iter().map(|e| e.status.as_ref()));
    v2::SendMessageResponse {
        status: Some(status),
        entries,
    }
}

fn failed(e: ApiError) -> v2::SendMessageResponse {
    v2::SendMessageResponse {
        status: Some(e.status()),
        entries: Vec::new(),
    }
}

fn error_entry(e: ApiError) -> v2::SendResultEntry {
    v2::SendResultEntry {
        status: Some(e.status()),
        ..Default::default()
    }
}

/// The type a message declares (or implies, when unspecified).
fn message_kind(sys: &v2::SystemProperties) -> Result<TopicMessageType, ApiError> {
    let has_group = sys.message_group.as_deref().is_some_and(|g| !g.is_empty());
    match v2::MessageType::try_from(sys.message_type) {
        Ok(v2::MessageType::Normal) => Ok(TopicMessageType::Normal),
        Ok(v2::MessageType::Fifo) => Ok(TopicMessageType::Fifo),
        Ok(v2::MessageType::Delay) => Ok(TopicMessageType::Delay),
        Ok(v2::MessageType::Transaction) => Ok(TopicMessageType::Transaction),
        Ok(v2::MessageType::Unspecified) => Ok(if has_group {
            TopicMessageType::Fifo
        } else if sys.delivery_timestamp.is_some() {
            TopicMessageType::Delay
        } else {
            TopicMessageType::Normal
        }),
        Ok(v2::MessageType::Lite) => Err(ApiError::Unsupported("lite topics are not supported")),
        Ok(v2::MessageType::Priority) => {
            Err(ApiError::Unsupported("priority messages are not supported"))
        }
        Err(_) => Err(ApiError::BadRequest(format!(
            "unknown message type {}",
            sys.message_type
        ))),
    }
}

/// One appended message, waiting for durability.
struct Appended {
    message_id: String,
    /// The topic's send counters (metrics on) and the body size, counted once acknowledged.
    counted: Option<(Arc<TopicIn>, u64)>,
    pending: PendingAppend,
    /// Non-empty for a transactional (half) message.
    transaction_id: String,
    /// Non-empty for a message that can be recalled (delayed).
    recall_handle: String,
}

/// Refuses what the proxy refuses in a TRANSACTION message (a message group, a delivery time).
fn check_transactional(sys: &v2::SystemProperties) -> Result<(), ApiError> {
    if sys.message_group.as_deref().is_some_and(|g| !g.is_empty()) {
        return Err(ApiError::PropertyConflictWithType(
            "a transactional message cannot have a message group".into(),
        ));
    }
    if sys.delivery_timestamp.is_some() {
        return Err(ApiError::PropertyConflictWithType(
            "a transactional message cannot have a delivery timestamp".into(),
        ));
    }
    Ok(())
}

/// Checks one message and appends it; returns its id and the pending durability.
fn append(b: &Broker, msg: v2::Message, peer: Option<SocketAddr>) -> Result<Appended, ApiError> {
    let topic_name = validate::topic(msg.topic.as_ref())?;
    let sys = msg.system_properties.unwrap_or_default();
    let kind = message_kind(&sys)?;
    match kind {
        TopicMessageType::Delay => {}
        TopicMessageType::Transaction => check_transactional(&sys)?,
        TopicMessageType::Normal | TopicMessageType::Fifo => {}
    }
    let deliver_at = crate::timer::send::delivery_time(&sys, kind, &b.config.timer)?;
    if sys.message_id.trim().is_empty() {
        return Err(ApiError::IllegalMessageId);
    }
    let body: Vec<u8> = msg.body.into();
    if body.is_empty() {
        return Err(ApiError::BodyEmpty);
    }
    if body.len() > b.config.max_body_size {
        return Err(ApiError::BodyTooLarge {
            size: body.len(),
            max: b.config.max_body_size,
        });
    }
    let tag = sys.tag.clone().unwrap_or_default();
    validate::tag(&tag)?;
    let mut property_bytes = validate::user_properties(&msg.user_properties)?;
    property_bytes = property_bytes.saturating_add(tag.len());
    for k in &sys.keys {
        validate::key(k)?;
        property_bytes = property_bytes.saturating_add(k.len());
    }
    if property_bytes > MAX_USER_PROPERTY_BYTES {
        return Err(ApiError::PropertiesTooLarge(format!(
            "user properties, tag and keys take {property_bytes} bytes; the limit is {MAX_USER_PROPERTY_BYTES}"
        )));
    }
    let group = sys.message_group.clone().filter(|g| !g.is_empty());
    match (kind, &group) {
        (TopicMessageType::Fifo, None) => {
            return Err(ApiError::PropertyConflictWithType(
                "a FIFO message needs a message group".into(),
            ))
        }
        (TopicMessageType::Normal, Some(_)) => {
            return Err(ApiError::PropertyConflictWithType(
                "a NORMAL message cannot have a message group; send it as FIFO".into(),
            ))
        }
        (_, Some(g)) => validate::message_group(g)?,
        _ => {}
    }
    let topic = b.topics.get_or_create(&topic_name, &[kind])?;
    if !topic.permission.writable() {
        return Err(ApiError::Forbidden(format!(
            "topic {topic_name:?} is not writable"
        )));
    }
    if !topic.accepts(kind) {
        let accepted: Vec<&str> = topic.message_types.iter().map(|t| t.as_str()).collect();
        return Err(ApiError::PropertyConflictWithType(format!(
            "topic {topic_name:?} accepts {} messages, not {}",
            accepted.join("/"),
            kind.as_str()
        )));
    }
    let queue_id = pick_queue(b, &topic, group.as_deref());

    let mut properties: Vec<(String, String)> = msg.user_properties.into_iter().collect();
    // A stable order keeps the stored record independent of hash-map iteration.
    properties.sort();
    if let Some(g) = &group {
        properties.push((MESSAGE_GROUP_PROPERTY.to_owned(), g.clone()));
    }
    if let Some(tc) = sys.trace_context.as_ref().filter(|t| !t.is_empty()) {
        properties.push((TRACE_CONTEXT_PROPERTY.to_owned(), tc.clone()));
    }
    let born_host = if sys.born_host.trim().is_empty() {
        peer.map(|p| p.ip().to_string()).unwrap_or_default()
    } else {
        sys.born_host.clone()
    };
    let born_timestamp_ms = sys
        .born_timestamp
        .as_ref()
        .and_then(timestamp_ms)
        .unwrap_or_else(now_ms);
    let gzip = sys.body_encoding == v2::Encoding::Gzip as i32;
    let counted = b
        .metrics
        .topic_in(&topic_name)
        .map(|t| (t, body.len() as u64));
    let append = AppendMessage {
        topic: topic_name,
        queue_id,
        flags: encode_flags(kind, gzip),
        tag: Some(tag).filter(|t| !t.is_empty()),
        keys: sys.keys.into_iter().filter(|k| !k.is_empty()).collect(),
        message_id: sys.message_id.clone(),
        born_timestamp_ms,
        born_host,
        store_host: b.store_host.clone(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        properties,
        body,
    };
    if kind == TopicMessageType::Transaction {
        // Stored as a hidden half message until EndTransaction (or a check) resolves it.
        let (pending, transaction_id) = b
            .transactions
            .prepare(append, sys.orphaned_transaction_recovery_duration.as_ref())?;
        return Ok(Appended {
            message_id: sys.message_id,
            counted,
            pending,
            transaction_id,
            recall_handle: String::new(),
        });
    }
    if let Some(deliver_ms) = deliver_at {
        // Held by the timer until its time; the handle lets the producer recall it.
        let (pending, recall_handle) = b.timer.schedule(append, deliver_ms)?;
        return Ok(Appended {
            message_id: sys.message_id,
            counted,
            pending,
            transaction_id: String::new(),
            recall_handle,
        });
    }
    let pending = b.store.append(append)?;
    Ok(Appended {
        message_id: sys.message_id,
        counted,
        pending,
        transaction_id: String::new(),
        recall_handle: String::new(),
    })
}

/// The queue for a message, chosen as the Apache proxy chooses it: a message group always maps
/// to the same queue (`queue_for_group`, the proxy's hash), other messages go round robin.
/// The message's own `queue_id` is not a choice: proto3 cannot tell an explicit 0 from unset,
/// and clients that never set it (Python, Node) would put every message in queue 0.
fn pick_queue(b: &Broker, topic: &TopicConfig, group: Option<&str>) -> u32 {
    match group {
        Some(g) => rocketlog_common::queue_for_group(g, topic.queue_count),
        None => b.next_queue(topic.queue_count),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
