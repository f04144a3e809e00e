//! Pull consumers: PullMessage (server stream), UpdateOffset, GetOffset and QueryOffset.
//!
//! A pull consumer reads a queue it picked by offset, as a Kafka consumer reads a partition,
//! and keeps its position itself; it may commit the position to the broker per group and
//! queue. That committed offset is the group's committed offset in the consumption engine
//! (journaled and fsynced like an ack, shipped to slaves, kept across restarts), so a group
//! can move between pull and simple/push consumption and a reset by time applies to both.
//!
//! PullMessage writes `status`, then up to `batch_size` messages in queue order, then
//! `next_offset` (where the next pull starts: past every entry examined, filtered-out ones
//! included). Nothing at the offset yet: it long-polls up to the request's (bounded) wait and
//! answers `MESSAGE_NOT_FOUND` with `next_offset`. An offset outside the queue's retained
//! range answers `ILLEGAL_OFFSET` with the nearest valid offset as `next_offset`.
//!
//! Reads follow writes: a pull or offset RPC first waits (briefly, bounded) for every append
//! acknowledged before it to reach the consume queues, so a message whose send was answered
//! is seen by a pull or an `END` query made afterwards.

use std::sync::Arc;
use std::time::Duration;

use rocketlog_proto::v2;
use rocketlog_store::QueueOffset;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::convert::{delivered_message, duration, timestamp_ms};
use super::error::{ok, status, ApiError};
use super::polling::{grpc_timeout, polling_time, PollingLimits};
use super::validate;
use crate::broker::Broker;
use crate::consumption::FilterExpression;
use crate::metrics::RpcTimer;
use crate::topics::TopicConfig;

/// Most messages one pull returns.
pub const MAX_PULL_BATCH: usize = 1024;
/// Request timeout assumed for clients that sent no settings.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

type Item = Result<v2::PullMessageResponse, Status>;

/// A validated PullMessage.
struct Pull {
    /// The consumer group (labels the delivery metrics).
    group: String,
    topic: String,
    queue_id: u32,
    offset: u64,
    batch_size: usize,
    filter: FilterExpression,
    wait: Duration,
}

/// `timing` is dropped when the response stream ends (the RPC's latency includes the poll).
pub fn pull_message(
    b: Arc<Broker>,
    request: Request<v2::PullMessageRequest>,
    timing: RpcTimer,
) -> ReceiverStream<Item> {
    let remaining = grpc_timeout(&request.metadata().clone().into_headers());
    let client = super::client_id(request.metadata());
    let req = request.into_inner();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let _timing = timing;
        match plan(&b, req, client.as_deref(), remaining) {
            Ok(pull) => run(&b, pull, &tx).await,
            Err((e, next)) => {
                let _ = tx
                    .send(Ok(content(v2::pull_message_response::Content::Status(
                        e.status(),
                    ))))
                    .await;
                if let Some(next) = next {
                    let _ = tx.send(Ok(next_offset(next))).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

fn content(c: v2::pull_message_response::Content) -> v2::PullMessageResponse {
    v2::PullMessageResponse { content: Some(c) }
}

fn next_offset(offset: u64) -> v2::PullMessageResponse {
    content(v2::pull_message_response::Content::NextOffset(
        i64::try_from(offset).unwrap_or(i64::MAX),
    ))
}

/// The readable topic and queue a request names.
fn queue_of(
    b: &Broker,
    queue: Option<&v2::MessageQueue>,
) -> Result<(String, u32, Arc<TopicConfig>), ApiError> {
    let queue = queue.ok_or_else(|| ApiError::BadRequest("no message queue given".into()))?;
    let topic = validate::topic(queue.topic.as_ref())?;
    let config = b
        .topics
        .get(&topic)
        .ok_or_else(|| ApiError::TopicNotFound(topic.clone()))?;
    if !config.permission.readable() {
        return Err(ApiError::Forbidden(format!(
            "topic {topic:?} is not readable"
        )));
    }
    let queue_id = u32::try_from(queue.id)
        .ok()
        .filter(|id| *id < config.queue_count)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "queue {} does not exist: topic {topic:?} has queues 0..{}",
                queue.id, config.queue_count
            ))
        })?;
    Ok((topic, queue_id, config))
}

type Refusal = (ApiError, Option<u64>);

