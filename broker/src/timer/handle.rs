//! Recall handles (`SendResultEntry.recall_handle`): opaque to clients; for us the hex of
//! `1|<origin>|<deliver_ms>|<topic>|<message_id>`, where `origin` is the physical offset of the
//! message's first timer record. Decoding bounds every part and never panics.

/// Longest handle accepted (topic ≤ 127, message id ≤ 128 and two numbers, hex-encoded).
const MAX_HANDLE_LEN: usize = 1024;
const VERSION: &str = "1";

/// What a recall handle names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecallHandle {
    pub topic: String,
    pub message_id: String,
    pub deliver_ms: i64,
    pub origin: u64,
}

impl RecallHandle {
    pub fn encode(&self) -> String {
        hex::encode(format!(
            "{VERSION}|{}|{}|{}|{}",
            self.origin, self.deliver_ms, self.topic, self.message_id
        ))
    }

    /// The handle `s` names, or `None` if it is not one of ours.
    pub fn decode(s: &str) -> Option<RecallHandle> {
        if s.is_empty() || s.len() > MAX_HANDLE_LEN {
            return None;
        }
        let text = String::from_utf8(hex::decode(s).ok()?).ok()?;
        let mut parts = text.split('|');
        if parts.next()? != VERSION {
            return None;
        }
        let origin = parts.next()?.parse().ok()?;
        let deliver_ms = parts.next()?.parse().ok()?;
        let topic = parts.next()?.to_owned();
        let message_id = parts.next()?.to_owned();
        if parts.next().is_some() || topic.is_empty() || message_id.is_empty() {
            return None;
        }
        Some(RecallHandle {
            topic,
            message_id,
            deliver_ms,
            origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let h = RecallHandle {
            topic: "orders-1".into(),
            message_id: "0100AA".into(),
            deliver_ms: 1_700_000_000_000,
            origin: 123_456,
        };
        assert_eq!(RecallHandle::decode(&h.encode()), Some(h.clone()));
        for bad in [
            "",
            "zz",
            "00ff",
            &hex::encode("2|1|2|t|m"),
            &hex::encode("1|x|2|t|m"),
            &hex::encode("1|1|2|t"),
            &hex::encode("1|1|2|t|m|extra"),
            &hex::encode("1|1|2||m"),
            &"ab".repeat(600),
        ] {
            assert_eq!(RecallHandle::decode(bad), None, "{bad}");
        }
    }
}
