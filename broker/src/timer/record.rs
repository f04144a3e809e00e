//! The records the timer reads and appends, and the reserved properties that link them.
//!
//! - A **timer record** (topic [`TIMER_TOPIC`], queue 0) is the client's message as sent, plus
//!   its real topic, queue and delivery time. A rolled copy also names its first record
//!   (`origin`) and the record it was copied from (`source`).
//! - A **tombstone** (same topic) says that the message `(deliver_ms, origin)` was recalled.
//! - A **delivered record** is the message appended to its real topic at its time, with the
//!   same message id, carrying its delivery time and the timer record it came from (`source`),
//!   which is how a restart knows it was already delivered.

use rocketlog_store::{AppendMessage, StoredMessage};

use super::entry::{Entry, EntryKind};
use super::handle::RecallHandle;

/// The system topic holding pending delayed messages (queue 0).
pub const TIMER_TOPIC: &str = "RMQ_SYS_WHEEL_TIMER";
/// When the message becomes (or became) visible, ms since the epoch. Delivered messages keep it:
/// it becomes `SystemProperties.delivery_timestamp`.
pub const DELIVER_MS_PROPERTY: &str = "__TIMER_DELIVER_MS";
const REAL_TOPIC: &str = "__TIMER_TOPIC";
const REAL_QUEUE: &str = "__TIMER_QUEUE";
const ORIGIN: &str = "__TIMER_ORIGIN";
const SOURCE: &str = "__TIMER_SOURCE";
/// Marks a tombstone: the message it names was recalled.
pub const CANCEL: &str = "__TIMER_CANCEL";
/// Body of a tombstone (the store wants a body; nothing reads it).
const TOMBSTONE_BODY: &[u8] = b"recalled";

fn property<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn without(props: Vec<(String, String)>, keys: &[&str]) -> Vec<(String, String)> {
    props
        .into_iter()
        .filter(|(k, _)| !keys.contains(&k.as_str()))
        .collect()
}

/// `msg` (addressed to its real topic and queue) as a timer record due at `deliver_ms`.
pub fn timer_record(mut msg: AppendMessage, deliver_ms: i64) -> AppendMessage {
    let topic = std::mem::replace(&mut msg.topic, TIMER_TOPIC.to_owned());
    let queue = std::mem::replace(&mut msg.queue_id, 0);
    msg.properties.push((REAL_TOPIC.to_owned(), topic));
    msg.properties
        .push((REAL_QUEUE.to_owned(), queue.to_string()));
    msg.properties
        .push((DELIVER_MS_PROPERTY.to_owned(), deliver_ms.to_string()));
    msg
}

/// A message whose delivery time has already passed: stored directly, keeping its time.
pub fn immediate(mut msg: AppendMessage, deliver_ms: i64) -> AppendMessage {
    msg.properties
        .push((DELIVER_MS_PROPERTY.to_owned(), deliver_ms.to_string()));
    msg
}

/// The tombstone recalling the message `handle` names.
pub fn tombstone(handle: &RecallHandle, store_host: String, now_ms: i64) -> AppendMessage {
    AppendMessage {
        topic: TIMER_TOPIC.to_owned(),
        queue_id: 0,
        message_id: handle.message_id.clone(),
        born_timestamp_ms: now_ms,
        store_host,
        properties: vec![
            (REAL_TOPIC.to_owned(), handle.topic.clone()),
            (
                DELIVER_MS_PROPERTY.to_owned(),
                handle.deliver_ms.to_string(),
            ),
            (CANCEL.to_owned(), handle.origin.to_string()),
        ],
        body: TOMBSTONE_BODY.to_vec(),
        ..AppendMessage::default()
    }
}

/// The delivery time a timer record names.
pub fn deliver_ms(m: &StoredMessage) -> Option<i64> {
    property(&m.properties, DELIVER_MS_PROPERTY).and_then(|v| v.parse().ok())
}

/// The real topic a timer record names.
pub fn real_topic(m: &StoredMessage) -> Option<&str> {
    property(&m.properties, REAL_TOPIC)
}

/// The timer entry a record of the timer topic stands for; `None` for anything else (a
/// record without the timer's properties is ignored, never trusted).
pub fn entry(m: &StoredMessage, roll_horizon_ms: i64) -> Option<Entry> {
    if m.topic != TIMER_TOPIC {
        return None;
    }
    let deliver = deliver_ms(m)?;
    real_topic(m)?;
    let phys = m.physical_offset.0;
    if let Some(target) = property(&m.properties, CANCEL) {
        return Some(Entry {
            fire_ms: deliver,
            deliver_ms: deliver,
            phys,
            origin: target.parse().ok()?,
            size: m.size,
            kind: EntryKind::Cancel,
        });
    }
    let origin = match property(&m.properties, ORIGIN) {
        Some(o) => o.parse().ok()?,
        None => phys,
    };
    // From the record's own store time, so a rescan places it exactly where it was.
    let horizon = m.store_timestamp_ms.saturating_add(roll_horizon_ms);
    Some(Entry {
        fire_ms: deliver.min(horizon),
        deliver_ms: deliver,
        phys,
        origin,
        size: m.size,
        kind: EntryKind::Schedule,
    })
}

