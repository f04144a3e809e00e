//! Whole-state transfer from a master to its slaves: the master exports its consumption state
//! (every (group, topic, queue): committed offset, finished ranges above it, in-flight
//! deliveries, and the highest delivery sequence number) about once a second when
//! [`Consumption::state_version`] has moved; a slave installs each copy in place of its own.
//! After a promotion the slave then redelivers only what was in flight or unread at the last
//! copy, and the receipt handles the old master gave out still ack on it (a handle is
//! (queue, offset, delivery sequence) with topic checksums: nothing in it names a broker).
//!
//! The other way round, a slave whose consumers received and acked while the master was down
//! sends its export back when it rejoins, and the master merges the acks in
//! ([`Consumption::merge_finished`]): whatever either side finished stays finished, so the
//! master does not deliver again what the slave's consumers already acked.
//!
//! The image is the snapshot format (`snapshot.rs`) with `journal_gen` 0, so decoding it is
//! as strict as reading a snapshot file: a checksum over every byte, no trailing bytes.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::codec::DecodeError;
use super::engine::{Consumption, Slot};
use super::error::ConsumeError;
use super::journal::{Record, StateKey};
use super::queue_state::QueueState;
use super::recovery::{self, TopicState};
use super::snapshot::Snapshot;

/// Largest offset an image may name. Queue offsets are far below it; a larger one is damage,
/// and would make the read cursor's `+ 1` arithmetic overflow.
const MAX_OFFSET: u64 = i64::MAX as u64;

/// Most offsets of one queue a merge journals one `Finish` record each (the records an ack
/// writes). Past it the queue's newly finished runs are journaled as one `FinishRange` each:
/// per-offset records cost about 100 bytes of memory and 45 of journal apiece, built and
/// written under the slot lock that the group's receives and acks wait on, and a slave that
/// served a busy group for long, or skipped a long filtered-out stretch, can bring millions.
const MAX_FINISH_RECORDS_PER_QUEUE: u64 = 100_000;

fn invalid(reason: &'static str) -> ConsumeError {
    ConsumeError::InvalidStateImage { reason }
}

/// Refuses images the engine could load only by guessing: one queue listed twice, offsets out
/// of range, reversed finished ranges.
fn validate(image: &Snapshot) -> Result<(), ConsumeError> {
    let mut seen: HashSet<(&StateKey, u32)> = HashSet::with_capacity(image.queues.len());
    for q in &image.queues {
        if !seen.insert((&q.key, q.queue_id)) {
            return Err(invalid("a queue is listed twice"));
        }
        if q.committed > MAX_OFFSET
            || q.done.iter().any(|(_, end)| *end > MAX_OFFSET)
            || q.in_flight.iter().any(|(o, _)| *o >= MAX_OFFSET)
        {
            return Err(invalid("queue offset out of range"));
        }
        if q.done.iter().any(|(start, end)| start >= end) {
            return Err(invalid("empty or reversed finished range"));
        }
    }
    Ok(())
}

impl Consumption {
    /// A counter that moves on every change of the consumption state: each journaled change
    /// (a receive that delivers or redelivers, ack, ack_many, change_invisible_duration, a
    /// dead-letter move, reset_offset, an expired message finished because it aged out, a
    /// [`merge_finished`](Self::merge_finished) that finished something) and each
    /// [`install_state`](Self::install_state). It stays put while nothing changes.
    /// Offsets skipped by a tag filter or lost to retention are re-derived by the engine and
    /// move it only together with the next journaled change. Starts at 0 on every open.
    ///
    /// Read it *before* [`export_state`](Self::export_state): the counter moves inside the
    /// critical section of the change, so an export that missed a change always pairs with a
    /// version older than that change, and the next comparison ships again.
    pub fn state_version(&self) -> u64 {
        self.inner.version.load(Ordering::Acquire)
    }

    /// The whole in-memory consumption state, encoded for
    /// [`install_state`](Self::install_state) on another broker: every (group, topic,
    /// queue)'s committed offset, finished ranges above it and in-flight deliveries (offset,
    /// sequence, attempt, deadline, message group), plus the highest delivery sequence
    /// handed out. Each (group, topic) is copied under its lock, so each is consistent in
    /// itself; different ones may be copied a moment apart. Works after shutdown too.
    pub fn export_state(&self) -> Vec<u8> {
        self.inner.image(0).encode()
    }

