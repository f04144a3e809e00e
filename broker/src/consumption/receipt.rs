//! Receipt handles: the opaque string handed out with each delivery and given back on ack,
//! change-invisible-duration and forward-to-DLQ.
//!
//! A handle names one delivery of one message: (queue id, queue offset, delivery sequence
//! number). The sequence number is new for every delivery, so a handle from an earlier delivery
//! (or from before a change of invisible duration) no longer matches the in-flight entry and is
//! refused. A checksum over the fields and a hash of the topic reject garbage and handles used
//! against another topic before any state is looked at.
//!
//! Byte layout (big-endian), rendered as lower-case hex:
//!
//! | bytes  | field                                   |
//! |--------|-----------------------------------------|
//! | 0      | version (`1`)                           |
//! | 1..5   | queue id (u32)                          |
//! | 5..13  | queue offset (u64)                      |
//! | 13..21 | delivery sequence number (u64)          |
//! | 21..25 | CRC32C of the topic name                |
//! | 25..29 | CRC32C of bytes 0..25                   |

use super::error::ConsumeError;

const VERSION: u8 = 1;
const QUEUE_ID_AT: usize = 1;
const OFFSET_AT: usize = 5;
const SEQ_AT: usize = 13;
const TOPIC_CRC_AT: usize = 21;
const CRC_AT: usize = 25;
const LEN: usize = 29;
const HEX_LEN: usize = LEN * 2;

/// The fields a receipt handle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptHandle {
    pub queue_id: u32,
    pub queue_offset: u64,
    /// Delivery sequence number, unique per delivery across restarts.
    pub seq: u64,
}

fn invalid(reason: &'static str) -> ConsumeError {
    ConsumeError::InvalidReceiptHandle { reason }
}

impl ReceiptHandle {
    /// Renders the handle for `topic`.
    pub fn encode(&self, topic: &str) -> String {
        let mut b = [0u8; LEN];
        b[0] = VERSION;
        b[QUEUE_ID_AT..OFFSET_AT].copy_from_slice(&self.queue_id.to_be_bytes());
        b[OFFSET_AT..SEQ_AT].copy_from_slice(&self.queue_offset.to_be_bytes());
        b[SEQ_AT..TOPIC_CRC_AT].copy_from_slice(&self.seq.to_be_bytes());
        b[TOPIC_CRC_AT..CRC_AT].copy_from_slice(&crc32c::crc32c(topic.as_bytes()).to_be_bytes());
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        b[CRC_AT..LEN].copy_from_slice(&crc.to_be_bytes());
        let mut s = String::with_capacity(HEX_LEN);
        for byte in b {
            s.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            s.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
        }
        s
    }

    /// Parses a handle presented for `topic`; any malformed input is an
    /// [`ConsumeError::InvalidReceiptHandle`], never a panic.
    pub fn decode(handle: &str, topic: &str) -> Result<Self, ConsumeError> {
        let raw = handle.as_bytes();
        if raw.len() != HEX_LEN {
            return Err(invalid("wrong length"));
        }
        let mut b = [0u8; LEN];
        for (i, pair) in raw.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(|| invalid("not hex"))?;
            let lo = hex_value(pair[1]).ok_or_else(|| invalid("not hex"))?;
            b[i] = (hi << 4) | lo;
        }
        if b[0] != VERSION {
            return Err(invalid("unknown version"));
        }
        if crc32c::crc32c(&b[..CRC_AT]) != be_u32(&b[CRC_AT..LEN]) {
            return Err(invalid("checksum mismatch"));
        }
        if crc32c::crc32c(topic.as_bytes()) != be_u32(&b[TOPIC_CRC_AT..CRC_AT]) {
            return Err(invalid("handle belongs to another topic"));
        }
        Ok(ReceiptHandle {
            queue_id: be_u32(&b[QUEUE_ID_AT..OFFSET_AT]),
            queue_offset: be_u64(&b[OFFSET_AT..SEQ_AT]),
            seq: be_u64(&b[SEQ_AT..TOPIC_CRC_AT]),
        })
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReceiptHandle {
        ReceiptHandle {
            queue_id: 7,
            queue_offset: 123_456_789_012,
            seq: u64::MAX - 3,
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let s = h.encode("TopicA");
        assert_eq!(s.len(), HEX_LEN);
        assert_eq!(ReceiptHandle::decode(&s, "TopicA").unwrap(), h);
        assert_eq!(
            ReceiptHandle::decode(&s.to_uppercase(), "TopicA").unwrap(),
            h
        );
    }

    #[test]
    fn other_topic_is_refused() {
        let s = sample().encode("TopicA");
        assert!(matches!(
            ReceiptHandle::decode(&s, "TopicB"),
            Err(ConsumeError::InvalidReceiptHandle { .. })
        ));
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        let good = sample().encode("t");
        let mut inputs: Vec<String> = vec![
            String::new(),
            "x".into(),
            "zz".repeat(LEN),
            "é".repeat(HEX_LEN / 2),
            good[..HEX_LEN - 2].to_owned(),
            format!("{good}00"),
        ];
        // Every single-character flip of a valid handle must be caught.
        for i in 0..HEX_LEN {
            let mut bytes = good.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            inputs.push(String::from_utf8(bytes).unwrap());
        }
        for input in inputs {
            assert!(
                matches!(
                    ReceiptHandle::decode(&input, "t"),
                    Err(ConsumeError::InvalidReceiptHandle { .. })
                ),
                "{input:?}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Deterministic pseudo-random strings of every length up to twice the handle length.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..(HEX_LEN * 2) {
            for _ in 0..50 {
                let s: String = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        char::from(b"0123456789abcdefABCDEFxyz-_"[(x % 27) as usize])
                    })
                    .collect();
                let _ = ReceiptHandle::decode(&s, "t");
            }
        }
    }
}