fn plan(
    b: &Broker,
    req: v2::PullMessageRequest,
    client: Option<&str>,
    remaining: Option<Duration>,
) -> Result<Pull, Refusal> {
    let group = validate::group(req.group.as_ref()).map_err(|e| (e, None))?;
    let (topic, queue_id, _) = queue_of(b, req.message_queue.as_ref()).map_err(|e| (e, None))?;
    if req.batch_size <= 0 {
        return Err((
            ApiError::BadRequest(format!("batch size {} must be positive", req.batch_size)),
            None,
        ));
    }
    let batch_size = usize::try_from(req.batch_size)
        .unwrap_or(usize::MAX)
        .min(MAX_PULL_BATCH);
    let filter = match req.filter_expression {
        Some(f) if f.r#type == v2::FilterType::Sql as i32 => {
            return Err((
                ApiError::Consume(crate::consumption::ConsumeError::IllegalFilterExpression {
                    expression: f.expression,
                    reason: "SQL92 filtering is not supported; use a TAG expression".into(),
                }),
                None,
            ))
        }
        Some(f) => FilterExpression::parse(&f.expression).map_err(|e| (e.into(), None))?,
        None => FilterExpression::All,
    };
    let r = &b.config.receive;
    let request_timeout = client
        .and_then(|c| b.clients.get(c))
        .map_or(DEFAULT_REQUEST_TIMEOUT, |c| c.request_timeout);
    let limits = PollingLimits {
        // A pull may ask not to wait at all.
        min: Duration::ZERO,
        max: Duration::from_millis(r.max_long_polling_ms),
    };
    let requested = Some(
        req.long_polling_timeout
            .as_ref()
            .and_then(duration)
            .unwrap_or_default(),
    );
    let wait =
        polling_time(requested, remaining, request_timeout, limits).unwrap_or(Duration::ZERO);
    let (min, max) = b.store.queue_range(&topic, queue_id);
    let offset = u64::try_from(req.offset).map_err(|_| {
        (
            ApiError::IllegalOffset(format!("offset {} is negative", req.offset)),
            Some(min.0),
        )
    })?;
    if offset < min.0 {
        return Err((
            ApiError::IllegalOffset(format!(
                "offset {offset} of queue {queue_id} of {topic:?} is gone: the oldest retained is {}",
                min.0
            )),
            Some(min.0),
        ));
    }
    if offset > max.0 {
        return Err((
            ApiError::IllegalOffset(format!(
                "offset {offset} of queue {queue_id} of {topic:?} is past its end {}",
                max.0
            )),
            Some(max.0),
        ));
    }
    Ok(Pull {
        group,
        topic,
        queue_id,
        offset,
        batch_size,
        filter,
        wait,
    })
}

/// Longest a pull or offset query waits for acknowledged appends to reach the consume queues.
const VISIBLE_WAIT: Duration = Duration::from_secs(1);

/// Waits until every append acknowledged before this call is in the consume queues, so a pull
/// or an offset query made after a send's acknowledgement sees that message. Dispatch trails
/// the append by microseconds; the wait is bounded in case the dispatcher is stalled (the
/// answer then reflects what is dispatched).
async fn acknowledged_visible(b: &Broker) {
    let (_, written) = b.store.log_range();
    let mut dispatched = b.store.dispatched();
    let _ = tokio::time::timeout(VISIBLE_WAIT, dispatched.wait_for(|d| *d >= written)).await;
}

async fn run(b: &Broker, pull: Pull, tx: &mpsc::Sender<Item>) {
    let until = Instant::now() + pull.wait;
    acknowledged_visible(b).await;
    let mut dispatched = b.store.dispatched();
    let mut offset = pull.offset;
    let found = loop {
        dispatched.borrow_and_update();
        let read = b.store.read_queue(
            &pull.topic,
            pull.queue_id,
            QueueOffset(offset),
            pull.batch_size,
            &|hash| pull.filter.matches_hash(hash),
        );
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                let e = ApiError::from(e);
                let _ = tx
                    .send(Ok(content(v2::pull_message_response::Content::Status(
                        e.status(),
                    ))))
                    .await;
                let _ = tx.send(Ok(next_offset(offset))).await;
                return;
            }
        };
        offset = read.next_offset.0;
        let messages: Vec<_> = read
            .messages
            .into_iter()
            // The store filters by tag hash; a hash collision is caught here.
            .filter(|m| pull.filter.matches_tag(m.tag.as_deref()))
            .collect();
        if !messages.is_empty() {
            break messages;
        }
        if offset < read.max_offset.0 {
            // Everything read was filtered out and more is stored: keep reading.
            continue;
        }
        tokio::select! {
            changed = dispatched.changed() => {
                if changed.is_err() {
                    break Vec::new();
                }
            }
            () = tokio::time::sleep_until(until) => break Vec::new(),
            () = tx.closed() => return,
            () = b.shutdown.cancelled() => break Vec::new(),
        }
    };
    let head = if found.is_empty() {
        status(v2::Code::MessageNotFound, "no new message")
    } else {
        ok()
    };
    if tx
        .send(Ok(content(v2::pull_message_response::Content::Status(
            head,
        ))))
        .await
        .is_err()
    {
        return;
    }
    let (mut sent, mut sent_bytes) = (0u64, 0u64);
    for m in &found {
        let message = delivered_message(m, None);
        if tx
            .send(Ok(content(v2::pull_message_response::Content::Message(
                message,
            ))))
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
        sent_bytes += m.body.len() as u64;
    }
    b.metrics
        .delivered(&pull.topic, &pull.group, sent, sent_bytes);
    if sent < found.len() as u64 {
        return;
    }
    let _ = tx.send(Ok(next_offset(offset))).await;
}

