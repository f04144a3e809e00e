//! Op records: the commit log's account of what happened to each half message. One record per
//! event, appended to queue 0 of [`OP_TOPIC`] (a system topic no client can read):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | format version, 1 |
//! | 1 | kind: 1 commit, 2 rollback, 3 check sent |
//! | 2..10 | physical offset of the half message (u64, big endian) |
//! | 10..18 | queue offset of the half message in the half queue (u64, big endian) |
//!
//! A commit or rollback record ends the transaction; check records count the checks sent, so
//! the count survives a restart.

use rocketlog_store::AppendMessage;

use super::error::TransactionError;

/// Topic of op records.
pub const OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// Length of an encoded op record body.
pub const OP_LEN: usize = 18;
const VERSION: u8 = 1;

/// What happened to a half message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Commit,
    Rollback,
    Check,
}

impl OpKind {
    fn code(self) -> u8 {
        match self {
            OpKind::Commit => 1,
            OpKind::Rollback => 2,
            OpKind::Check => 3,
        }
    }
}

/// One op record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub half_physical: u64,
    pub half_queue_offset: u64,
}

impl Op {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(OP_LEN);
        out.push(VERSION);
        out.push(self.kind.code());
        out.extend_from_slice(&self.half_physical.to_be_bytes());
        out.extend_from_slice(&self.half_queue_offset.to_be_bytes());
        out
    }

    /// Decodes a record body; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Op, TransactionError> {
        let Ok(b) = <&[u8; OP_LEN]>::try_from(bytes) else {
            return Err(TransactionError::OpLength {
                len: bytes.len(),
                expected: OP_LEN,
            });
        };
        if b[0] != VERSION {
            return Err(TransactionError::OpVersion(b[0]));
        }
        let kind = match b[1] {
            1 => OpKind::Commit,
            2 => OpKind::Rollback,
            3 => OpKind::Check,
            k => return Err(TransactionError::OpKind(k)),
        };
        let mut physical = [0u8; 8];
        physical.copy_from_slice(&b[2..10]);
        let mut queue = [0u8; 8];
        queue.copy_from_slice(&b[10..18]);
        Ok(Op {
            kind,
            half_physical: u64::from_be_bytes(physical),
            half_queue_offset: u64::from_be_bytes(queue),
        })
    }

    /// The record to append for this op.
    pub fn message(&self, store_host: &str, now_ms: i64) -> AppendMessage {
        AppendMessage {
            topic: OP_TOPIC.to_owned(),
            queue_id: 0,
            flags: 0,
            tag: None,
            keys: Vec::new(),
            // Not indexed: op records are found through their queue only.
            message_id: String::new(),
            born_timestamp_ms: now_ms,
            born_host: store_host.to_owned(),
            store_host: store_host.to_owned(),
            reconsume_times: 0,
            prepared_transaction_offset: i64::try_from(self.half_physical).unwrap_or(i64::MAX),
            properties: Vec::new(),
            body: self.encode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [OpKind::Commit, OpKind::Rollback, OpKind::Check] {
            let op = Op {
                kind,
                half_physical: 0x0102_0304_0506_0708,
                half_queue_offset: u64::MAX,
            };
            let bytes = op.encode();
            assert_eq!(bytes.len(), OP_LEN);
            assert_eq!(Op::decode(&bytes).unwrap(), op);
            let m = op.message("h:1", 5);
            assert_eq!(m.topic, OP_TOPIC);
            assert_eq!(Op::decode(&m.body).unwrap(), op);
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let good = Op {
            kind: OpKind::Commit,
            half_physical: 1,
            half_queue_offset: 2,
        }
        .encode();
        for len in 0..good.len() {
            assert!(Op::decode(&good[..len]).is_err());
        }
        let mut long = good.clone();
        long.push(0);
        assert!(Op::decode(&long).is_err());
        let mut bad = good.clone();
        bad[0] = 9;
        assert!(matches!(
            Op::decode(&bad),
            Err(TransactionError::OpVersion(9))
        ));
        let mut bad = good;
        bad[1] = 0;
        assert!(matches!(Op::decode(&bad), Err(TransactionError::OpKind(0))));
        // Every single-byte input and a spread of 18-byte inputs decode or fail cleanly.
        for b in 0..=255u8 {
            let _ = Op::decode(&[b]);
            let mut x = [b; OP_LEN];
            x[0] = VERSION;
            let _ = Op::decode(&x);
        }
    }
}
