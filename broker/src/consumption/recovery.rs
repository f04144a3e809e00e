//! The state of one (group, topic) and its rebuilding on open: the snapshot, then every
//! journal generation from the snapshot's on, record by record.
//!
//! Replay is safe over a snapshot that already contains some of the replayed changes: a
//! snapshot is cut after the journal is rotated, while the records of one (group, topic) are
//! written in the same critical section as the change they describe, so the snapshot holds a
//! prefix of the new generation's records for each key, and every record "sets" state (in
//! flight with these fields / finished / finished over a range / restarted at) rather than
//! adding to it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::error::ConsumeError;
use super::journal::{self, Record, StateKey};
use super::queue_state::{InFlight, QueueState};
use super::snapshot::{self, QueueSnapshot, Snapshot};

/// Consumption state of one group on one topic: its queues and the round-robin cursor.
#[derive(Debug, Default, Clone)]
pub struct TopicState {
    pub queues: BTreeMap<u32, QueueState>,
    /// Queue the next receive starts at (memory only).
    pub cursor: u32,
}

impl TopicState {
    /// Applies one journal record (replay).
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Deliver {
                queue_id,
                offset,
                seq,
                attempt,
                deadline_ms,
                message_group,
                ..
            } => {
                self.queues.entry(*queue_id).or_default().set_in_flight(
                    *offset,
                    InFlight {
                        seq: *seq,
                        attempt: *attempt,
                        deadline_ms: *deadline_ms,
                        message_group: message_group.clone(),
                        dead_lettering: false,
                    },
                );
            }
            Record::Finish {
                queue_id, offset, ..
            } => self.queues.entry(*queue_id).or_default().finish(*offset),
            Record::Reset {
                queue_id, offset, ..
            } => self.queues.entry(*queue_id).or_default().reset(*offset),
            Record::FinishRange {
                queue_id,
                start,
                end,
                ..
            } => self
                .queues
                .entry(*queue_id)
                .or_default()
                .finish_range(*start, *end),
        }
    }

    /// This state as snapshot entries.
    pub fn to_snapshot(&self, key: &StateKey, out: &mut Vec<QueueSnapshot>) {
        for (queue_id, q) in &self.queues {
            out.push(QueueSnapshot {
                key: key.clone(),
                queue_id: *queue_id,
                committed: q.committed(),
                done: q.done_ranges().collect(),
                in_flight: q.in_flight_entries().map(|(o, f)| (o, f.clone())).collect(),
            });
        }
    }

    fn load(&mut self, q: QueueSnapshot) {
        let mut state = QueueState::new(q.committed);
        for (offset, f) in q.in_flight {
            state.set_in_flight(offset, f);
        }
        for (start, end) in q.done {
            state.mark_skipped(start, end);
        }
        self.queues.insert(q.queue_id, state);
    }
}

/// The (group, topic) states that snapshot entries describe (a later entry for the same
/// queue replaces an earlier one).
pub fn from_snapshot(queues: Vec<QueueSnapshot>) -> HashMap<StateKey, TopicState> {
    let mut topics: HashMap<StateKey, TopicState> = HashMap::new();
    for q in queues {
        topics.entry(q.key.clone()).or_default().load(q);
    }
    topics
}

/// What [`recover`] rebuilt.
#[derive(Debug, Default)]
pub struct Recovered {
    pub topics: HashMap<StateKey, TopicState>,
    /// Highest delivery sequence number seen.
    pub max_seq: u64,
    /// First journal generation not yet used.
    pub next_gen: u64,
}

