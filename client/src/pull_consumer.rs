//! A consumer that reads queues it picks, by offset, and keeps its own position (Kafka-style
//! consumption over PullMessage, UpdateOffset, GetOffset and QueryOffset).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::{Mutex, RwLock};
use rocketlog_proto::v2;
use rocketlog_proto::v2::pull_message_response::Content;

use crate::config::ClientConfig;
use crate::convert::{duration_to_proto, message_view_from_proto, queue_to_proto, time_to_proto};
use crate::core::ClientCore;
use crate::error::{Code, Error};
use crate::message::MessageView;
use crate::retry::RetryPolicy;
use crate::route::MessageQueue;
use crate::rpc::rpc_error;
use crate::settings::{FilterExpression, Role};

/// Most messages one pull asks for.
pub const MAX_PULL_BATCH: u32 = 1024;

/// One queue of a topic on one broker group: what a pull consumer is assigned and reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicQueue {
    topic: String,
    broker: String,
    id: i32,
}

impl TopicQueue {
    /// The queue `id` of `topic` on the broker group `broker`.
    pub fn new(topic: impl Into<String>, broker: impl Into<String>, id: i32) -> TopicQueue {
        TopicQueue {
            topic: topic.into(),
            broker: broker.into(),
            id,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The broker group (broker name) holding the queue.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The queue id within the topic on that broker group.
    pub fn id(&self) -> i32 {
        self.id
    }
}

impl fmt::Display for TopicQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.topic, self.broker, self.id)
    }
}

/// Where a queue without a committed offset starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// At the oldest retained message.
    Beginning,
    /// After the newest message: only what is sent from now on (the default).
    #[default]
    End,
}

/// An offset to look up in a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The oldest retained message.
    Beginning,
    /// The next offset to be written.
    End,
    /// The first message stored at or after this time (`End` if none).
    Time(SystemTime),
}

/// The answer to one pull.
#[derive(Debug, Default)]
pub struct PullBatch {
    /// Messages in queue order (tag filter applied).
    pub messages: Vec<MessageView>,
    /// Where the next pull of the queue starts: past every message examined, including those
    /// the filter skipped.
    pub next_offset: i64,
}

/// Reads assigned queues by offset; the application decides what to read and when to commit.
/// Cheap to clone (clones share the assignment and positions).
///
/// ```no_run
/// use std::time::Duration;
/// use rocketlog_client::{ClientConfig, PullConsumer, StartPosition};
///
/// # async fn demo() -> Result<(), rocketlog_client::Error> {
/// let config = ClientConfig::new("127.0.0.1:8081")?;
/// let consumer = PullConsumer::builder(config, "audit")
///     .start_position(StartPosition::Beginning)
///     .build()
///     .await?;
/// let queues = consumer.queues("orders").await?;
/// consumer.assign(queues).await?;
/// loop {
///     let messages = consumer.poll(64, Duration::from_secs(5)).await?;
///     if messages.is_empty() {
///         break;
///     }
///     for m in &messages {
///         println!("{} @ {:?}", m.message_id(), m.queue_offset());
///     }
///     consumer.commit().await?;
/// }
/// consumer.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct PullConsumer {
    core: Arc<ClientCore>,
    state: Arc<Mutex<Assignment>>,
    start: StartPosition,
}

#[derive(Debug, Default)]
struct Assignment {
    /// Assigned queues and their next offset (`None` until first resolved).
    positions: BTreeMap<TopicQueue, Option<i64>>,
    /// Round-robin start of the next poll.
    next: usize,
}

/// Builds a [`PullConsumer`]; see there for an example.
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct PullConsumerBuilder {
    config: ClientConfig,
    group: String,
    filters: BTreeMap<String, FilterExpression>,
    start: StartPosition,
}

impl PullConsumerBuilder {
    /// Pulls only messages of `topic` that pass `filter` (default: all).
    pub fn filter(mut self, topic: impl Into<String>, filter: FilterExpression) -> Self {
        self.filters.insert(topic.into(), filter);
        self
    }