    /// Replaces the whole consumption state with `image` (from
    /// [`export_state`](Self::export_state)): each (group, topic, queue) in it gets exactly
    /// that state, every one not in it is forgotten. New deliveries get sequence numbers above
    /// any in the image, so their receipt handles never match one of the image's. Long polls
    /// are woken (something may be deliverable now). Then the state is written as a snapshot
    /// in a new journal generation, so that reopening the state directory recovers exactly
    /// the installed state plus what changed after it. Blocks on fsyncs.
    ///
    /// Bad bytes are [`ConsumeError::InvalidStateImage`] and change nothing; after shutdown,
    /// [`ConsumeError::ShutDown`]; while the journal cannot be written,
    /// [`ConsumeError::JournalFailed`] before anything changes. If writing the snapshot fails
    /// after the state was replaced, that error is returned, the installed state stays in
    /// memory, and the journal repair writes it later (a crash before then recovers the state
    /// from before the install: an older copy, which the next install replaces).
    pub fn install_state(&self, image: &[u8]) -> Result<(), ConsumeError> {
        let inner = &self.inner;
        inner.check_open()?;
        let image = Snapshot::decode(image).map_err(|DecodeError(reason)| invalid(reason))?;
        validate(&image)?;
        inner.journal_ready()?;
        let max_seq = image
            .queues
            .iter()
            .flat_map(|q| q.in_flight.iter().map(|(_, f)| f.seq))
            .fold(image.max_seq, u64::max);
        let mut topics = recovery::from_snapshot(image.queues);

        // Held throughout: no size-triggered snapshot or journal repair interleaves, and a
        // shutdown that started meanwhile has written its snapshot and is seen below.
        let _guard = inner.snapshot_lock.lock();
        inner.check_open()?;
        // First, so that a delivery made while the slots are replaced is already above them.
        inner
            .seq
            .fetch_max(max_seq.saturating_add(1), Ordering::AcqRel);
        let current: Vec<(StateKey, Arc<Slot>)> = inner
            .slots
            .iter()
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        for (key, slot) in current {
            let queues = topics.remove(&key).map(|t| t.queues).unwrap_or_default();
            // The round-robin cursor is kept: it only spreads receives over the queues.
            slot.state.lock().queues = queues;
            slot.notify.notify_waiters();
        }
        for (key, state) in topics {
            let slot = inner.slot(&key);
            slot.state.lock().queues = state.queues;
            slot.notify.notify_waiters();
        }
        // Forget the emptied slots nobody is using. With the map's only reference in hand no
        // one else can reach the slot, so its lock is free and nothing can refill it.
        inner.slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.state.try_lock().is_none_or(|st| !st.queues.is_empty())
        });
        inner.version.fetch_add(1, Ordering::AcqRel);
        inner.rotate_and_snapshot()
    }

    /// Merges into this engine the finished offsets of `image` (another engine's
    /// [`export_state`](Self::export_state), typically a slave's after it served consumers
    /// while this master was down) and returns how many offsets became finished here.
    ///
    /// For each (group, topic, queue) of the image, every offset the image counts as finished
    /// (below its committed offset or in one of its finished ranges) that is not finished here
    /// becomes finished as if it had been acked here: its in-flight or held entry goes, the
    /// committed offset moves up over what is now contiguous, long polls are woken, the state
    /// version moves, and the change is journaled and durable (fsynced per the journal's
    /// setting, one fsync for the whole merge) when this returns. Nothing else changes: no
    /// offset becomes unfinished, no committed offset moves back, the image's in-flight
    /// entries are ignored and this engine's in-flight entries at offsets the image has not
    /// finished keep their handles and deadlines. A (group, topic) or queue unknown here is
    /// created, starting at the image's committed offset (which counts as newly finished).
    /// Merging the same image again, or an image behind this engine, finishes nothing and
    /// returns 0. Blocks on the fsync like [`ack`](Self::ack).
    ///
    /// The work is bounded per queue: up to 100,000 newly finished offsets are journaled one
    /// ack record each; beyond that each contiguous run of them is one range record, so a gap
    /// of billions costs what a gap of one does.
    ///
    /// Bad bytes are [`ConsumeError::InvalidStateImage`] and change nothing (the checks of
    /// [`install_state`](Self::install_state)); after shutdown, [`ConsumeError::ShutDown`];
    /// while the journal cannot be written, [`ConsumeError::JournalFailed`] before anything
    /// changes. A journal failure in the middle of a merge leaves the (group, topic)s before
    /// it merged (in memory; the journal repair makes them durable) and the rest untouched:
    /// merging the same image again completes it.
    pub fn merge_finished(&self, image: &[u8]) -> Result<u64, ConsumeError> {
        let inner = &self.inner;
        inner.check_open()?;
        let image = Snapshot::decode(image).map_err(|DecodeError(reason)| invalid(reason))?;
        validate(&image)?;
        inner.journal_ready()?;
        let mut topics: Vec<(StateKey, TopicState)> =
            recovery::from_snapshot(image.queues).into_iter().collect();
        topics.sort_by(|a, b| a.0.cmp(&b.0));

        let mut finished = 0u64;
        let mut last_ticket = None;
        for (key, theirs) in topics {
            if !theirs.queues.values().any(finishes_something) {
                continue;
            }
            let slot = inner.slot(&key);
            let merged = {
                let mut st = slot.state.lock();
                let merges: Vec<QueueMerge> = theirs
                    .queues
                    .iter()
                    .filter_map(|(id, q)| QueueMerge::plan(*id, st.queues.get(id), q))
                    .collect();
                if merges.is_empty() {
                    None
                } else {
                    let mut records = Vec::new();
                    for m in &merges {
                        m.records(&key, &mut records);
                    }
                    let ticket = inner.record(&records)?;
                    for m in &merges {
                        m.apply(&mut st.queues);
                    }
                    let n = merges
                        .iter()
                        .map(QueueMerge::newly_finished)
                        .fold(0, u64::saturating_add);
                    Some((n, ticket))
                }
            };
            if let Some((n, ticket)) = merged {
                slot.notify.notify_waiters();
                finished = finished.saturating_add(n);
                last_ticket = Some(ticket);
            }
        }
        // Tickets grow with every append: syncing the last one covers the whole merge.
        if let Some(ticket) = last_ticket {
            inner.journal.sync(ticket)?;
            inner.maybe_snapshot();
        }
        Ok(finished)
    }
}