/// Rebuilds the state from the snapshot and journals in `dir`.
pub fn recover(dir: &Path) -> Result<Recovered, ConsumeError> {
    let snap = snapshot::read(dir)?.unwrap_or_default();
    let Snapshot {
        journal_gen,
        max_seq,
        queues,
    } = snap;
    let mut out = Recovered {
        topics: from_snapshot(queues),
        max_seq,
        next_gen: journal_gen + 1,
    };
    let files = journal::list(dir)?;
    let replay: Vec<_> = files
        .into_iter()
        .filter(|(g, _)| *g >= journal_gen)
        .collect();
    let last = replay.len().saturating_sub(1);
    for (i, (gen, path)) in replay.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|e| ConsumeError::io(path, e))?;
        let decoded = journal::decode(&bytes);
        if let Some(reason) = decoded.stopped {
            // The last generation may end in a torn write that was never acknowledged; an
            // earlier one was fsynced whole at rotation, so a bad frame there is damage.
            if i == last {
                tracing::info!(path = %path.display(), at = decoded.valid_len, reason, "journal ends in a torn record; ignoring it");
            } else {
                tracing::warn!(path = %path.display(), at = decoded.valid_len, reason, "journal generation is damaged; replaying what precedes the damage");
            }
        }
        for rec in &decoded.records {
            if let Record::Deliver { seq, .. } = rec {
                out.max_seq = out.max_seq.max(*seq);
            }
            out.topics.entry(rec.key().clone()).or_default().apply(rec);
        }
        out.next_gen = out.next_gen.max(gen + 1);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumption::journal::Journal;

    fn key() -> StateKey {
        StateKey {
            group: "g".into(),
            topic: "t".into(),
        }
    }

    fn deliver(offset: u64, seq: u64) -> Record {
        Record::Deliver {
            key: key(),
            queue_id: 0,
            offset,
            seq,
            attempt: 1,
            deadline_ms: 1000,
            message_group: None,
        }
    }

    fn finish(offset: u64) -> Record {
        Record::Finish {
            key: key(),
            queue_id: 0,
            offset,
        }
    }

    #[test]
    fn replay_over_snapshot_that_already_holds_some_records() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![
            Record::Reset {
                key: key(),
                queue_id: 0,
                offset: 0,
            },
            deliver(0, 1),
            deliver(1, 2),
            deliver(2, 3),
            finish(1),
            finish(0),
        ];
        // The snapshot saw the first five records; the journal (same generation) holds all.
        let mut partial = TopicState::default();
        for r in &records[..5] {
            partial.apply(r);
        }
        let mut queues = Vec::new();
        partial.to_snapshot(&key(), &mut queues);
        snapshot::write(
            dir.path(),
            &Snapshot {
                journal_gen: 1,
                max_seq: 3,
                queues,
            },
        )
        .unwrap();
        let j = Journal::create(dir.path(), 1, true).unwrap();
        j.append(&records).unwrap();
        j.sync_all().unwrap();

        let rec = recover(dir.path()).unwrap();
        assert_eq!(rec.max_seq, 3);
        assert_eq!(rec.next_gen, 2);
        let q = &rec.topics[&key()].queues[&0];
        assert_eq!(q.committed(), 2);
        assert_eq!(q.in_flight_len(), 1);
        assert_eq!(q.in_flight(2).map(|f| f.seq), Some(3));
    }

    #[test]
    fn torn_tail_of_last_generation_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), 1, true).unwrap();
        j.append(&[deliver(0, 1), finish(0)]).unwrap();
        j.sync_all().unwrap();
        drop(j);
        let path = journal::journal_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let full = bytes.len();
        bytes.extend_from_slice(&journal::encode(&[deliver(1, 2)])[..5]);
        std::fs::write(&path, &bytes).unwrap();
        let rec = recover(dir.path()).unwrap();
        let q = &rec.topics[&key()].queues[&0];
        assert_eq!(q.committed(), 1);
        assert_eq!(q.in_flight_len(), 0);
        assert!(full > 0);
    }

    #[test]
    fn empty_dir_recovers_empty() {
        let dir = tempfile::tempdir().unwrap();
        let rec = recover(dir.path()).unwrap();
        assert!(rec.topics.is_empty());
        assert_eq!(rec.next_gen, 1);
    }
}