    /// Where a queue with no committed offset starts (default [`StartPosition::End`]).
    pub fn start_position(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    /// Connects: completes the settings handshake.
    pub async fn build(self) -> Result<PullConsumer, Error> {
        rocketlog_common::validate_group(&self.group).map_err(|e| Error::Config(e.to_string()))?;
        for topic in self.filters.keys() {
            rocketlog_common::validate_topic(topic).map_err(|e| Error::Config(e.to_string()))?;
        }
        let role = Role::PullConsumer {
            group: self.group,
            subscriptions: RwLock::new(self.filters),
        };
        let core =
            ClientCore::start(self.config, role, RetryPolicy::immediate(1), None, None).await?;
        Ok(PullConsumer {
            core,
            state: Arc::new(Mutex::new(Assignment::default())),
            start: self.start,
        })
    }
}

impl PullConsumer {
    /// A builder for a consumer of `group` (the group its committed offsets belong to).
    pub fn builder(config: ClientConfig, group: impl Into<String>) -> PullConsumerBuilder {
        PullConsumerBuilder {
            config,
            group: group.into(),
            filters: BTreeMap::new(),
            start: StartPosition::default(),
        }
    }

    /// The id this client presents to servers.
    pub fn client_id(&self) -> &str {
        &self.core.client_id
    }

