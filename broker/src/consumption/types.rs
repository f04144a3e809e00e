//! The plain types of the consumption API: configuration, requests, deliveries, lag reports.

use std::sync::Arc;
use std::time::Duration;

use rocketlog_common::QueueOffset;
use rocketlog_store::StoredMessage;

use super::clock::{Clock, SystemClock};
use super::filter::FilterExpression;

/// Property holding a message's FIFO message group (set by the send path).
pub const MESSAGE_GROUP_PROPERTY: &str = "__MGROUP";
/// Property of a dead-lettered copy: the topic the message was consumed from.
pub const DLQ_ORIGIN_TOPIC_PROPERTY: &str = "DLQ_ORIGIN_TOPIC";
/// Property of a dead-lettered copy: the message id of the original.
pub const DLQ_ORIGIN_MESSAGE_ID_PROPERTY: &str = "DLQ_ORIGIN_MESSAGE_ID";
/// Max delivery attempts when a request does not say (the proxy's consumer default).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 17;

/// Where a group starts on a queue it has never consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialPosition {
    /// The oldest message the store still has (what Apache RocketMQ does on a fresh broker,
    /// and what "produce, then start a consumer" expects).
    #[default]
    Earliest,
    /// Only messages appended after the group first asks.
    Latest,
}

/// Engine settings; every field has a default.
#[derive(Debug, Clone)]
pub struct ConsumptionConfig {
    /// Source of "now" for deadlines (tests inject a manual clock).
    pub clock: Arc<dyn Clock>,
    /// Start position of a new group on a queue (default `Earliest`).
    pub initial_position: InitialPosition,
    /// Smallest invisible duration a receive may ask for (default 0: the gRPC layer applies the
    /// proxy's 10 s floor if it wants it).
    pub min_invisible: Duration,
    /// Largest invisible duration for receive and change (default 12 h, as the proxy).
    pub max_invisible: Duration,
    /// Largest receive batch (default 1024).
    pub max_batch_size: usize,
    /// FIFO: how many messages per queue may be read and held back behind in-flight message
    /// groups before reading that queue pauses (default 1024).
    pub max_held_per_queue: usize,
    /// Snapshot (and start a new journal generation) when the journal grows past this
    /// (default 64 MiB).
    pub snapshot_after_bytes: u64,
    /// Fsync the state journal before answering an ack, a receive or a change (default true).
    /// `false` still writes every change before answering, so a killed process loses nothing;
    /// only a machine crash can lose the last changes (they are then redelivered). The broker
    /// turns it off in Async flush mode, where the messages themselves have that guarantee.
    pub fsync_journal: bool,
}

impl Default for ConsumptionConfig {
    fn default() -> Self {
        ConsumptionConfig {
            clock: Arc::new(SystemClock),
            initial_position: InitialPosition::Earliest,
            min_invisible: Duration::ZERO,
            max_invisible: Duration::from_secs(12 * 3600),
            max_batch_size: 1024,
            max_held_per_queue: 1024,
            snapshot_after_bytes: 64 << 20,
            fsync_journal: true,
        }
    }
}

/// The group's retry settings (from the client's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries before a message is dead-lettered; 0 means [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl RetryPolicy {
    pub(crate) fn effective_max_attempts(&self) -> u32 {
        if self.max_attempts == 0 {
            DEFAULT_MAX_ATTEMPTS
        } else {
            self.max_attempts
        }
    }
}

/// One receive call.
#[derive(Debug, Clone)]
pub struct ReceiveRequest {
    pub group: String,
    pub topic: String,
    /// Advisory only: every receive is served from any queue of the topic, round robin (the
    /// Node client only ever asks for queue 0, push consumers send -1).
    pub queue_id: Option<u32>,
    pub filter: FilterExpression,
    /// At most this many messages (1..=`max_batch_size`).
    pub batch_size: usize,
    /// Each delivered message stays invisible this long unless acked or changed.
    pub invisible_duration: Duration,
    /// Wait up to this long for a message when none is available (zero: answer at once).
    pub long_polling_timeout: Duration,
    /// FIFO group: never release a later message of a message group while an earlier one is in
    /// flight.
    pub fifo: bool,
    pub retry_policy: RetryPolicy,
    /// Queues of the topic on this broker (ids `0..queue_count`).
    pub queue_count: u32,
}

/// One delivered message.
#[derive(Debug)]
pub struct Delivery {
    pub message: StoredMessage,
    /// Opaque; valid until this delivery is acked, changed, redelivered or dead-lettered.
    pub receipt_handle: String,
    /// 1 for the first delivery, +1 for each redelivery.
    pub delivery_attempt: u32,
    /// Wall-clock ms until which no one else receives this message.
    pub invisible_until_ms: i64,
}

/// Consumption progress of a group on one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLag {
    pub topic: String,
    pub queue_id: u32,
    /// Next offset the store will write.
    pub max_offset: QueueOffset,
    /// Every offset below this is finished for the group.
    pub committed_offset: QueueOffset,
    /// `max_offset - committed_offset`.
    pub lag: u64,
    /// Messages delivered and not yet finished.
    pub in_flight: usize,
}
