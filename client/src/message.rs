//! Messages to send, messages received, and send receipts.

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;

use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::route::MessageType;

/// A message to send. Build one with [`Message::builder`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use rocketlog_client::Message;
///
/// let order = Message::builder("orders")
///     .body("order 42 paid")
///     .tag("paid")
///     .keys(["order-42"])
///     .property("region", "eu")
///     .message_group("customer-7") // FIFO within the group
///     .build()?;
/// assert_eq!(order.message_group(), Some("customer-7"));
///
/// let reminder = Message::builder("reminders")
///     .body(vec![1, 2, 3])
///     .delivery_time(SystemTime::now() + Duration::from_secs(60)) // delayed
///     .build()?;
/// assert!(reminder.delivery_time().is_some());
/// # Ok::<(), rocketlog_client::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Message {
    pub(crate) topic: String,
    pub(crate) body: Bytes,
    pub(crate) tag: Option<String>,
    pub(crate) keys: Vec<String>,
    pub(crate) properties: HashMap<String, String>,
    pub(crate) message_group: Option<String>,
    pub(crate) delivery_time: Option<SystemTime>,
}

impl Message {
    /// Starts a message for `topic`.
    pub fn builder(topic: impl Into<String>) -> MessageBuilder {
        MessageBuilder {
            message: Message {
                topic: topic.into(),
                body: Bytes::new(),
                tag: None,
                keys: Vec::new(),
                properties: HashMap::new(),
                message_group: None,
                delivery_time: None,
            },
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The tag, used by consumers' filters.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The business keys (indexed by the server for lookups).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// User properties.
    pub fn properties(&self) -> &HashMap<String, String> {
        &self.properties
    }

    /// The FIFO message group.
    pub fn message_group(&self) -> Option<&str> {
        self.message_group.as_deref()
    }

    /// When a delayed message becomes deliverable.
    pub fn delivery_time(&self) -> Option<SystemTime> {
        self.delivery_time
    }

    /// The kind sent for this message outside a transaction.
    pub fn kind(&self) -> MessageType {
        if self.message_group.is_some() {
            MessageType::Fifo
        } else if self.delivery_time.is_some() {
            MessageType::Delay
        } else {
            MessageType::Normal
        }
    }
}

/// Builds a [`Message`]; see there for an example.
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct MessageBuilder {
    message: Message,
}

impl MessageBuilder {
    /// The body. `Bytes`, `Vec<u8>`, `&'static [u8]`, `String` and `&'static str` convert
    /// without copying.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.message.body = body.into();
        self
    }

    /// The tag (one word; `|` is reserved for filter expressions).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.message.tag = Some(tag.into());
        self
    }

    /// Adds one business key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.message.keys.push(key.into());
        self
    }

    /// Adds business keys.
    pub fn keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.message.keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Sets a user property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.message.properties.insert(key.into(), value.into());
        self
    }

    /// Makes this a FIFO message: messages of one group are stored in one queue and delivered
    /// in the order sent.
    pub fn message_group(mut self, group: impl Into<String>) -> Self {
        self.message.message_group = Some(group.into());
        self
    }

    /// Makes this a delayed message, delivered from `when` on.
    pub fn delivery_time(mut self, when: SystemTime) -> Self {
        self.message.delivery_time = Some(when);
        self
    }

    /// Checks the message and returns it.
    pub fn build(self) -> Result<Message, Error> {
        let m = self.message;
        rocketlog_common::validate_topic(&m.topic)
            .map_err(|e| Error::InvalidMessage(e.to_string()))?;
        if let Some(tag) = &m.tag {
            if tag.trim().is_empty() || tag.contains('|') {
                return Err(Error::InvalidMessage(format!(
                    "tag {tag:?} must be non-blank and free of '|'"
                )));
            }
        }
        if m.keys.iter().any(|k| k.trim().is_empty()) {
            return Err(Error::InvalidMessage("keys must be non-blank".into()));
        }
        if let Some(group) = &m.message_group {
            if group.trim().is_empty() {
                return Err(Error::InvalidMessage(
                    "message group must be non-blank".into(),
                ));
            }
            if m.delivery_time.is_some() {
                return Err(Error::InvalidMessage(
                    "a message cannot have both a message group and a delivery time".into(),
                ));
            }
        }
        if let Some(k) = m.properties.keys().find(|k| k.is_empty()) {
            return Err(Error::InvalidMessage(format!(
                "property key {k:?} must be non-empty"
            )));
        }
        Ok(m)
    }
}

