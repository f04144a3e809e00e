//! ReceiveMessage (server stream): long-poll the consumption engine, then write
//! `status{OK}`, each message, `delivery_timestamp` (now) and end the stream; when nothing
//! came, `status{MESSAGE_NOT_FOUND}` and `delivery_timestamp`. Clients act only when the stream
//! ends, so it always ends before the client's deadline (see `polling.rs`).
//!
//! If the client goes away before its batch is written, the unwritten deliveries are made
//! visible again after a second (as the proxy does) instead of waiting out their invisible time.

use std::sync::Arc;
use std::time::Duration;

use rocketlog_proto::v2;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::convert::{delivered_message, duration, timestamp};
use super::error::{ok, status, ApiError};
use super::polling::{grpc_timeout, polling_time, PollingLimits};
use super::validate::{self, version_below};
use super::{client_id, CLIENT_VERSION_HEADER};
use crate::broker::Broker;
use crate::consumption::{Delivery, FilterExpression, ReceiveRequest, RetryPolicy};
use crate::metrics::RpcTimer;

/// Invisible time of deliveries the client never got.
const NACK_INVISIBLE: Duration = Duration::from_secs(1);
/// Clients older than this get BAD_REQUEST instead of ILLEGAL_POLLING_TIME (the proxy's rule).
const ILLEGAL_POLLING_TIME_SINCE: &str = "5.0.3";
/// Request timeout assumed for clients that sent no settings.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

type Item = Result<v2::ReceiveMessageResponse, Status>;

/// What a validated request resolves to.
struct Plan {
    engine: ReceiveRequest,
    auto_renew: bool,
    client: Option<String>,
}

/// `timing` is dropped when the response stream ends (the RPC's latency includes the poll).
pub fn handle(
    b: Arc<Broker>,
    request: Request<v2::ReceiveMessageRequest>,
    timing: RpcTimer,
) -> ReceiverStream<Item> {
    let remaining = grpc_timeout(&request.metadata().clone().into_headers());
    let client = client_id(request.metadata());
    let version = request
        .metadata()
        .get(CLIENT_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let req = request.into_inner();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let _timing = timing;
        match plan(&b, req, client, remaining, version.as_deref()) {
            Ok(plan) => run(&b, plan, &tx).await,
            Err(e) => {
                let _ = tx
                    .send(Ok(content(v2::receive_message_response::Content::Status(
                        e.status(),
                    ))))
                    .await;
                finish(&tx).await;
            }
        }
    });
    ReceiverStream::new(rx)
}

fn content(c: v2::receive_message_response::Content) -> v2::ReceiveMessageResponse {
    v2::ReceiveMessageResponse { content: Some(c) }
}

async fn finish(tx: &mpsc::Sender<Item>) {
    let now = timestamp(now_ms());
    let _ = tx
        .send(Ok(content(
            v2::receive_message_response::Content::DeliveryTimestamp(now),
        )))
        .await;
}

fn plan(
    b: &Broker,
    req: v2::ReceiveMessageRequest,
    client: Option<String>,
    remaining: Option<Duration>,
    version: Option<&str>,
) -> Result<Plan, ApiError> {
    let r = &b.config.receive;
    let info = client.as_deref().and_then(|c| b.clients.get(c));
    let request_timeout = info
        .as_ref()
        .map_or(DEFAULT_REQUEST_TIMEOUT, |c| c.request_timeout);
    let limits = PollingLimits {
        min: Duration::from_millis(r.min_long_polling_ms),
        max: Duration::from_millis(r.max_long_polling_ms),
    };
    let requested_poll = req.long_polling_timeout.as_ref().and_then(duration);
    let poll = polling_time(requested_poll, remaining, request_timeout, limits).map_err(|e| {
        let msg = format!(
            "the deadline leaves {:?}, less than the shortest long-polling wait {:?}",
            e.remaining, e.min
        );
        if version.is_none_or(|v| version_below(v, ILLEGAL_POLLING_TIME_SINCE)) {
            ApiError::BadRequest(msg)
        } else {
            ApiError::IllegalPollingTime(msg)
        }
    })?;
    let queue = req.message_queue.unwrap_or_default();
    let topic = validate::topic(queue.topic.as_ref())?;
    let group = validate::group(req.group.as_ref())?;
    // Messages past the max attempts go to the group's dead-letter topic: make it routable.
    if let Err(e) = super::forward_dlq::ensure_dlq_topic(b, &group) {
        tracing::warn!(%group, error = %e, "cannot register the dead-letter topic");
    }
    let invisible = if req.auto_renew {
        b.renewals.config().invisible
    } else {
        let requested = req
            .invisible_duration
            .as_ref()
            .and_then(duration)
            .unwrap_or_default();
        let (min, max) = (
            Duration::from_millis(r.min_invisible_duration_ms),
            Duration::from_millis(r.max_invisible_duration_ms),
        );
        if requested < min || requested > max {
            return Err(ApiError::IllegalInvisibleTime(format!(
                "invisible duration {requested:?} is outside {min:?}..={max:?}"
            )));
        }
        requested
    };
    let filter = match req.filter_expression {
        Some(f) if f.r#type == v2::FilterType::Sql as i32 => {
            return Err(ApiError::Consume(
                crate::consumption::ConsumeError::IllegalFilterExpression {
                    expression: f.expression,
                    reason: "SQL92 filtering is not supported; use a TAG expression".into(),
                },
            ))
        }
        Some(f) => FilterExpression::parse(&f.expression)?,
        None => FilterExpression::All,
    };
    let config = b
        .topics
        .get(&topic)
        .ok_or_else(|| ApiError::TopicNotFound(topic.clone()))?;
    if !config.permission.readable() {
        return Err(ApiError::Forbidden(format!(
            "topic {topic:?} is not readable"
        )));
    }
    if req.batch_size <= 0 {
        return Err(ApiError::BadRequest(format!(
            "batch size {} must be positive",
            req.batch_size
        )));
    }
    let batch_size = usize::try_from(req.batch_size)
        .unwrap_or(usize::MAX)
        .min(MAX_BATCH);
    let fifo = crate::broker::is_fifo_topic(&config);
    Ok(Plan {
        engine: ReceiveRequest {
            group,
            topic,
            queue_id: u32::try_from(queue.id).ok(),
            filter,
            batch_size,
            invisible_duration: invisible,
            long_polling_timeout: poll,
            fifo,
            retry_policy: RetryPolicy {
                max_attempts: r.max_delivery_attempts,
            },
            queue_count: config.queue_count,
        },
        auto_renew: req.auto_renew,
        client,
    })
}

