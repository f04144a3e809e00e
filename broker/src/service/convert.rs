//! Wire <-> store conversions of messages: what a `SendMessage` message becomes in the store
//! (`AppendMessage`), and what a stored message becomes on delivery (`v2::Message` with every
//! system property the clients read). Never panics on input.

use std::collections::HashMap;
use std::time::Duration;

use md5::{Digest as _, Md5};
use rocketlog_proto::v2;
use rocketlog_store::StoredMessage;

use crate::consumption::{
    Delivery, DLQ_ORIGIN_MESSAGE_ID_PROPERTY, DLQ_ORIGIN_TOPIC_PROPERTY, MESSAGE_GROUP_PROPERTY,
};
use crate::topics::TopicMessageType;

/// Store property holding the trace context (`SystemProperties.trace_context`).
pub const TRACE_CONTEXT_PROPERTY: &str = "__TRACE_CTX";
/// Prefix of the property names the broker keeps for itself (refused as user properties).
pub const PREFIX_RESERVED: &str = "__";

/// Bits of `AppendMessage::flags` (opaque to the store).
pub mod flags {
    /// Low 4 bits: the message type (1 NORMAL, 2 FIFO, 3 DELAY, 4 TRANSACTION).
    pub const TYPE_MASK: u32 = 0xF;
    /// The body is GZIP-compressed (`Encoding::GZIP`).
    pub const GZIP: u32 = 1 << 4;
}

/// Whether a user property name belongs to the broker.
pub fn is_reserved_property(key: &str) -> bool {
    key.starts_with(PREFIX_RESERVED)
        || key == DLQ_ORIGIN_TOPIC_PROPERTY
        || key == DLQ_ORIGIN_MESSAGE_ID_PROPERTY
        || key == MESSAGE_GROUP_PROPERTY
}

/// Flags for a message of `kind`.
pub fn encode_flags(kind: TopicMessageType, gzip: bool) -> u32 {
    let t = match kind {
        TopicMessageType::Normal => 1,
        TopicMessageType::Fifo => 2,
        TopicMessageType::Delay => 3,
        TopicMessageType::Transaction => 4,
    };
    t | if gzip { flags::GZIP } else { 0 }
}

fn message_type_of(msg: &StoredMessage, group: Option<&str>) -> v2::MessageType {
    match msg.flags & flags::TYPE_MASK {
        1 => v2::MessageType::Normal,
        2 => v2::MessageType::Fifo,
        3 => v2::MessageType::Delay,
        4 => v2::MessageType::Transaction,
        _ if group.is_some() => v2::MessageType::Fifo,
        _ => v2::MessageType::Normal,
    }
}

