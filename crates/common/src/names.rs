//! Topic and consumer-group name rules.
//!
//! The character set is the one every official client accepts (the Python client checks
//! `^[%a-zA-Z0-9_-]+$`); the lengths are Apache RocketMQ's limits.

use thiserror::Error;

/// Longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 127;
/// Longest consumer or producer group name accepted.
pub const MAX_GROUP_LEN: usize = 255;
/// Prefix of the retry topic of a consumer group.
pub const RETRY_TOPIC_PREFIX: &str = "%RETRY%";
/// Prefix of the dead-letter topic of a consumer group.
pub const DLQ_TOPIC_PREFIX: &str = "%DLQ%";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name {name:?} is {len} characters long; the limit is {max}")]
    TooLong {
        kind: &'static str,
        name: String,
        len: usize,
        max: usize,
    },
    #[error("{kind} name {name:?} has the character {ch:?}; only letters, digits, '%', '_' and '-' are allowed")]
    BadCharacter {
        kind: &'static str,
        name: String,
        ch: char,
    },
}

fn validate(kind: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    let len = name.chars().count();
    if len > max {
        return Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            len,
            max,
        });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '_' | '-')))
    {
        return Err(NameError::BadCharacter {
            kind,
            name: name.to_owned(),
            ch,
        });
    }
    Ok(())
}

/// Checks a topic name (including system topics such as `%DLQ%group`).
pub fn validate_topic(name: &str) -> Result<(), NameError> {
    validate("topic", name, MAX_TOPIC_LEN)
}

/// Checks a consumer or producer group name.
pub fn validate_group(name: &str) -> Result<(), NameError> {
    validate("group", name, MAX_GROUP_LEN)
}

/// The dead-letter topic of a consumer group: `%DLQ%<group>`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_TOPIC_PREFIX}{group}")
}

/// The retry topic of a consumer group: `%RETRY%<group>`.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_TOPIC_PREFIX}{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_client_names() {
        for n in [
            "TopicTest",
            "a",
            "%DLQ%group-1",
            "under_score",
            &"x".repeat(127),
        ] {
            assert_eq!(validate_topic(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(validate_topic(""), Err(NameError::Empty { kind: "topic" }));
        assert!(matches!(
            validate_topic(&"x".repeat(128)),
            Err(NameError::TooLong {
                len: 128,
                max: 127,
                ..
            })
        ));
        assert!(matches!(
            validate_topic("a/b"),
            Err(NameError::BadCharacter { ch: '/', .. })
        ));
        assert!(matches!(
            validate_group("g p"),
            Err(NameError::BadCharacter { ch: ' ', .. })
        ));
    }

    #[test]
    fn system_topic_names() {
        assert_eq!(dlq_topic("g"), "%DLQ%g");
        assert_eq!(retry_topic("g"), "%RETRY%g");
        assert_eq!(validate_topic(&dlq_topic("g")), Ok(()));
    }
}