/// Largest batch handed to the engine (its default limit).
const MAX_BATCH: usize = 1024;

async fn run(b: &Broker, plan: Plan, tx: &mpsc::Sender<Item>) {
    let invisible = plan.engine.invisible_duration;
    let group = plan.engine.group.clone();
    let topic = plan.engine.topic.clone();
    let received = tokio::select! {
        r = b.consumption.receive(plan.engine) => r,
        // The client cancelled (its deadline passed or it closed the stream): stop polling.
        () = tx.closed() => return,
        () = b.shutdown.cancelled() => Ok(Vec::new()),
    };
    let deliveries = match received {
        Ok(d) => d,
        Err(e) => {
            let _ = tx
                .send(Ok(content(v2::receive_message_response::Content::Status(
                    ApiError::from(e).status(),
                ))))
                .await;
            finish(tx).await;
            return;
        }
    };
    if deliveries.is_empty() {
        let _ = tx
            .send(Ok(content(v2::receive_message_response::Content::Status(
                status(v2::Code::MessageNotFound, "no new message"),
            ))))
            .await;
        finish(tx).await;
        return;
    }
    if plan.auto_renew {
        if let Some(client) = plan.client.as_deref().filter(|c| b.clients.is_connected(c)) {
            let now = now_ms();
            for d in &deliveries {
                b.renewals.track(
                    client,
                    &group,
                    &topic,
                    &d.receipt_handle,
                    d.invisible_until_ms,
                    now,
                );
            }
        }
    }
    let mut unsent: Vec<&Delivery> = Vec::new();
    let (mut sent, mut sent_bytes) = (0u64, 0u64);
    let mut gone = tx
        .send(Ok(content(v2::receive_message_response::Content::Status(
            ok(),
        ))))
        .await
        .is_err();
    for d in &deliveries {
        if gone {
            unsent.push(d);
            continue;
        }
        let message = delivered_message(&d.message, Some((d, invisible)));
        let body_bytes = d.message.body.len() as u64;
        if tx
            .send(Ok(content(v2::receive_message_response::Content::Message(
                message,
            ))))
            .await
            .is_err()
        {
            gone = true;
            unsent.push(d);
        } else {
            sent += 1;
            sent_bytes += body_bytes;
        }
    }
    b.metrics.delivered(&topic, &group, sent, sent_bytes);
    if gone {
        release(b, &group, &topic, unsent).await;
        return;
    }
    finish(tx).await;
}

/// Makes deliveries the client never received visible again soon.
async fn release(b: &Broker, group: &str, topic: &str, unsent: Vec<&Delivery>) {
    let handles: Vec<String> = unsent
        .iter()
        .map(|d| {
            b.renewals.take(group, &d.receipt_handle);
            d.receipt_handle.clone()
        })
        .collect();
    let engine = b.consumption.clone();
    let (group, topic) = (group.to_owned(), topic.to_owned());
    let _ = tokio::task::spawn_blocking(move || {
        for h in handles {
            if let Err(e) = engine.change_invisible_duration(&group, &topic, &h, NACK_INVISIBLE) {
                tracing::debug!(error = %e, "could not release an undelivered message");
            }
        }
    })
    .await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
