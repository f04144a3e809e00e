//! A consumer that receives in the background and calls a handler for each message.
//!
//! The server assigns queues to the group's consumers (`QueryAssignment`, every few seconds);
//! each assigned queue gets a long-polling receive loop. Messages go to the handler with
//! bounded concurrency. Success acknowledges the message; failure hides it for the retry
//! policy's delay, after which the server delivers it again (and moves it to the dead-letter
//! queue after the policy's last attempt). In FIFO groups a message group is handled in
//! order, one message at a time, with retries made locally.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use rocketlog_proto::v2;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acker::Acker;
use crate::config::ClientConfig;
use crate::consumer::{self, ReceiveRequest};
use crate::convert::{endpoints_to_proto, queue_from_proto, resource};
use crate::core::ClientCore;
use crate::error::{Code, Error};
use crate::message::MessageView;
use crate::retry::RetryPolicy;
use crate::route::MessageQueue;
use crate::settings::{FilterExpression, Role};

/// Handlers running at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 20;
/// How often the consumer asks which queues it should read.
const ASSIGNMENT_INTERVAL: Duration = Duration::from_secs(5);
/// Pause after a failed receive.
const RECEIVE_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Pause after the server said to slow down.
const THROTTLED_RETRY_DELAY: Duration = Duration::from_millis(20);
/// Pause between attempts to ack or nack.
const SETTLE_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Attempts to ack or nack before leaving the message to its invisible-time expiry.
const SETTLE_ATTEMPTS: u32 = 5;

/// The error a handler returns to have its message delivered again.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Processes one message. Any `Fn(MessageView) -> impl Future<Output = Result<(), E>>` where
/// `E` converts into [`HandlerError`] is a handler.
pub trait MessageHandler: Send + Sync + 'static {
    /// Handles `message`; `Ok` acknowledges it, `Err` has it delivered again later.
    fn handle(&self, message: MessageView) -> BoxFuture<'static, Result<(), HandlerError>>;
}

impl<F, Fut, E> MessageHandler for F
where
    F: Fn(MessageView) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn handle(&self, message: MessageView) -> BoxFuture<'static, Result<(), HandlerError>> {
        let fut = self(message);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// Receives in the background and hands each message to a handler.
///
/// ```no_run
/// use rocketlog_client::{ClientConfig, FilterExpression, MessageView, PushConsumer};
///
/// # async fn demo() -> Result<(), rocketlog_client::Error> {
/// let config = ClientConfig::new("127.0.0.1:8081")?;
/// let consumer = PushConsumer::builder(config, "shipping")
///     .subscribe("orders", FilterExpression::all())
///     .concurrency(8)
///     .handler(|message: MessageView| async move {
///         println!("shipping {}", message.message_id());
///         Ok::<(), std::io::Error>(())
///     })
///     .build()
///     .await?;
/// // ... later: stop receiving and wait for running handlers.
/// consumer.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PushConsumer {
    inner: Arc<Inner>,
}

impl fmt::Debug for PushConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConsumer")
            .field("client_id", &self.inner.core.client_id)
            .finish()
    }
}