fn as_append(
    m: StoredMessage,
    topic: String,
    queue_id: u32,
    props: Vec<(String, String)>,
) -> AppendMessage {
    AppendMessage {
        topic,
        queue_id,
        flags: m.flags,
        tag: m.tag,
        keys: m.keys,
        message_id: m.message_id,
        born_timestamp_ms: m.born_timestamp_ms,
        born_host: m.born_host,
        store_host: m.store_host,
        reconsume_times: m.reconsume_times,
        prepared_transaction_offset: m.prepared_transaction_offset,
        properties: props,
        body: m.body,
    }
}

/// The message of timer record `m`, addressed to its real topic; `None` if `m` is not one.
pub fn delivered(m: StoredMessage) -> Option<AppendMessage> {
    let topic = real_topic(&m)?.to_owned();
    let queue_id: u32 = property(&m.properties, REAL_QUEUE)?.parse().ok()?;
    let source = m.physical_offset.0.to_string();
    let mut props = without(
        m.properties.clone(),
        &[REAL_TOPIC, REAL_QUEUE, ORIGIN, SOURCE, CANCEL],
    );
    props.push((SOURCE.to_owned(), source));
    Some(as_append(m, topic, queue_id, props))
}

/// A fresh copy of timer record `m` (first record `origin`), for a message still beyond the
/// roll horizon.
pub fn rolled(m: StoredMessage, origin: u64) -> AppendMessage {
    let source = m.physical_offset.0.to_string();
    let mut props = without(m.properties.clone(), &[ORIGIN, SOURCE]);
    props.push((ORIGIN.to_owned(), origin.to_string()));
    props.push((SOURCE.to_owned(), source));
    as_append(m, TIMER_TOPIC.to_owned(), 0, props)
}

/// The timer record a delivered record or rolled copy came from.
pub fn source_of(m: &StoredMessage) -> Option<u64> {
    property(&m.properties, SOURCE).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketlog_common::PhysicalOffset;

    fn stored(a: AppendMessage, phys: u64, store_ms: i64) -> StoredMessage {
        StoredMessage {
            topic: a.topic,
            queue_id: a.queue_id,
            flags: a.flags,
            tag: a.tag,
            keys: a.keys,
            message_id: a.message_id,
            properties: a.properties,
            body: a.body,
            physical_offset: PhysicalOffset(phys),
            store_timestamp_ms: store_ms,
            size: 100,
            ..StoredMessage::default()
        }
    }

    fn original() -> AppendMessage {
        AppendMessage {
            topic: "orders".into(),
            queue_id: 3,
            flags: 3,
            tag: Some("t".into()),
            message_id: "ID1".into(),
            properties: vec![("k".into(), "v".into())],
            body: b"hello".to_vec(),
            ..AppendMessage::default()
        }
    }

    #[test]
    fn schedule_deliver_and_roll() {
        let rec = stored(timer_record(original(), 5_000), 64, 1_000);
        let e = entry(&rec, 1_000_000).unwrap();
        assert_eq!(
            (e.fire_ms, e.deliver_ms, e.phys, e.origin),
            (5_000, 5_000, 64, 64)
        );
        assert_eq!(e.kind, EntryKind::Schedule);
        // Beyond the horizon: fires at store time + horizon.
        let far = entry(&rec, 2_000).unwrap();
        assert_eq!((far.fire_ms, far.deliver_ms), (3_000, 5_000));

        let copy = stored(rolled(rec.clone(), 64), 512, 3_000);
        let e = entry(&copy, 2_000).unwrap();
        assert_eq!(
            (e.fire_ms, e.deliver_ms, e.phys, e.origin),
            (5_000, 5_000, 512, 64)
        );
        assert_eq!(source_of(&copy), Some(64));

        let d = delivered(copy).unwrap();
        assert_eq!((d.topic.as_str(), d.queue_id), ("orders", 3));
        assert_eq!(d.message_id, "ID1");
        assert_eq!(d.body, b"hello");
        let names: Vec<&str> = d.properties.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["k", DELIVER_MS_PROPERTY, SOURCE]);
        assert_eq!(property(&d.properties, SOURCE), Some("512"));
    }

    #[test]
    fn tombstones_and_foreign_records() {
        let h = RecallHandle {
            topic: "orders".into(),
            message_id: "ID1".into(),
            deliver_ms: 5_000,
            origin: 64,
        };
        let t = stored(tombstone(&h, "b".into(), 1), 900, 2_000);
        let e = entry(&t, 10).unwrap();
        assert_eq!(e.kind, EntryKind::Cancel);
        assert_eq!(e.target(), (5_000, 64));
        assert_eq!(e.fire_ms, 5_000);
        // A client's message on some topic, or a timer-topic record without the properties.
        assert!(entry(&stored(original(), 1, 1), 10).is_none());
        let mut bare = stored(original(), 1, 1);
        bare.topic = TIMER_TOPIC.into();
        assert!(entry(&bare, 10).is_none());
    }
}