/// Whether an image queue counts any offset as finished.
fn finishes_something(q: &QueueState) -> bool {
    q.committed() > 0 || q.done_ranges().next().is_some()
}

/// What merging one queue of an image changes here.
#[derive(Debug)]
struct QueueMerge {
    queue_id: u32,
    /// The queue has no state here: it starts at the image's committed offset (the record a
    /// first receive writes), with everything below finished.
    start_at: Option<u64>,
    /// Ascending, disjoint runs of offsets that become finished (above `start_at`, or above
    /// this engine's committed offset).
    runs: Vec<(u64, u64)>,
}

impl QueueMerge {
    /// The merge of `theirs` into `here` (`None`: no state here), or `None` when it would
    /// finish nothing.
    fn plan(queue_id: u32, here: Option<&QueueState>, theirs: &QueueState) -> Option<Self> {
        let fresh;
        let (start_at, base) = match here {
            Some(q) => (None, q),
            None if finishes_something(theirs) => {
                fresh = QueueState::new(theirs.committed());
                (Some(theirs.committed()), &fresh)
            }
            None => return None,
        };
        let mut runs = base.unfinished_in(0, theirs.committed());
        for (start, end) in theirs.done_ranges() {
            runs.extend(base.unfinished_in(start, end));
        }
        if start_at.is_none() && runs.is_empty() {
            return None;
        }
        Some(QueueMerge {
            queue_id,
            start_at,
            runs,
        })
    }

