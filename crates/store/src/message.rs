//! The values that cross the store's boundary: what the broker appends and what it reads back.

use rocketlog_common::{PhysicalOffset, QueueOffset};

/// What the broker hands the store. The store never interprets `flags` or `properties`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendMessage {
    /// Must pass `rocketlog_common::validate_topic`.
    pub topic: String,
    /// Queue within the topic; each (topic, queue id) has its own dense queue offsets.
    pub queue_id: u32,
    /// Opaque to the store (the broker keeps message-type bits here).
    pub flags: u32,
    /// Hashed into the consume-queue entry (`rocketlog_common::tag_hash`).
    pub tag: Option<String>,
    /// Indexed for `Store::lookup_key`.
    pub keys: Vec<String>,
    /// Indexed for `Store::lookup_message_id`.
    pub message_id: String,
    /// When the producer created the message (ms since the Unix epoch).
    pub born_timestamp_ms: i64,
    /// Producer address, as the broker saw it.
    pub born_host: String,
    /// Address of the storing broker.
    pub store_host: String,
    /// Delivery attempts so far (retry topics).
    pub reconsume_times: u32,
    /// 0 when unused.
    pub prepared_transaction_offset: i64,
    /// User and broker system properties, order kept.
    pub properties: Vec<(String, String)>,
    /// The payload, stored as is.
    pub body: Vec<u8>,
}

/// A message read back: every [`AppendMessage`] field plus where and when it was stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredMessage {
    /// As appended.
    pub topic: String,
    /// As appended.
    pub queue_id: u32,
    /// As appended.
    pub flags: u32,
    /// As appended.
    pub tag: Option<String>,
    /// As appended.
    pub keys: Vec<String>,
    /// As appended.
    pub message_id: String,
    /// As appended.
    pub born_timestamp_ms: i64,
    /// As appended.
    pub born_host: String,
    /// As appended.
    pub store_host: String,
    /// As appended.
    pub reconsume_times: u32,
    /// As appended.
    pub prepared_transaction_offset: i64,
    /// As appended, order kept.
    pub properties: Vec<(String, String)>,
    /// As appended.
    pub body: Vec<u8>,
    /// Dense index of the message in its (topic, queue id).
    pub queue_offset: QueueOffset,
    /// Position of the record's first byte in the commit log.
    pub physical_offset: PhysicalOffset,
    /// Size of the whole record in the commit log.
    pub size: u32,
    /// When the store appended it; never decreases along the log.
    pub store_timestamp_ms: i64,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Position of the record's first byte in the commit log.
    pub physical_offset: PhysicalOffset,
    /// Size of the whole record.
    pub size: u32,
    /// The message's dense offset in its queue.
    pub queue_offset: QueueOffset,
    /// Assigned under the append lock; never decreases along the log.
    pub store_timestamp_ms: i64,
}

/// One page of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueRead {
    /// Matching messages in queue order.
    pub messages: Vec<StoredMessage>,
    /// Where the next read resumes; past every entry examined, including filtered-out ones.
    pub next_offset: QueueOffset,
    /// Oldest readable queue offset at the time of the read.
    pub min_offset: QueueOffset,
    /// Next queue offset to become readable at the time of the read.
    pub max_offset: QueueOffset,
}

/// A run of decoded commit-log records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogScan {
    /// Messages in log order (segment fillers are skipped).
    pub messages: Vec<StoredMessage>,
    /// The record boundary to continue from.
    pub next: PhysicalOffset,
}