/// A message as delivered to a consumer.
///
/// Hand it back to [`SimpleConsumer::ack`](crate::SimpleConsumer::ack) to acknowledge it. Its
/// receipt handle is specific to this delivery; a later delivery of the same message has
/// another.
#[derive(Clone, Debug)]
pub struct MessageView {
    pub(crate) message_id: String,
    pub(crate) topic: String,
    pub(crate) body: Bytes,
    pub(crate) tag: Option<String>,
    pub(crate) keys: Vec<String>,
    pub(crate) properties: HashMap<String, String>,
    pub(crate) message_group: Option<String>,
    pub(crate) delivery_time: Option<SystemTime>,
    pub(crate) born_host: String,
    pub(crate) born_time: Option<SystemTime>,
    pub(crate) store_time: Option<SystemTime>,
    pub(crate) delivery_attempt: u32,
    pub(crate) queue_id: i32,
    pub(crate) queue_offset: Option<i64>,
    pub(crate) corrupted: bool,
    pub(crate) receipt_handle: String,
    pub(crate) endpoints: Option<Endpoints>,
}

impl MessageView {
    /// The id given by the producer.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The body (decompressed if it travelled compressed).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The tag.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Business keys.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// User properties.
    pub fn properties(&self) -> &HashMap<String, String> {
        &self.properties
    }

    /// The FIFO message group.
    pub fn message_group(&self) -> Option<&str> {
        self.message_group.as_deref()
    }

    /// The delivery time of a delayed message.
    pub fn delivery_time(&self) -> Option<SystemTime> {
        self.delivery_time
    }

    /// The producer's host.
    pub fn born_host(&self) -> &str {
        &self.born_host
    }

    /// When the producer sent it.
    pub fn born_time(&self) -> Option<SystemTime> {
        self.born_time
    }

    /// When the broker stored it.
    pub fn store_time(&self) -> Option<SystemTime> {
        self.store_time
    }

    /// 1 for the first delivery, plus one per redelivery.
    pub fn delivery_attempt(&self) -> u32 {
        self.delivery_attempt
    }

    /// The queue it was read from.
    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }

    /// Its offset in that queue, when the server says.
    pub fn queue_offset(&self) -> Option<i64> {
        self.queue_offset
    }

    /// Whether the body failed its digest check or could not be decompressed. A corrupted
    /// message should not be trusted; push consumers send it back without calling the handler.
    pub fn is_corrupted(&self) -> bool {
        self.corrupted
    }
}

/// What the broker answered for one sent message.
#[derive(Clone, Debug)]
pub struct SendReceipt {
    pub(crate) message_id: String,
    pub(crate) queue_id: i32,
    pub(crate) offset: i64,
    pub(crate) transaction_id: Option<String>,
    pub(crate) recall_handle: Option<String>,
    pub(crate) endpoints: Endpoints,
}

impl SendReceipt {
    /// The message id (generated by this client, echoed by the broker).
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The queue the message went to.
    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }

    /// The message's offset in that queue.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The transaction id of a transactional message.
    pub fn transaction_id(&self) -> Option<&str> {
        self.transaction_id.as_deref()
    }

    /// The broker that stored the message, as `host:port[;host:port...]`.
    pub fn endpoint(&self) -> String {
        self.endpoints.to_string()
    }

    /// The handle that cancels a delayed message before delivery, if the server gave one.
    pub fn recall_handle(&self) -> Option<&str> {
        self.recall_handle.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn kinds() {
        let m = Message::builder("t").body("x").build().unwrap();
        assert_eq!(m.kind(), MessageType::Normal);
        let m = Message::builder("t").message_group("g").build().unwrap();
        assert_eq!(m.kind(), MessageType::Fifo);
        let m = Message::builder("t")
            .delivery_time(SystemTime::now() + Duration::from_secs(1))
            .build()
            .unwrap();
        assert_eq!(m.kind(), MessageType::Delay);
    }

    #[test]
    fn builder_validates() {
        assert!(Message::builder("").build().is_err());
        assert!(Message::builder("bad topic").build().is_err());
        assert!(Message::builder("t").tag("a||b").build().is_err());
        assert!(Message::builder("t").tag(" ").build().is_err());
        assert!(Message::builder("t").key("").build().is_err());
        assert!(Message::builder("t").message_group(" ").build().is_err());
        assert!(Message::builder("t").property("", "v").build().is_err());
        assert!(Message::builder("t")
            .message_group("g")
            .delivery_time(SystemTime::now())
            .build()
            .is_err());
        let m = Message::builder("t")
            .body(&b"abc"[..])
            .tag("A")
            .key("k1")
            .keys(vec!["k2".to_string()])
            .property("p", "v")
            .build()
            .unwrap();
        assert_eq!(m.body().as_ref(), b"abc");
        assert_eq!(m.keys(), ["k1", "k2"]);
        assert_eq!(m.properties()["p"], "v");
        assert_eq!(m.tag(), Some("A"));
    }
}