    /// The readable queues of `topic` (fetching its route on first use).
    pub async fn queues(&self, topic: &str) -> Result<Vec<TopicQueue>, Error> {
        self.core.ensure_running()?;
        rocketlog_common::validate_topic(topic).map_err(|e| Error::Config(e.to_string()))?;
        let route = self.core.route(topic).await?;
        let mut out: Vec<TopicQueue> = route
            .queues
            .iter()
            .filter(|q| q.broker.id == 0 && q.permission.readable())
            .map(|q| TopicQueue::new(&q.topic, &q.broker.name, q.id))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Reads these queues from now on (replacing the assignment). A queue kept from the
    /// previous assignment keeps its position; a new one starts at its committed offset, or
    /// at the start position when it has none.
    pub async fn assign(&self, queues: impl IntoIterator<Item = TopicQueue>) -> Result<(), Error> {
        let queues: Vec<TopicQueue> = queues.into_iter().collect();
        let mut topics: Vec<String> = queues.iter().map(|q| q.topic.clone()).collect();
        topics.sort_unstable();
        topics.dedup();
        for topic in &topics {
            rocketlog_common::validate_topic(topic).map_err(|e| Error::Config(e.to_string()))?;
            self.core.route(topic).await?;
        }
        {
            let mut st = self.state.lock();
            let old = std::mem::take(&mut st.positions);
            for q in queues {
                let kept = old.get(&q).copied().flatten();
                st.positions.insert(q, kept);
            }
        }
        if let Role::PullConsumer { subscriptions, .. } = &self.core.role {
            let mut subs = subscriptions.write();
            for topic in topics {
                subs.entry(topic).or_default();
            }
        }
        self.core.resend_settings();
        Ok(())
    }

    /// The assigned queues.
    pub fn assignment(&self) -> Vec<TopicQueue> {
        self.state.lock().positions.keys().cloned().collect()
    }

    /// Where the next poll of `queue` reads (`None` before its first poll or seek, or when not
    /// assigned).
    pub fn position(&self, queue: &TopicQueue) -> Option<i64> {
        self.state.lock().positions.get(queue).copied().flatten()
    }

    /// Moves an assigned queue's position to `offset`.
    pub fn seek(&self, queue: &TopicQueue, offset: i64) -> Result<(), Error> {
        let mut st = self.state.lock();
        let slot = st
            .positions
            .get_mut(queue)
            .ok_or_else(|| Error::Config(format!("queue {queue} is not assigned")))?;
        *slot = Some(offset);
        Ok(())
    }

    /// Moves an assigned queue's position to what `query` finds.
    pub async fn seek_to(&self, queue: &TopicQueue, query: OffsetQuery) -> Result<i64, Error> {
        let offset = self.query_offset(queue, query).await?;
        self.seek(queue, offset)?;
        Ok(offset)
    }

    /// Up to `max_messages` messages from the assigned queues, each queue read from its
    /// position, which moves past what is returned. Queues are read in turn; when none has a
    /// message, waits up to `wait` on all of them for the first to get one. A position that
    /// retention has passed moves to the oldest retained message.
    pub async fn poll(&self, max_messages: u32, wait: Duration) -> Result<Vec<MessageView>, Error> {
        self.core.ensure_running()?;
        if max_messages == 0 {
            return Err(Error::Config("max_messages must be at least 1".into()));
        }
        let queues = {
            let mut st = self.state.lock();
            let n = st.positions.len();
            if n == 0 {
                return Err(Error::Config("no queue is assigned".into()));
            }
            let start = st.next % n;
            st.next = st.next.wrapping_add(1);
            let mut q: Vec<TopicQueue> = st.positions.keys().cloned().collect();
            q.rotate_left(start);
            q
        };
        let mut out = Vec::new();
        for q in &queues {
            let room = max_messages - u32::try_from(out.len()).unwrap_or(max_messages);
            if room == 0 {
                break;
            }
            out.extend(self.poll_queue(q, room, Duration::ZERO).await?);
        }
        if !out.is_empty() || wait.is_zero() {
            return Ok(out);
        }
        // Nothing anywhere: wait on every queue; the first answer wins and the others are
        // dropped before their positions move.
        let mut waits: FuturesUnordered<_> = queues
            .iter()
            .map(|q| self.fetch(q, max_messages, wait))
            .collect();
        while let Some(result) = waits.next().await {
            let (queue, from, batch) = result?;
            if batch.messages.is_empty() {
                self.advance(&queue, from, batch.next_offset);
                continue;
            }
            drop(waits);
            self.advance(&queue, from, batch.next_offset);
            return Ok(batch.messages);
        }
        Ok(Vec::new())
    }

    async fn poll_queue(
        &self,
        queue: &TopicQueue,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<MessageView>, Error> {
        let (queue, from, batch) = self.fetch(queue, max, wait).await?;
        self.advance(&queue, from, batch.next_offset);
        Ok(batch.messages)
    }

    /// Pulls `queue` from its position (resolving it first); returns where it read from.
    async fn fetch(
        &self,
        queue: &TopicQueue,
        max: u32,
        wait: Duration,
    ) -> Result<(TopicQueue, i64, PullBatch), Error> {
        let from = self.resolve(queue).await?;
        match self.pull(queue, from, max, wait).await {
            Ok(batch) => Ok((queue.clone(), from, batch)),
            Err(e) if e.code() == Some(Code::IllegalOffset) => {
                let (min, max_offset) = (
                    self.query_offset(queue, OffsetQuery::Beginning).await?,
                    self.query_offset(queue, OffsetQuery::End).await?,
                );
                let to = from.clamp(min, max_offset);
                tracing::warn!(%queue, from, to, "position outside the retained queue: moved");
                Ok((
                    queue.clone(),
                    from,
                    PullBatch {
                        messages: Vec::new(),
                        next_offset: to,
                    },
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Moves `queue` to `next` unless someone moved it since it was read at `from`.
    fn advance(&self, queue: &TopicQueue, from: i64, next: i64) {
        let mut st = self.state.lock();
        if let Some(slot) = st.positions.get_mut(queue) {
            if *slot == Some(from) {
                *slot = Some(next);
            }
        }
    }

    /// The position of an assigned queue, looking up its committed offset (or the start
    /// position) the first time.
    async fn resolve(&self, queue: &TopicQueue) -> Result<i64, Error> {
        match self.state.lock().positions.get(queue) {
            None => return Err(Error::Config(format!("queue {queue} is not assigned"))),
            Some(Some(p)) => return Ok(*p),
            Some(None) => {}
        }
        let offset = match self.committed(queue).await? {
            Some(offset) => offset,
            None => {
                let query = match self.start {
                    StartPosition::Beginning => OffsetQuery::Beginning,
                    StartPosition::End => OffsetQuery::End,
                };
                self.query_offset(queue, query).await?
            }
        };
        let mut st = self.state.lock();
        let slot = st
            .positions
            .get_mut(queue)
            .ok_or_else(|| Error::Config(format!("queue {queue} is not assigned")))?;
        Ok(*slot.get_or_insert(offset))
    }

    /// Commits the position of every assigned queue that has one, as the group's offset on
    /// that queue (durable on the broker when this returns).
    pub async fn commit(&self) -> Result<(), Error> {
        let positions: Vec<(TopicQueue, i64)> = self
            .state
            .lock()
            .positions
            .iter()
            .filter_map(|(q, p)| p.map(|p| (q.clone(), p)))
            .collect();
        for (queue, offset) in positions {
            self.commit_offset(&queue, offset).await?;
        }
        Ok(())
    }

    /// Commits `offset` as the group's offset on `queue`: the next consumer of the group
    /// starts there.
    pub async fn commit_offset(&self, queue: &TopicQueue, offset: i64) -> Result<(), Error> {
        let target = self.target(queue).await?;
        let endpoints = &target.broker.endpoints;
        let request = v2::UpdateOffsetRequest {
            group: self.core.group_resource(),
            message_queue: Some(queue_to_proto(&target, self.core.namespace())),
            offset,
        };
        let response = self
            .core
            .rpc
            .unary(
                endpoints,
                "UpdateOffset",
                request,
                self.core.request_timeout(),
                |mut stub, r| async move { stub.update_offset(r).await },
            )
            .await?;
        Error::from_status(response.status.as_ref(), endpoints)
    }

    /// The group's committed offset on `queue`; `None` when it has none.
    pub async fn committed(&self, queue: &TopicQueue) -> Result<Option<i64>, Error> {
        let target = self.target(queue).await?;
        let endpoints = &target.broker.endpoints;
        let request = v2::GetOffsetRequest {
            group: self.core.group_resource(),
            message_queue: Some(queue_to_proto(&target, self.core.namespace())),
        };
        let response = self
            .core
            .rpc
            .unary(
                endpoints,
                "GetOffset",
                request,
                self.core.request_timeout(),
                |mut stub, r| async move { stub.get_offset(r).await },
            )
            .await?;
        match response.status.as_ref() {
            Some(s) if s.code == Code::OffsetNotFound as i32 => Ok(None),
            status => Error::from_status(status, endpoints).map(|()| Some(response.offset)),
        }
    }

    /// Looks up an offset of `queue`.
    pub async fn query_offset(&self, queue: &TopicQueue, query: OffsetQuery) -> Result<i64, Error> {
        let target = self.target(queue).await?;
        let endpoints = &target.broker.endpoints;
        let (policy, timestamp) = match query {
            OffsetQuery::Beginning => (v2::QueryOffsetPolicy::Beginning, None),
            OffsetQuery::End => (v2::QueryOffsetPolicy::End, None),
            OffsetQuery::Time(t) => (v2::QueryOffsetPolicy::Timestamp, Some(time_to_proto(t))),
        };
        let request = v2::QueryOffsetRequest {
            message_queue: Some(queue_to_proto(&target, self.core.namespace())),
            query_offset_policy: policy as i32,
            timestamp,
        };
        let response = self
            .core
            .rpc
            .unary(
                endpoints,
                "QueryOffset",
                request,
                self.core.request_timeout(),
                |mut stub, r| async move { stub.query_offset(r).await },
            )
            .await?;
        Error::from_status(response.status.as_ref(), endpoints)?;
        Ok(response.offset)
    }

    /// One pull of `queue` from `offset`, at most `max_messages` (up to [`MAX_PULL_BATCH`]),
    /// waiting up to `wait` for the first when none is there yet. Touches no position.
    pub async fn pull(
        &self,
        queue: &TopicQueue,
        offset: i64,
        max_messages: u32,
        wait: Duration,
    ) -> Result<PullBatch, Error> {
        self.core.ensure_running()?;
        if max_messages == 0 {
            return Err(Error::Config("max_messages must be at least 1".into()));
        }
        let target = self.target(queue).await?;
        let endpoints = target.broker.endpoints.clone();
        let filter = match &self.core.role {
            Role::PullConsumer { subscriptions, .. } => subscriptions
                .read()
                .get(&queue.topic)
                .cloned()
                .unwrap_or_default(),
            _ => FilterExpression::default(),
        };
        let request = v2::PullMessageRequest {
            group: self.core.group_resource(),
            message_queue: Some(queue_to_proto(&target, self.core.namespace())),
            offset,
            batch_size: i32::try_from(max_messages.min(MAX_PULL_BATCH)).unwrap_or(i32::MAX),
            filter_expression: Some(filter.to_proto()),
            long_polling_timeout: Some(duration_to_proto(wait)),
        };
        let timeout = wait + self.core.request_timeout();
        let call = async {
            let mut stub = self.core.rpc.stub(&endpoints)?;
            let request = self.core.rpc.request(request, Some(timeout));
            let mut stream = stub
                .pull_message(request)
                .await
                .map_err(|s| rpc_error(s, &endpoints))?
                .into_inner();
            let mut status = None;
            let mut batch = PullBatch {
                messages: Vec::new(),
                next_offset: offset,
            };
            let mut next = None;
            while let Some(item) = stream
                .message()
                .await
                .map_err(|s| rpc_error(s, &endpoints))?
            {
                match item.content {
                    Some(Content::Status(s)) => status = Some(s),
                    Some(Content::Message(m)) => {
                        batch.messages.push(message_view_from_proto(m, None))
                    }
                    Some(Content::NextOffset(n)) => next = Some(n),
                    None => {}
                }
            }
            Ok::<_, Error>((status, next, batch))
        };
        let (status, next, mut batch) = match tokio::select! {
            r = tokio::time::timeout(timeout, call) => r,
            _ = self.core.cancel.cancelled() => return Err(Error::Shutdown),
        } {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Timeout {
                    operation: "PullMessage",
                    timeout,
                    endpoint: endpoints.to_string(),
                })
            }
        };
        match status {
            Some(s) if s.code == Code::MessageNotFound as i32 => {}
            Some(s) => Error::from_status(Some(&s), &endpoints)?,
            None => {
                return Err(Error::Protocol {
                    reason: "pull stream ended without a status".into(),
                    endpoint: endpoints.to_string(),
                })
            }
        }
        batch.next_offset = match (next, batch.messages.last()) {
            (Some(n), _) => n,
            (None, Some(last)) => last.queue_offset().map_or(offset, |o| o + 1),
            (None, None) => offset,
        };
        Ok(batch)
    }

    /// The current route's queue for `queue`: the leader's, else a readable replica's.
    async fn target(&self, queue: &TopicQueue) -> Result<MessageQueue, Error> {
        let route = self.core.route(&queue.topic).await?;
        let mut candidates: Vec<&Arc<MessageQueue>> = route
            .queues
            .iter()
            .filter(|q| q.broker.name == queue.broker && q.id == queue.id)
            .collect();
        candidates.sort_by_key(|q| q.broker.id != 0);
        match candidates.first() {
            Some(q) => Ok(MessageQueue::clone(q)),
            None => {
                self.core.invalidate_route(&queue.topic);
                Err(Error::NoRoute {
                    topic: queue.topic.clone(),
                    reason: format!(
                        "the route has no queue {} on broker {}",
                        queue.id, queue.broker
                    ),
                })
            }
        }
    }

    /// Tells the brokers this consumer is leaving and stops its background work. Positions
    /// not committed are not committed by this.
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
    }
}