/// Wire message type of a topic message type.
pub fn wire_type(kind: TopicMessageType) -> v2::MessageType {
    match kind {
        TopicMessageType::Normal => v2::MessageType::Normal,
        TopicMessageType::Fifo => v2::MessageType::Fifo,
        TopicMessageType::Delay => v2::MessageType::Delay,
        TopicMessageType::Transaction => v2::MessageType::Transaction,
    }
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        // rem_euclid(1000) is in 0..1000, so the product fits an i32.
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf timestamp as milliseconds since the epoch, if it is valid.
pub fn timestamp_ms(t: &prost_types::Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    t.seconds
        .checked_mul(1000)?
        .checked_add(i64::from(t.nanos / 1_000_000))
}

/// A protobuf duration as a std duration, if it is non-negative and valid.
pub fn duration(d: &prost_types::Duration) -> Option<Duration> {
    Duration::try_from(*d).ok()
}

/// A std duration as a protobuf duration (saturating).
pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// MD5 of the body as upper-case hex (what the proxy sends and every client verifies).
pub fn body_md5(body: &[u8]) -> String {
    hex::encode_upper(Md5::digest(body))
}

fn property<'a>(msg: &'a StoredMessage, key: &str) -> Option<&'a str> {
    msg.properties
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The delivered form of a stored message (also used for admin lookups, where `delivery` is
/// `None`).
pub fn delivered_message(
    msg: &StoredMessage,
    delivery: Option<(&Delivery, Duration)>,
) -> v2::Message {
    let group = property(msg, MESSAGE_GROUP_PROPERTY).filter(|g| !g.is_empty());
    let user_properties: HashMap<String, String> = msg
        .properties
        .iter()
        .filter(|(k, _)| !is_reserved_property(k))
        .cloned()
        .collect();
    let dead_letter_queue = match (
        property(msg, DLQ_ORIGIN_TOPIC_PROPERTY),
        property(msg, DLQ_ORIGIN_MESSAGE_ID_PROPERTY),
    ) {
        (Some(topic), Some(id)) => Some(v2::DeadLetterQueue {
            topic: topic.to_owned(),
            message_id: id.to_owned(),
        }),
        _ => None,
    };
    let encoding = if msg.flags & flags::GZIP != 0 {
        v2::Encoding::Gzip
    } else {
        v2::Encoding::Identity
    };
    let mut sys = v2::SystemProperties {
        tag: msg.tag.clone().filter(|t| !t.is_empty()),
        keys: msg.keys.clone(),
        message_id: msg.message_id.clone(),
        body_digest: Some(v2::Digest {
            r#type: v2::DigestType::Md5 as i32,
            checksum: body_md5(&msg.body),
        }),
        body_encoding: encoding as i32,
        message_type: message_type_of(msg, group) as i32,
        born_timestamp: Some(timestamp(msg.born_timestamp_ms)),
        born_host: msg.born_host.clone(),
        store_timestamp: Some(timestamp(msg.store_timestamp_ms)),
        store_host: msg.store_host.clone(),
        queue_id: i32::try_from(msg.queue_id).unwrap_or(i32::MAX),
        queue_offset: Some(i64::try_from(msg.queue_offset.0).unwrap_or(i64::MAX)),
        delivery_attempt: Some(
            i32::try_from(msg.reconsume_times.saturating_add(1)).unwrap_or(i32::MAX),
        ),
        message_group: group.map(str::to_owned),
        trace_context: property(msg, TRACE_CONTEXT_PROPERTY).map(str::to_owned),
        delivery_timestamp: property(msg, crate::timer::DELIVER_MS_PROPERTY)
            .and_then(|v| v.parse().ok())
            .map(timestamp),
        dead_letter_queue,
        ..Default::default()
    };
    if let Some((d, invisible)) = delivery {
        sys.receipt_handle = Some(d.receipt_handle.clone());
        sys.delivery_attempt = Some(i32::try_from(d.delivery_attempt).unwrap_or(i32::MAX));
        sys.invisible_duration = Some(proto_duration(invisible));
    }
    v2::Message {
        topic: Some(v2::Resource {
            resource_namespace: String::new(),
            name: msg.topic.clone(),
        }),
        user_properties,
        system_properties: Some(sys),
        body: msg.body.clone().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_negative() {
        for ms in [0i64, 1, 999, 1000, 1_700_000_000_123, -1, -1001] {
            assert_eq!(timestamp_ms(&timestamp(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            timestamp_ms(&prost_types::Timestamp {
                seconds: 1,
                nanos: -1
            }),
            None
        );
        assert_eq!(
            timestamp_ms(&prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0
            }),
            None
        );
    }

    #[test]
    fn md5_is_upper_hex() {
        assert_eq!(body_md5(b""), "D41D8CD98F00B204E9800998ECF8427E");
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved_property("__MGROUP"));
        assert!(is_reserved_property(DLQ_ORIGIN_TOPIC_PROPERTY));
        assert!(!is_reserved_property("order-id"));
    }

    #[test]
    fn negative_duration_is_refused() {
        assert_eq!(
            duration(&prost_types::Duration {
                seconds: -1,
                nanos: 0
            }),
            None
        );
        assert_eq!(
            duration(&prost_types::Duration {
                seconds: 10,
                nanos: 0
            }),
            Some(Duration::from_secs(10))
        );
    }
}
