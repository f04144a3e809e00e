//! Request field rules (the proxy's `GrpcValidator` and send-path checks), as plain functions.

use std::collections::HashMap;

use rocketlog_proto::v2;

use super::convert::is_reserved_property;
use super::error::ApiError;

/// Most user properties on one message (the proxy's `userPropertyMaxNum`).
pub const MAX_USER_PROPERTIES: usize = 128;
/// Largest total of user property keys and values, tag and keys, in bytes (proxy: 16 KiB).
pub const MAX_USER_PROPERTY_BYTES: usize = 16 * 1024;
/// A message group must be shorter than this many bytes (proxy: 64).
pub const MAX_MESSAGE_GROUP_BYTES: usize = 64;
/// Most messages in one SendMessage request.
pub const MAX_MESSAGES_PER_SEND: usize = 1024;
/// Prefix of the broker's own topics (transaction half and op messages, ...): no client may
/// route, send to or read them (the proxy refuses system topics with ILLEGAL_TOPIC too).
pub const SYSTEM_TOPIC_PREFIX: &str = "RMQ_SYS_";
/// Apache RocketMQ's own system topic prefix (`TopicValidator.SYSTEM_TOPIC_PREFIX`).
const APACHE_SYSTEM_TOPIC_PREFIX: &str = "rmq_sys_";
/// Apache RocketMQ's system topics without either prefix (`TopicValidator.SYSTEM_TOPIC_SET`):
/// refused too, so that an application written against rocketlog behaves the same there.
const APACHE_SYSTEM_TOPICS: &[&str] = &[
    "TBW102",
    "SCHEDULE_TOPIC_XXXX",
    "BenchmarkTest",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
    "CHECKPOINT_TOPIC",
];

/// A topic of the broker itself, which no client may route, send to or read (the proxy's
/// `TopicValidator.isSystemTopic`, plus rocketlog's own `RMQ_SYS_` topics).
pub fn is_system_topic(name: &str) -> bool {
    name.starts_with(SYSTEM_TOPIC_PREFIX)
        || name.starts_with(APACHE_SYSTEM_TOPIC_PREFIX)
        || APACHE_SYSTEM_TOPICS.contains(&name)
}
/// Most entries in one AckMessage request.
pub const MAX_ACK_ENTRIES: usize = 1024;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn is_blank(s: &str) -> bool {
    s.chars().all(char::is_whitespace)
}

/// The topic name of a resource, checked.
pub fn topic(resource: Option<&v2::Resource>) -> Result<String, ApiError> {
    let name = resource.map(|r| r.name.as_str()).unwrap_or_default();
    rocketlog_common::validate_topic(name).map_err(|e| ApiError::IllegalTopic(e.to_string()))?;
    if is_system_topic(name) {
        return Err(ApiError::IllegalTopic(format!(
            "cannot access system topic {name:?}"
        )));
    }
    Ok(name.to_owned())
}

/// The consumer group name of a resource, checked.
pub fn group(resource: Option<&v2::Resource>) -> Result<String, ApiError> {
    let name = resource.map(|r| r.name.as_str()).unwrap_or_default();
    rocketlog_common::validate_group(name)
        .map_err(|e| ApiError::IllegalConsumerGroup(e.to_string()))?;
    Ok(name.to_owned())
}

/// A tag: empty means none; otherwise not blank, no `|`, no control characters.
pub fn tag(tag: &str) -> Result<(), ApiError> {
    if tag.is_empty() {
        return Ok(());
    }
    if is_blank(tag) {
        return Err(ApiError::IllegalMessageTag(
            "tag cannot be only whitespace".into(),
        ));
    }
    if tag.contains('|') {
        return Err(ApiError::IllegalMessageTag("tag cannot contain '|'".into()));
    }
    if has_control(tag) {
        return Err(ApiError::IllegalMessageTag(
            "tag cannot contain control characters".into(),
        ));
    }
    Ok(())
}

/// A business key: empty ones are ignored; otherwise not blank, no control characters.
pub fn key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Ok(());
    }
    if is_blank(key) {
        return Err(ApiError::IllegalMessageKey(
            "key cannot be only whitespace".into(),
        ));
    }
    if has_control(key) {
        return Err(ApiError::IllegalMessageKey(
            "key cannot contain control characters".into(),
        ));
    }
    Ok(())
}

/// A FIFO message group: not blank, shorter than 64 bytes, no control characters.
pub fn message_group(group: &str) -> Result<(), ApiError> {
    if is_blank(group) {
        return Err(ApiError::IllegalMessageGroup(
            "message group cannot be only whitespace".into(),
        ));
    }
    if group.len() >= MAX_MESSAGE_GROUP_BYTES {
        return Err(ApiError::IllegalMessageGroup(format!(
            "message group is {} bytes; it must be shorter than {MAX_MESSAGE_GROUP_BYTES}",
            group.len()
        )));
    }
    if has_control(group) {
        return Err(ApiError::IllegalMessageGroup(
            "message group cannot contain control characters".into(),
        ));
    }
    Ok(())
}

