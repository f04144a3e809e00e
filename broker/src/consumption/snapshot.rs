//! The consumption state snapshot: every (group, topic, queue)'s committed offset, finished
//! ranges above it and in-flight entries, plus the journal generation replay starts from.
//! Written to `snapshot.tmp`, fsynced, renamed over `snapshot`, directory fsynced: a crash leaves
//! either the old or the new snapshot, never a mix.
//!
//! Layout (big-endian): `magic "RLCSNAP1" | journal_gen u64 | max_seq u64 | queue count u32 |
//! queues | crc32c(all preceding bytes) u32`. Each queue: `group str | topic str | queue_id u32 |
//! committed u64 | done count u32 | (start u64, end u64)* | in-flight count u32 | (offset u64,
//! seq u64, attempt u32, deadline_ms i64, message_group opt-str)*`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::codec::{DecodeError, Reader, Writer};
use super::error::ConsumeError;
use super::journal::{sync_dir, StateKey};
use super::queue_state::InFlight;

const MAGIC: &[u8; 8] = b"RLCSNAP1";
const FILE_NAME: &str = "snapshot";
const TMP_NAME: &str = "snapshot.tmp";
/// Smallest encoding of a queue entry (empty strings, no ranges, no entries).
const MIN_QUEUE_SIZE: usize = 4 + 4 + 4 + 8 + 4 + 4;
const DONE_RANGE_SIZE: usize = 16;
const MIN_IN_FLIGHT_SIZE: usize = 8 + 8 + 4 + 8 + 1;

/// One queue's persisted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSnapshot {
    pub key: StateKey,
    pub queue_id: u32,
    pub committed: u64,
    pub done: Vec<(u64, u64)>,
    pub in_flight: Vec<(u64, InFlight)>,
}

/// The whole persisted state at one point.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Replay journal generations from this one on.
    pub journal_gen: u64,
    /// Highest delivery sequence number handed out before the snapshot.
    pub max_seq: u64,
    pub queues: Vec<QueueSnapshot>,
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.buf.extend_from_slice(MAGIC);
        w.u64(self.journal_gen);
        w.u64(self.max_seq);
        w.u32(u32::try_from(self.queues.len()).unwrap_or(u32::MAX));
        for q in &self.queues {
            w.str(&q.key.group);
            w.str(&q.key.topic);
            w.u32(q.queue_id);
            w.u64(q.committed);
            w.u32(u32::try_from(q.done.len()).unwrap_or(u32::MAX));
            for (s, e) in &q.done {
                w.u64(*s);
                w.u64(*e);
            }
            w.u32(u32::try_from(q.in_flight.len()).unwrap_or(u32::MAX));
            for (offset, f) in &q.in_flight {
                w.u64(*offset);
                w.u64(f.seq);
                w.u32(f.attempt);
                w.i64(f.deadline_ms);
                w.opt_str(f.message_group.as_deref());
            }
        }
        let crc = crc32c::crc32c(&w.buf);
        w.u32(crc);
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        if bytes.len() < MAGIC.len() + 4 {
            return Err(DecodeError("snapshot too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(DecodeError("snapshot checksum mismatch"));
        }
        let mut r = Reader::new(body);
        if r.bytes(MAGIC.len())? != MAGIC {
            return Err(DecodeError("not a consumption snapshot"));
        }
        let journal_gen = r.u64()?;
        let max_seq = r.u64()?;
        let n = r.count(MIN_QUEUE_SIZE)?;
        let mut queues = Vec::with_capacity(n);
        for _ in 0..n {
            let key = StateKey {
                group: r.str()?,
                topic: r.str()?,
            };
            let queue_id = r.u32()?;
            let committed = r.u64()?;
            let nd = r.count(DONE_RANGE_SIZE)?;
            let mut done = Vec::with_capacity(nd);
            for _ in 0..nd {
                done.push((r.u64()?, r.u64()?));
            }
            let nf = r.count(MIN_IN_FLIGHT_SIZE)?;
            let mut in_flight = Vec::with_capacity(nf);
            for _ in 0..nf {
                let offset = r.u64()?;
                let f = InFlight {
                    seq: r.u64()?,
                    attempt: r.u32()?,
                    deadline_ms: r.i64()?,
                    message_group: r.opt_str()?,
                    dead_lettering: false,
                };
                in_flight.push((offset, f));
            }
            queues.push(QueueSnapshot {
                key,
                queue_id,
                committed,
                done,
                in_flight,
            });
        }
        if r.remaining() != 0 {
            return Err(DecodeError("trailing bytes in snapshot"));
        }
        Ok(Snapshot {
            journal_gen,
            max_seq,
            queues,
        })
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Reads the snapshot in `dir`; `None` when there is none yet. A snapshot that fails
/// validation is an error (it was renamed into place only after an fsync, so it is not a torn
/// write but damage that needs a human).
pub fn read(dir: &Path) -> Result<Option<Snapshot>, ConsumeError> {
    let p = path(dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConsumeError::io(p, e)),
    };
    Snapshot::decode(&bytes)
        .map(Some)
        .map_err(|DecodeError(reason)| ConsumeError::Corrupt {
            path: p,
            offset: 0,
            reason: reason.to_owned(),
        })
}

/// Atomically replaces the snapshot in `dir`.
pub fn write(dir: &Path, snapshot: &Snapshot) -> Result<(), ConsumeError> {
    let tmp = dir.join(TMP_NAME);
    let bytes = snapshot.encode();
    let mut f = File::create(&tmp).map_err(|e| ConsumeError::io(&tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| ConsumeError::io(&tmp, e))?;
    drop(f);
    let dst = path(dir);
    std::fs::rename(&tmp, &dst).map_err(|e| ConsumeError::io(&dst, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            journal_gen: 4,
            max_seq: 99,
            queues: vec![
                QueueSnapshot {
                    key: StateKey {
                        group: "g".into(),
                        topic: "t".into(),
                    },
                    queue_id: 1,
                    committed: 10,
                    done: vec![(12, 15), (20, 21)],
                    in_flight: vec![(
                        11,
                        InFlight {
                            seq: 98,
                            attempt: 3,
                            deadline_ms: 123,
                            message_group: Some("m".into()),
                            dead_lettering: false,
                        },
                    )],
                },
                QueueSnapshot {
                    key: StateKey {
                        group: "g2".into(),
                        topic: "t".into(),
                    },
                    queue_id: 0,
                    committed: 0,
                    done: vec![],
                    in_flight: vec![],
                },
            ],
        }
    }

    #[test]
    fn round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), &sample()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(sample()));
        let mut next = sample();
        next.journal_gen = 5;
        write(dir.path(), &next).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(next));
    }

    #[test]
    fn damage_is_detected_without_panic() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Snapshot::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(Snapshot::decode(&b).is_err(), "flip {i}");
        }
    }
}