pub async fn update_offset(b: &Broker, req: v2::UpdateOffsetRequest) -> v2::UpdateOffsetResponse {
    v2::UpdateOffsetResponse {
        status: Some(match commit(b, req).await {
            Ok(()) => ok(),
            Err(e) => e.status(),
        }),
    }
}

async fn commit(b: &Broker, req: v2::UpdateOffsetRequest) -> Result<(), ApiError> {
    let group = validate::group(req.group.as_ref())?;
    let (topic, queue_id, _) = queue_of(b, req.message_queue.as_ref())?;
    acknowledged_visible(b).await;
    let (_, max) = b.store.queue_range(&topic, queue_id);
    let offset = u64::try_from(req.offset)
        .ok()
        .filter(|o| *o <= max.0)
        .ok_or_else(|| {
            ApiError::IllegalOffset(format!(
                "offset {} of queue {queue_id} of {topic:?} is outside 0..={}",
                req.offset, max.0
            ))
        })?;
    let engine = b.consumption.clone();
    engine
        .clone()
        .call(move || engine.commit_offset(&group, &topic, queue_id, QueueOffset(offset)))
        .await
        .map_err(|e| ApiError::Internal(format!("committing the offset: {e}")))??;
    Ok(())
}

pub fn get_offset(b: &Broker, req: v2::GetOffsetRequest) -> v2::GetOffsetResponse {
    let found = (|| {
        let group = validate::group(req.group.as_ref())?;
        let (topic, queue_id, _) = queue_of(b, req.message_queue.as_ref())?;
        b.consumption
            .committed_offset(&group, &topic, queue_id)
            .ok_or_else(|| {
                ApiError::OffsetNotFound(format!(
                    "group {group:?} has no committed offset on queue {queue_id} of {topic:?}"
                ))
            })
    })();
    match found {
        Ok(offset) => v2::GetOffsetResponse {
            status: Some(ok()),
            offset: i64::try_from(offset.0).unwrap_or(i64::MAX),
        },
        Err(e) => v2::GetOffsetResponse {
            status: Some(e.status()),
            offset: 0,
        },
    }
}

pub async fn query_offset(b: &Broker, req: v2::QueryOffsetRequest) -> v2::QueryOffsetResponse {
    acknowledged_visible(b).await;
    let found = (|| {
        let (topic, queue_id, _) = queue_of(b, req.message_queue.as_ref())?;
        let (min, max) = b.store.queue_range(&topic, queue_id);
        match v2::QueryOffsetPolicy::try_from(req.query_offset_policy) {
            Ok(v2::QueryOffsetPolicy::Beginning) => Ok(min),
            Ok(v2::QueryOffsetPolicy::End) => Ok(max),
            Ok(v2::QueryOffsetPolicy::Timestamp) => {
                let at = req
                    .timestamp
                    .as_ref()
                    .and_then(timestamp_ms)
                    .ok_or_else(|| {
                        ApiError::BadRequest("query offset by timestamp needs a timestamp".into())
                    })?;
                Ok(b.store.queue_offset_at_time(&topic, queue_id, at)?)
            }
            Err(_) => Err(ApiError::BadRequest(format!(
                "unknown query offset policy {}",
                req.query_offset_policy
            ))),
        }
    })();
    match found {
        Ok(offset) => v2::QueryOffsetResponse {
            status: Some(ok()),
            offset: i64::try_from(offset.0).unwrap_or(i64::MAX),
        },
        Err(e) => v2::QueryOffsetResponse {
            status: Some(e.status()),
            offset: 0,
        },
    }
}