/// User properties: at most 128, names not reserved by the broker, no control characters.
/// Returns their size in bytes.
pub fn user_properties(props: &HashMap<String, String>) -> Result<usize, ApiError> {
    if props.len() > MAX_USER_PROPERTIES {
        return Err(ApiError::PropertiesTooLarge(format!(
            "{} user properties; the limit is {MAX_USER_PROPERTIES}",
            props.len()
        )));
    }
    let mut size = 0usize;
    for (k, v) in props {
        if k.is_empty() || is_blank(k) {
            return Err(ApiError::IllegalPropertyKey(
                "property key cannot be empty".into(),
            ));
        }
        if is_reserved_property(k) {
            return Err(ApiError::IllegalPropertyKey(format!(
                "property key {k:?} is reserved by the broker"
            )));
        }
        if has_control(k) || has_control(v) {
            return Err(ApiError::IllegalPropertyKey(format!(
                "property {k:?} contains control characters"
            )));
        }
        size = size.saturating_add(k.len()).saturating_add(v.len());
    }
    Ok(size)
}

/// Compares dotted versions numerically (`5.0.10 > 5.0.3`); unparsable parts count as 0.
pub fn version_below(version: &str, floor: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.split(['.', '-'])
            .map(|p| p.parse::<u64>().unwrap_or(0))
            .collect()
    };
    let (a, b) = (parse(version), parse(floor));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x < y;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<(), ApiError>) -> Option<v2::Code> {
        r.err().map(|e| e.code())
    }

    #[test]
    fn tags() {
        assert_eq!(code(tag("")), None);
        assert_eq!(code(tag("TagA")), None);
        assert_eq!(code(tag("  ")), Some(v2::Code::IllegalMessageTag));
        assert_eq!(code(tag("a|b")), Some(v2::Code::IllegalMessageTag));
        assert_eq!(code(tag("a\nb")), Some(v2::Code::IllegalMessageTag));
    }

    #[test]
    fn keys_and_groups() {
        assert_eq!(code(key("")), None);
        assert_eq!(code(key(" ")), Some(v2::Code::IllegalMessageKey));
        assert_eq!(code(key("k\u{7}")), Some(v2::Code::IllegalMessageKey));
        assert_eq!(code(message_group("g1")), None);
        assert_eq!(
            code(message_group(&"g".repeat(64))),
            Some(v2::Code::IllegalMessageGroup)
        );
        assert_eq!(
            code(message_group(" ")),
            Some(v2::Code::IllegalMessageGroup)
        );
    }

    #[test]
    fn properties() {
        let mut p = HashMap::new();
        p.insert("a".to_owned(), "1".to_owned());
        assert_eq!(user_properties(&p).unwrap(), 2);
        p.insert("__MGROUP".to_owned(), "x".to_owned());
        assert_eq!(
            user_properties(&p).unwrap_err().code(),
            v2::Code::IllegalMessagePropertyKey
        );
        let many: HashMap<String, String> =
            (0..129).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(
            user_properties(&many).unwrap_err().code(),
            v2::Code::MessagePropertiesTooLarge
        );
    }

    #[test]
    fn versions() {
        assert!(version_below("5.0.2", "5.0.3"));
        assert!(!version_below("5.0.3", "5.0.3"));
        assert!(!version_below("5.0.10", "5.0.3"));
        assert!(!version_below("5.1.2", "5.0.3"));
        assert!(version_below("1.0.8", "5.0.3"));
    }

    #[test]
    fn names() {
        assert!(topic(None).is_err());
        let r = v2::Resource {
            resource_namespace: String::new(),
            name: "Topic_1".into(),
        };
        assert_eq!(topic(Some(&r)).unwrap(), "Topic_1");
        for name in [
            "RMQ_SYS_TRANS_HALF_TOPIC",
            "RMQ_SYS_WHEEL_TIMER",
            "rmq_sys_SYNC_BROKER_MEMBER_x",
            "TBW102",
            "SCHEDULE_TOPIC_XXXX",
        ] {
            let system = v2::Resource {
                resource_namespace: String::new(),
                name: name.into(),
            };
            let e = topic(Some(&system)).unwrap_err();
            assert_eq!(e.code(), v2::Code::IllegalTopic, "{name}");
            assert!(e.to_string().contains("system topic"), "{e}");
        }
        // Retry and dead-letter topics are not system topics (consumers read DLQs).
        assert!(!is_system_topic("%DLQ%group"));
        assert!(!is_system_topic("%RETRY%group"));
        let bad = v2::Resource {
            resource_namespace: String::new(),
            name: "a b".into(),
        };
        assert_eq!(
            group(Some(&bad)).unwrap_err().code(),
            v2::Code::IllegalConsumerGroup
        );
    }
}
