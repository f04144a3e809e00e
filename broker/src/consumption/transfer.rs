//! Whole-state transfer from a master to its slaves: the master exports its consumption state
//! (every (group, topic, queue): committed offset, finished ranges above it, in-flight
//! deliveries, and the highest delivery sequence number) about once a second when
//! [`Consumption::state_version`] has moved; a slave installs each copy in place of its own.
//! After a promotion the slave then redelivers only what was in flight or unread at the last
//! copy, and the receipt handles the old master gave out still ack on it (a handle is
//! (queue, offset, delivery sequence) with topic checksums: nothing in it names a broker).
//!
//! The image is the snapshot format (`snapshot.rs`) with `journal_gen` 0, so decoding it is
//! as strict as reading a snapshot file: a checksum over every byte, no trailing bytes.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::codec::DecodeError;
use super::engine::{Consumption, Slot};
use super::error::ConsumeError;
use super::journal::StateKey;
use super::recovery;
use super::snapshot::Snapshot;

/// Largest offset an image may name. Queue offsets are far below it; a larger one is damage,
/// and would make the read cursor's `+ 1` arithmetic overflow.
const MAX_OFFSET: u64 = i64::MAX as u64;

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
    /// dead-letter move, reset_offset, an expired message finished because it aged out) and
    /// each [`install_state`](Self::install_state). It stays put while nothing changes.
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
}