    fn newly_finished(&self) -> u64 {
        self.runs
            .iter()
            .map(|(start, end)| end - start)
            .fold(self.start_at.unwrap_or(0), u64::saturating_add)
    }

    /// The journal records of this merge, appended to `out`.
    fn records(&self, key: &StateKey, out: &mut Vec<Record>) {
        let queue_id = self.queue_id;
        if let Some(offset) = self.start_at {
            out.push(Record::Reset {
                key: key.clone(),
                queue_id,
                offset,
            });
        }
        let singles = self
            .runs
            .iter()
            .map(|(start, end)| end - start)
            .fold(0, u64::saturating_add);
        for &(start, end) in &self.runs {
            if singles <= MAX_FINISH_RECORDS_PER_QUEUE {
                out.extend((start..end).map(|offset| Record::Finish {
                    key: key.clone(),
                    queue_id,
                    offset,
                }));
            } else {
                out.push(Record::FinishRange {
                    key: key.clone(),
                    queue_id,
                    start,
                    end,
                });
            }
        }
    }

    /// Makes the change the records describe (finishing a run at once leaves the same state
    /// as finishing its offsets one by one, which is what replaying `Finish` records does).
    fn apply(&self, queues: &mut BTreeMap<u32, QueueState>) {
        if let Some(offset) = self.start_at {
            queues.insert(self.queue_id, QueueState::new(offset));
        }
        let q = queues.entry(self.queue_id).or_default();
        for &(start, end) in &self.runs {
            q.finish_range(start, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StateKey {
        StateKey {
            group: "g".into(),
            topic: "t".into(),
        }
    }

    fn records(m: &QueueMerge) -> Vec<Record> {
        let mut out = Vec::new();
        m.records(&key(), &mut out);
        out
    }

    #[test]
    fn plans_finish_only_what_is_new_here() {
        let mut here = QueueState::new(2);
        here.finish(4);
        let mut theirs = QueueState::new(6);
        theirs.finish(8);
        theirs.finish(9);
        let m = QueueMerge::plan(0, Some(&here), &theirs).unwrap();
        assert_eq!(
            (m.start_at, m.runs.clone()),
            (None, vec![(2, 4), (5, 6), (8, 10)])
        );
        assert_eq!(m.newly_finished(), 5);
        assert!(QueueMerge::plan(0, Some(&theirs), &here).is_none());
        assert!(QueueMerge::plan(0, Some(&theirs), &theirs).is_none());
        let new_here = QueueMerge::plan(0, None, &theirs).unwrap();
        assert_eq!((new_here.start_at, new_here.runs), (Some(6), vec![(8, 10)]));
        assert!(QueueMerge::plan(0, None, &QueueState::new(0)).is_none());
    }

    #[test]
    fn records_are_single_finishes_up_to_the_bound_then_ranges() {
        let at_bound = QueueMerge {
            queue_id: 1,
            start_at: None,
            runs: vec![(10, 12), (20, 18 + MAX_FINISH_RECORDS_PER_QUEUE)],
        };
        let singles = records(&at_bound);
        assert_eq!(singles.len() as u64, MAX_FINISH_RECORDS_PER_QUEUE);
        assert!(singles.iter().all(|r| matches!(r, Record::Finish { .. })));
        assert_eq!(
            singles[..3],
            [10, 11, 20].map(|offset| Record::Finish {
                key: key(),
                queue_id: 1,
                offset
            })
        );

        let past = QueueMerge {
            queue_id: 1,
            start_at: Some(5),
            runs: vec![(10, 12), (20, 19 + MAX_FINISH_RECORDS_PER_QUEUE)],
        };
        let range = |start, end| Record::FinishRange {
            key: key(),
            queue_id: 1,
            start,
            end,
        };
        assert_eq!(
            records(&past),
            [
                Record::Reset {
                    key: key(),
                    queue_id: 1,
                    offset: 5
                },
                range(10, 12),
                range(20, 19 + MAX_FINISH_RECORDS_PER_QUEUE),
            ]
        );
        assert_eq!(past.newly_finished(), 5 + MAX_FINISH_RECORDS_PER_QUEUE + 1);
    }
}
