//! Half messages: a transactional message as stored until its transaction ends. It goes to
//! queue 0 of [`HALF_TOPIC`] (a system topic no client can read), with its real topic and
//! queue in broker properties; everything else (id, tag, keys, properties, body, flags) is the
//! message as sent. A commit appends the message to its real topic with the same id, and
//! `prepared_transaction_offset` pointing back at the half message.

use std::time::Duration;

use rocketlog_store::{AppendMessage, StoredMessage};

use super::error::TransactionError;

/// Topic of half messages.
pub const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// The topic the message is for.
pub const REAL_TOPIC_PROPERTY: &str = "__TX_REAL_TOPIC";
/// The queue the message is for.
pub const REAL_QUEUE_PROPERTY: &str = "__TX_REAL_QID";
/// First-check delay the producer asked for, ms (absent: the broker's default).
pub const FIRST_CHECK_PROPERTY: &str = "__TX_FIRST_CHECK_MS";

const PREFIX: &str = "__TX_";

/// Where a half message is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfInfo {
    pub topic: String,
    pub queue_id: u32,
    pub first_check: Option<Duration>,
}

/// The half message for `msg` (addressed to its real topic and queue).
pub fn to_half(mut msg: AppendMessage, first_check: Option<Duration>) -> AppendMessage {
    msg.properties.push((
        REAL_TOPIC_PROPERTY.to_owned(),
        std::mem::take(&mut msg.topic),
    ));
    msg.properties
        .push((REAL_QUEUE_PROPERTY.to_owned(), msg.queue_id.to_string()));
    if let Some(d) = first_check {
        msg.properties
            .push((FIRST_CHECK_PROPERTY.to_owned(), d.as_millis().to_string()));
    }
    msg.topic = HALF_TOPIC.to_owned();
    msg.queue_id = 0;
    msg
}

fn property<'a>(m: &'a StoredMessage, key: &str) -> Option<&'a str> {
    m.properties
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Reads the destination of a stored half message.
pub fn half_info(m: &StoredMessage) -> Result<HalfInfo, TransactionError> {
    let missing = |property| TransactionError::HalfProperty {
        offset: m.physical_offset.0,
        property,
    };
    let topic = property(m, REAL_TOPIC_PROPERTY)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing(REAL_TOPIC_PROPERTY))?;
    let queue_id = property(m, REAL_QUEUE_PROPERTY)
        .and_then(|q| q.parse::<u32>().ok())
        .ok_or_else(|| missing(REAL_QUEUE_PROPERTY))?;
    let first_check = property(m, FIRST_CHECK_PROPERTY)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    Ok(HalfInfo {
        topic: topic.to_owned(),
        queue_id,
        first_check,
    })
}

fn user_properties(m: &StoredMessage) -> Vec<(String, String)> {
    m.properties
        .iter()
        .filter(|(k, _)| !k.starts_with(PREFIX))
        .cloned()
        .collect()
}

/// The message a commit appends: the half message at its real topic and queue.
pub fn committed(half: &StoredMessage, info: &HalfInfo) -> AppendMessage {
    AppendMessage {
        topic: info.topic.clone(),
        queue_id: info.queue_id,
        flags: half.flags,
        tag: half.tag.clone(),
        keys: half.keys.clone(),
        message_id: half.message_id.clone(),
        born_timestamp_ms: half.born_timestamp_ms,
        born_host: half.born_host.clone(),
        store_host: half.store_host.clone(),
        reconsume_times: 0,
        prepared_transaction_offset: i64::try_from(half.physical_offset.0).unwrap_or(i64::MAX),
        properties: user_properties(half),
        body: half.body.clone(),
    }
}

/// The half message as its producer sent it (real topic and queue), for a check.
pub fn as_sent(half: &StoredMessage, info: &HalfInfo) -> StoredMessage {
    StoredMessage {
        topic: info.topic.clone(),
        queue_id: info.queue_id,
        properties: user_properties(half),
        ..half.clone()
    }
}

#[cfg(test)]
mod tests {
    use rocketlog_common::{PhysicalOffset, QueueOffset};

    use super::*;

    fn stored(msg: AppendMessage) -> StoredMessage {
        StoredMessage {
            topic: msg.topic,
            queue_id: msg.queue_id,
            flags: msg.flags,
            tag: msg.tag,
            keys: msg.keys,
            message_id: msg.message_id,
            born_timestamp_ms: msg.born_timestamp_ms,
            born_host: msg.born_host,
            store_host: msg.store_host,
            reconsume_times: msg.reconsume_times,
            prepared_transaction_offset: msg.prepared_transaction_offset,
            properties: msg.properties,
            body: msg.body,
            queue_offset: QueueOffset(3),
            physical_offset: PhysicalOffset(4096),
            size: 100,
            store_timestamp_ms: 1_000,
        }
    }

    fn sent() -> AppendMessage {
        AppendMessage {
            topic: "orders".into(),
            queue_id: 5,
            flags: 4,
            tag: Some("TagA".into()),
            keys: vec!["k1".into()],
            message_id: "01AB".into(),
            born_timestamp_ms: 7,
            born_host: "10.0.0.1".into(),
            store_host: "b:8081".into(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            properties: vec![("order".into(), "42".into())],
            body: b"pay".to_vec(),
        }
    }

    #[test]
    fn half_hides_the_destination_and_commit_restores_it() {
        let half = to_half(sent(), Some(Duration::from_millis(1500)));
        assert_eq!((half.topic.as_str(), half.queue_id), (HALF_TOPIC, 0));
        let stored_half = stored(half);
        let info = half_info(&stored_half).unwrap();
        assert_eq!(
            info,
            HalfInfo {
                topic: "orders".into(),
                queue_id: 5,
                first_check: Some(Duration::from_millis(1500)),
            }
        );
        let real = committed(&stored_half, &info);
        let want = AppendMessage {
            prepared_transaction_offset: 4096,
            ..sent()
        };
        assert_eq!(real.topic, want.topic);
        assert_eq!(real.queue_id, want.queue_id);
        assert_eq!(real.properties, want.properties);
        assert_eq!(real.message_id, want.message_id);
        assert_eq!(real.body, want.body);
        assert_eq!(real.tag, want.tag);
        assert_eq!(real.keys, want.keys);
        assert_eq!(real.flags, want.flags);
        assert_eq!(real.prepared_transaction_offset, 4096);
        let view = as_sent(&stored_half, &info);
        assert_eq!(view.topic, "orders");
        assert_eq!(view.properties, vec![("order".to_owned(), "42".to_owned())]);
    }

    #[test]
    fn a_half_without_its_destination_is_an_error() {
        let mut m = stored(sent());
        assert!(half_info(&m).is_err());
        m.properties
            .push((REAL_TOPIC_PROPERTY.into(), "orders".into()));
        m.properties.push((REAL_QUEUE_PROPERTY.into(), "x".into()));
        assert!(matches!(
            half_info(&m),
            Err(TransactionError::HalfProperty {
                property: REAL_QUEUE_PROPERTY,
                ..
            })
        ));
    }
}