struct Inner {
    core: Arc<ClientCore>,
    /// Acks of finished handlers, batched.
    acker: Acker,
    handler: Arc<dyn MessageHandler>,
    permits: Arc<Semaphore>,
    /// Stops receiving (handlers already running finish).
    stop: CancellationToken,
    /// Assignment and receive loops.
    loops: TaskTracker,
    /// Running handlers and their acks.
    handlers: TaskTracker,
    /// One token per queue with a receive loop.
    receiving: Mutex<HashMap<QueueKey, CancellationToken>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueueKey {
    topic: String,
    broker: String,
    queue_id: i32,
}

/// Builds a [`PushConsumer`]; see there for an example.
#[must_use = "a builder does nothing until build() is called"]
pub struct PushConsumerBuilder {
    config: ClientConfig,
    group: String,
    subscriptions: std::collections::BTreeMap<String, FilterExpression>,
    concurrency: usize,
    handler: Option<Arc<dyn MessageHandler>>,
}

impl fmt::Debug for PushConsumerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushConsumerBuilder")
            .field("group", &self.group)
            .field("subscriptions", &self.subscriptions)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl PushConsumerBuilder {
    /// Receives messages of `topic` that pass `filter`.
    pub fn subscribe(mut self, topic: impl Into<String>, filter: FilterExpression) -> Self {
        self.subscriptions.insert(topic.into(), filter);
        self
    }

    /// Most handlers running at once (at least 1; default [`DEFAULT_CONCURRENCY`]).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The handler called for each message (required).
    pub fn handler(mut self, handler: impl MessageHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Connects and starts receiving.
    pub async fn build(self) -> Result<PushConsumer, Error> {
        let handler = self
            .handler
            .ok_or_else(|| Error::Config("a push consumer needs a handler".into()))?;
        rocketlog_common::validate_group(&self.group).map_err(|e| Error::Config(e.to_string()))?;
        if self.subscriptions.is_empty() {
            return Err(Error::Config("a push consumer needs a subscription".into()));
        }
        for topic in self.subscriptions.keys() {
            rocketlog_common::validate_topic(topic).map_err(|e| Error::Config(e.to_string()))?;
        }
        let role = Role::PushConsumer {
            group: self.group,
            subscriptions: self.subscriptions,
        };
        let core =
            ClientCore::start(self.config, role, RetryPolicy::immediate(1), None, None).await?;
        let inner = Arc::new(Inner {
            stop: core.cancel.child_token(),
            acker: Acker::spawn(core.clone()),
            core,
            handler,
            permits: Arc::new(Semaphore::new(self.concurrency)),
            loops: TaskTracker::new(),
            handlers: TaskTracker::new(),
            receiving: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&inner);
        let stop = inner.stop.clone();
        inner.loops.spawn(assignment_loop(weak, stop));
        Ok(PushConsumer { inner })
    }
}

impl PushConsumer {
    /// A builder for a consumer of `group`.
    pub fn builder(config: ClientConfig, group: impl Into<String>) -> PushConsumerBuilder {
        PushConsumerBuilder {
            config,
            group: group.into(),
            subscriptions: std::collections::BTreeMap::new(),
            concurrency: DEFAULT_CONCURRENCY,
            handler: None,
        }
    }

    /// The id this client presents to servers.
    pub fn client_id(&self) -> &str {
        &self.inner.core.client_id
    }

    /// Stops receiving, waits for running handlers and their acknowledgements, then tells the
    /// brokers this consumer is leaving. Messages received but not yet handled are not
    /// acknowledged; the server delivers them again.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        inner.loops.close();
        inner.loops.wait().await;
        inner.handlers.close();
        inner.handlers.wait().await;
        inner.core.shutdown().await;
    }
}

/// Asks for assignments now and then, and keeps one receive loop per assigned queue.
async fn assignment_loop(inner: std::sync::Weak<Inner>, stop: CancellationToken) {
    loop {
        let Some(this) = inner.upgrade() else { return };
        let topics = this.core.role.topics();
        for topic in topics {
            match query_assignment(&this.core, &topic).await {
                Ok(queues) => reconcile(&this, &topic, queues),
                Err(e) => tracing::warn!(topic, error = %e, "query assignment failed"),
            }
        }
        drop(this);
        tokio::select! {
            _ = tokio::time::sleep(ASSIGNMENT_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn query_assignment(core: &ClientCore, topic: &str) -> Result<Vec<MessageQueue>, Error> {
    let route = core.route(topic).await?;
    let endpoints = route.endpoints();
    let target = endpoints
        .get(rand::random::<u32>() as usize % endpoints.len().max(1))
        .cloned()
        .unwrap_or_else(|| core.config().access_point.clone());
    let request = v2::QueryAssignmentRequest {
        topic: Some(resource(core.namespace(), topic)),
        group: core.group_resource(),
        endpoints: Some(endpoints_to_proto(&core.config().access_point)),
    };
    let response = core
        .rpc
        .unary(
            &target,
            "QueryAssignment",
            request,
            core.request_timeout(),
            |mut stub, r| async move { stub.query_assignment(r).await },
        )
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            if e.suggests_route_refresh() {
                core.invalidate_route(topic);
            }
            return Err(e);
        }
    };
    Error::from_status(response.status.as_ref(), &target)?;
    Ok(response
        .assignments
        .iter()
        .filter_map(|a| a.message_queue.as_ref())
        .filter_map(queue_from_proto)
        .map(|mut q| {
            if q.topic.is_empty() {
                q.topic = topic.to_owned();
            }
            q
        })
        .collect())
}

/// Starts loops for new queues of `topic` and stops loops for queues no longer assigned.
fn reconcile(inner: &Arc<Inner>, topic: &str, queues: Vec<MessageQueue>) {
    let mut receiving = inner.receiving.lock();
    let keys: Vec<QueueKey> = queues
        .iter()
        .map(|q| QueueKey {
            topic: topic.to_owned(),
            broker: q.broker.name.clone(),
            queue_id: q.id,
        })
        .collect();
    receiving.retain(|k, token| {
        let keep = k.topic != topic || keys.contains(k);
        if !keep {
            tracing::debug!(topic = %k.topic, queue = k.queue_id, "queue unassigned");
            token.cancel();
        }
        keep
    });
    for (key, queue) in keys.into_iter().zip(queues) {
        if receiving.contains_key(&key) {
            continue;
        }
        tracing::debug!(topic, queue = queue.id, broker = %queue.broker.name, "queue assigned");
        let token = inner.stop.child_token();
        receiving.insert(key, token.clone());
        inner
            .loops
            .spawn(receive_loop(Arc::downgrade(inner), Arc::new(queue), token));
    }
}

async fn receive_loop(
    inner: std::sync::Weak<Inner>,
    queue: Arc<MessageQueue>,
    stop: CancellationToken,
) {
    let mut attempt_id: Option<String> = None;
    loop {
        let Some(this) = inner.upgrade() else { return };
        // Receive only when a handler slot is free, so messages do not wait in memory.
        let first = tokio::select! {
            p = this.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        let Role::PushConsumer { subscriptions, .. } = &this.core.role else {
            return;
        };
        let filter = subscriptions.get(&queue.topic).cloned().unwrap_or_default();
        let adopted = &this.core.adopted;
        let batch = adopted
            .receive_batch_size()
            .min(this.permits.available_permits() as u32 + 1)
            .max(1);
        let id = attempt_id
            .get_or_insert_with(crate::signing::request_id)
            .clone();
        let request = ReceiveRequest {
            queue: &queue,
            filter: &filter,
            batch_size: batch,
            invisible_duration: None,
            long_polling: adopted.long_polling_timeout(),
            attempt_id: Some(id),
        };
        let result = tokio::select! {
            r = consumer::receive(&this.core, request) => r,
            _ = stop.cancelled() => return,
        };
        let pause = match result {
            Ok(messages) => {
                attempt_id = None;
                if this.core.adopted.fifo() {
                    dispatch_fifo(&this, messages, first, &stop).await;
                } else {
                    dispatch(&this, messages, first, &stop).await;
                }
                None
            }
            Err(e) => {
                tracing::debug!(topic = %queue.topic, queue = queue.id, error = %e, "receive failed");
                drop(first);
                Some(if e.is_throttled() {
                    THROTTLED_RETRY_DELAY
                } else {
                    RECEIVE_RETRY_DELAY
                })
            }
        };
        drop(this);
        if let Some(pause) = pause {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Hands each message to the handler as slots free up.
async fn dispatch(
    inner: &Arc<Inner>,
    messages: Vec<MessageView>,
    first: OwnedSemaphorePermit,
    stop: &CancellationToken,
) {
    let mut first = Some(first);
    for message in messages {
        let permit = match first.take() {
            Some(p) => p,
            None => tokio::select! {
                p = inner.permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                // Unhandled messages come back after their invisible time.
                _ = stop.cancelled() => return,
            },
        };
        let this = inner.clone();
        inner.handlers.spawn(async move {
            consume_standard(&this, message, permit).await;
        });
    }
}

/// Handles one message outside FIFO mode: ack on success, nack with the policy's delay on
/// failure. The handler slot frees as soon as the handler returns: the ack or nack goes on
/// in the background (still tracked, so shutdown waits for it), as in the official clients.
/// Holding the slot through the acknowledgement's round trip made the receive loops ask for
/// small batches (11 messages per receive, 3.6 acks per request with 32 slots).
async fn consume_standard(inner: &Inner, mut message: MessageView, slot: OwnedSemaphorePermit) {
    let ok = if message.is_corrupted() {
        tracing::warn!(message_id = %message.message_id, "corrupted message; sending it back");
        false
    } else {
        run_handler(inner, &message).await
    };
    drop(slot);
    if ok {
        ack(inner, &message).await;
    } else {
        let delay = inner
            .core
            .adopted
            .retry_policy()
            .delay(message.delivery_attempt);
        let core = &inner.core;
        for attempt in 1..=SETTLE_ATTEMPTS {
            match consumer::change_invisible_duration(core, &mut message, delay).await {
                Ok(()) => return,
                Err(e) if e.code() == Some(Code::InvalidReceiptHandle) => return,
                Err(e) => {
                    tracing::warn!(message_id = %message.message_id, attempt, error = %e, "nack failed");
                    if attempt < SETTLE_ATTEMPTS {
                        tokio::time::sleep(SETTLE_RETRY_DELAY).await;
                    }
                }
            }
        }
    }
}

/// Runs the handler; a panic counts as a failure.
async fn run_handler(inner: &Inner, message: &MessageView) -> bool {
    let fut = inner.handler.handle(message.clone());
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(message_id = %message.message_id, error = %e, "handler failed");
            false
        }
        Err(_) => {
            tracing::warn!(message_id = %message.message_id, "handler panicked");
            false
        }
    }
}

/// Acks with a few retries; an invalid receipt handle ends it (the delivery is over, the
/// message will come again).
async fn ack(inner: &Inner, message: &MessageView) {
    for attempt in 1..=SETTLE_ATTEMPTS {
        match inner.acker.ack(message).await {
            Ok(()) => return,
            Err(e) if e.code() == Some(Code::InvalidReceiptHandle) => {
                tracing::debug!(message_id = %message.message_id, "receipt handle expired");
                return;
            }
            Err(e) => {
                tracing::warn!(message_id = %message.message_id, attempt, error = %e, "ack failed");
                if attempt < SETTLE_ATTEMPTS {
                    tokio::time::sleep(SETTLE_RETRY_DELAY).await;
                }
            }
        }
    }
}

/// FIFO mode: each message group of the batch in order, one message at a time, groups in
/// parallel; returns when the whole batch is settled.
async fn dispatch_fifo(
    inner: &Arc<Inner>,
    messages: Vec<MessageView>,
    first: OwnedSemaphorePermit,
    stop: &CancellationToken,
) {
    drop(first);
    let mut groups: Vec<(Option<String>, Vec<MessageView>)> = Vec::new();
    for m in messages {
        match groups
            .iter_mut()
            .find(|(g, _)| g.is_some() && *g == m.message_group)
        {
            Some((_, list)) => list.push(m),
            None => groups.push((m.message_group.clone(), vec![m])),
        }
    }
    let mut running = Vec::with_capacity(groups.len());
    for (_, list) in groups {
        let this = inner.clone();
        let stop = stop.clone();
        running.push(inner.handlers.spawn(async move {
            for message in list {
                let permit = tokio::select! {
                    p = this.permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = stop.cancelled() => return,
                };
                let settled = consume_fifo(&this, &message, &stop).await;
                drop(permit);
                if !settled {
                    // Stopping: later messages of the group must wait for this one.
                    return;
                }
            }
        }));
    }
    for handle in running {
        // A panicking group task has already released its permits; nothing else to do.
        let _ = handle.await;
    }
}

/// Handles one FIFO message with local retries; after the last attempt the message goes to
/// the dead-letter queue. Returns false if stopped before the message was settled.
async fn consume_fifo(inner: &Inner, message: &MessageView, stop: &CancellationToken) -> bool {
    let policy = inner.core.adopted.retry_policy();
    let max_attempts = policy.max_attempts();
    let mut attempt = message.delivery_attempt.max(1);
    loop {
        // Local retries count as deliveries for the handler.
        let mut current = message.clone();
        current.delivery_attempt = attempt;
        let ok = !message.is_corrupted() && run_handler(inner, &current).await;
        if ok {
            ack(inner, message).await;
            return true;
        }
        if attempt >= max_attempts || message.is_corrupted() {
            tracing::warn!(message_id = %message.message_id, attempt, "FIFO message failed its last attempt; dead-lettering it");
            let max = max_attempts;
            let core = &inner.core;
            for n in 1..=SETTLE_ATTEMPTS {
                match consumer::forward_to_dead_letter_queue(core, message, max).await {
                    Ok(()) => return true,
                    Err(e) if e.code() == Some(Code::InvalidReceiptHandle) => return true,
                    Err(e) => {
                        tracing::warn!(message_id = %message.message_id, attempt = n, error = %e, "dead-lettering failed");
                        if n < SETTLE_ATTEMPTS {
                            tokio::time::sleep(SETTLE_RETRY_DELAY).await;
                        }
                    }
                }
            }
            return true;
        }
        let delay = policy.delay(attempt);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return false,
        }
        attempt += 1;
    }
}
