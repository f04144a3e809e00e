//! The consumption façade: opening and persisting the state, acks, invisible-duration changes,
//! dead-lettering on demand, lag reports and resets. Receiving is in `receive.rs`.
//!
//! Locking: each (group, topic) has its own slot (a mutex over its [`TopicState`] and a
//! `Notify` for long pollers); no call holds two slot locks, and none holds one across an
//! `.await`. A state change and its journal record are made under the same slot lock, so the
//! journal order of one (group, topic) is the order of its changes (see `recovery.rs` for why
//! snapshots depend on that). Changes that must be durable before they are answered are
//! fsynced after the lock is released (group commit). Whole-state copies to and from a
//! master are in `transfer.rs`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::Mutex;
use rocketlog_common::QueueOffset;
use rocketlog_store::Store;
use tokio::sync::Notify;

use super::error::ConsumeError;
use super::journal::{self, Journal, Record, StateKey};
use super::queue_state::{InFlight, Stale};
use super::receipt::ReceiptHandle;
use super::recovery::{recover, TopicState};
use super::snapshot::{self, Snapshot};
use super::types::{ConsumptionConfig, QueueLag};

/// The state of one (group, topic) and the signal its long pollers wait on.
#[derive(Debug, Default)]
pub(super) struct Slot {
    pub(super) state: Mutex<TopicState>,
    /// Woken when something may have become deliverable without a store append: an ack or
    /// dead-letter move (frees a FIFO message group), a new invisible duration, a reset.
    pub(super) notify: Notify,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) config: ConsumptionConfig,
    dir: PathBuf,
    pub(super) slots: DashMap<StateKey, Arc<Slot>>,
    /// Appended to only through [`Inner::record`] (which also moves the state version).
    pub(super) journal: Journal,
    /// The last size-triggered snapshot failed (logged once, not per call).
    snapshot_failing: AtomicBool,
    /// Next delivery sequence number to hand out.
    pub(super) seq: AtomicU64,
    /// Bumped by every journaled state change and every installed state (see
    /// [`Consumption::state_version`]).
    pub(super) version: AtomicU64,
    pub(super) snapshot_lock: Mutex<()>,
    shut_down: AtomicBool,
    /// Messages moved to a dead-letter topic since open, per group (for monitoring).
    pub(super) dead_lettered: DashMap<String, AtomicU64>,
    /// Receive passes made (tests wait on it to know a long poll is parked).
    #[cfg(test)]
    pub(super) passes: std::sync::atomic::AtomicUsize,
}

/// The consumption engine of one broker: cheap to clone, shareable across tasks.
#[derive(Debug, Clone)]
pub struct Consumption {
    pub(super) inner: Arc<Inner>,
}

pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn stale(s: Stale) -> ConsumeError {
    ConsumeError::InvalidReceiptHandle {
        reason: match s {
            Stale::NotInFlight => "message is not in flight (acked, dead-lettered or unknown)",
            Stale::OldDelivery => "handle of an earlier delivery",
        },
    }
}

fn unknown_handle() -> ConsumeError {
    ConsumeError::InvalidReceiptHandle {
        reason: "no such delivery for this group and topic",
    }
}

/// Turns the accepted entries of a batch into failures after a journal error.
fn fail_accepted(results: &mut [Result<(), ConsumeError>], e: &ConsumeError) {
    for r in results.iter_mut().filter(|r| r.is_ok()) {
        *r = Err(ConsumeError::JournalFailed {
            reason: e.to_string(),
        });
    }
}

/// Sequence numbers start above the wall clock in microseconds, so that a handle handed out but
/// never journaled before a crash cannot match a delivery made after the restart.
fn seq_floor() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Consumption {
    /// Opens the engine over `store`, restoring the state kept in `state_dir` (created if
    /// missing): the last snapshot plus the journal written since. Writes a fresh snapshot
    /// before returning, so the journal replayed here is not replayed again.
    pub fn open(
        store: Store,
        state_dir: PathBuf,
        config: ConsumptionConfig,
    ) -> Result<Self, ConsumeError> {
        std::fs::create_dir_all(&state_dir).map_err(|e| ConsumeError::io(&state_dir, e))?;
        let recovered = recover(&state_dir)?;
        let journal = Journal::create(&state_dir, recovered.next_gen, config.fsync_journal)?;
        let slots = DashMap::new();
        for (key, state) in recovered.topics {
            slots.insert(
                key,
                Arc::new(Slot {
                    state: Mutex::new(state),
                    notify: Notify::new(),
                }),
            );
        }
        let inner = Inner {
            store,
            config,
            dir: state_dir,
            slots,
            journal,
            snapshot_failing: AtomicBool::new(false),
            seq: AtomicU64::new(recovered.max_seq.saturating_add(1).max(seq_floor())),
            version: AtomicU64::new(0),
            snapshot_lock: Mutex::new(()),
            shut_down: AtomicBool::new(false),
            dead_lettered: DashMap::new(),
            #[cfg(test)]
            passes: std::sync::atomic::AtomicUsize::new(0),
        };
        {
            let _guard = inner.snapshot_lock.lock();
            inner.write_snapshot(recovered.next_gen)?;
        }
        Ok(Consumption {
            inner: Arc::new(inner),
        })
    }

    /// Acknowledges one delivery: the message is finished for the group and the committed
    /// offset moves up to the lowest unfinished offset. Durable when it returns (blocks on an
    /// fsync shared with concurrent callers: call it from `spawn_blocking` in async code).
    pub fn ack(&self, group: &str, topic: &str, receipt_handle: &str) -> Result<(), ConsumeError> {
        self.inner.check_open()?;
        self.inner.journal_ready()?;
        let h = ReceiptHandle::decode(receipt_handle, topic)?;
        let key = StateKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
        };
        let slot = self.inner.existing_slot(&key).ok_or_else(unknown_handle)?;
        let ticket = {
            let mut st = slot.state.lock();
            let q = st.queues.get_mut(&h.queue_id).ok_or_else(unknown_handle)?;
            q.check(h.queue_offset, h.seq).map_err(stale)?;
            let ticket = self.inner.record(&[Record::Finish {
                key,
                queue_id: h.queue_id,
                offset: h.queue_offset,
            }])?;
            q.finish(h.queue_offset);
            ticket
        };
        slot.notify.notify_waiters();
        self.inner.journal.sync(ticket)?;
        self.inner.maybe_snapshot();
        Ok(())
    }

    /// Acknowledges several deliveries of one (group, topic) with one journal write and one
    /// fsync (an AckMessage request with many entries); one result per handle, in order.
    /// Blocks on the fsync like [`ack`](Self::ack).
    pub fn ack_many(
        &self,
        group: &str,
        topic: &str,
        receipt_handles: &[&str],
    ) -> Vec<Result<(), ConsumeError>> {
        if let Err(e) = self
            .inner
            .check_open()
            .and_then(|()| self.inner.journal_ready())
        {
            let reason = e.to_string();
            return receipt_handles
                .iter()
                .map(|_| {
                    Err(match &e {
                        ConsumeError::ShutDown => ConsumeError::ShutDown,
                        _ => ConsumeError::JournalFailed {
                            reason: reason.clone(),
                        },
                    })
                })
                .collect();
        }
        let key = StateKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
        };
        let Some(slot) = self.inner.existing_slot(&key) else {
            return receipt_handles
                .iter()
                .map(|h| ReceiptHandle::decode(h, topic).and(Err(unknown_handle())))
                .collect();
        };
        let mut results = Vec::with_capacity(receipt_handles.len());
        let ticket = {
            let mut st = slot.state.lock();
            let mut records = Vec::new();
            let mut accepted: Vec<(u32, u64)> = Vec::new();
            for handle in receipt_handles {
                let checked = ReceiptHandle::decode(handle, topic).and_then(|h| {
                    let q = st.queues.get(&h.queue_id).ok_or_else(unknown_handle)?;
                    q.check(h.queue_offset, h.seq).map_err(stale)?;
                    if accepted.contains(&(h.queue_id, h.queue_offset)) {
                        return Err(stale(Stale::NotInFlight));
                    }
                    Ok(h)
                });
                results.push(checked.map(|h| {
                    accepted.push((h.queue_id, h.queue_offset));
                    records.push(Record::Finish {
                        key: key.clone(),
                        queue_id: h.queue_id,
                        offset: h.queue_offset,
                    });
                }));
            }
            match self.inner.record(&records) {
                Ok(ticket) => {
                    for (queue_id, offset) in accepted {
                        if let Some(q) = st.queues.get_mut(&queue_id) {
                            q.finish(offset);
                        }
                    }
                    ticket
                }
                Err(e) => {
                    fail_accepted(&mut results, &e);
                    return results;
                }
            }
        };
        slot.notify.notify_waiters();
        if let Err(e) = self.inner.journal.sync(ticket) {
            fail_accepted(&mut results, &e);
        }
        self.inner.maybe_snapshot();
        results
    }

    /// Gives the delivery a new deadline `now + invisible` and returns the handle that replaces
    /// the old one (which stops being valid). Zero makes the message deliverable again at once
    /// (a nack). Durable when it returns (blocks on an fsync).
    pub fn change_invisible_duration(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
        invisible: Duration,
    ) -> Result<String, ConsumeError> {
        self.inner.check_open()?;
        self.inner.journal_ready()?;
        let max = self.inner.config.max_invisible;
        if invisible > max {
            return Err(ConsumeError::IllegalInvisibleTime {
                requested: invisible,
                min: Duration::ZERO,
                max,
            });
        }
        let h = ReceiptHandle::decode(receipt_handle, topic)?;
        let key = StateKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
        };
        let slot = self.inner.existing_slot(&key).ok_or_else(unknown_handle)?;
        let (ticket, new_handle) = {
            let mut st = slot.state.lock();
            let q = st.queues.get_mut(&h.queue_id).ok_or_else(unknown_handle)?;
            let current = q.check(h.queue_offset, h.seq).map_err(stale)?.clone();
            let entry = InFlight {
                seq: self.inner.next_seq(),
                deadline_ms: self
                    .inner
                    .config
                    .clock
                    .now_ms()
                    .saturating_add(duration_ms(invisible)),
                ..current
            };
            let ticket = self.inner.record(&[Record::Deliver {
                key,
                queue_id: h.queue_id,
                offset: h.queue_offset,
                seq: entry.seq,
                attempt: entry.attempt,
                deadline_ms: entry.deadline_ms,
                message_group: entry.message_group.clone(),
            }])?;
            let new_handle = ReceiptHandle {
                seq: entry.seq,
                ..h
            }
            .encode(topic);
            q.set_in_flight(h.queue_offset, entry);
            (ticket, new_handle)
        };
        slot.notify.notify_waiters();
        self.inner.journal.sync(ticket)?;
        self.inner.maybe_snapshot();
        Ok(new_handle)
    }

    /// Moves the delivered message to the group's dead-letter topic now (the client gave up on
    /// it). Durable when it returns (blocks on the store's and the journal's flushes).
    pub fn forward_to_dlq(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
    ) -> Result<(), ConsumeError> {
        self.inner.check_open()?;
        self.inner.journal_ready()?;
        let h = ReceiptHandle::decode(receipt_handle, topic)?;
        let key = StateKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
        };
        let slot = self.inner.existing_slot(&key).ok_or_else(unknown_handle)?;
        let attempt = {
            let mut st = slot.state.lock();
            let q = st.queues.get_mut(&h.queue_id).ok_or_else(unknown_handle)?;
            let f = q.check(h.queue_offset, h.seq).map_err(stale)?;
            if f.dead_lettering {
                // A move is already under way (the deadline passed the max attempts).
                return Ok(());
            }
            let attempt = f.attempt;
            q.set_dead_lettering(h.queue_offset, true);
            attempt
        };
        self.inner.dead_letter(
            &key,
            &slot,
            super::dlq::Job {
                queue_id: h.queue_id,
                offset: h.queue_offset,
                attempt,
            },
        )
    }

    /// Progress of `group` on every (topic, queue) it has state for, ordered by topic and
    /// queue.
    pub fn describe_group(&self, group: &str) -> Vec<QueueLag> {
        self.describe(|key| key.group == group)
            .into_iter()
            .map(|(_, lag)| lag)
            .collect()
    }

    /// [`Consumption::describe_group`] for every group at once: `(group, progress)`, ordered
    /// by group, topic and queue.
    pub fn describe_all(&self) -> Vec<(String, QueueLag)> {
        self.describe(|_| true)
    }

    fn describe(&self, wanted: impl Fn(&StateKey) -> bool) -> Vec<(String, QueueLag)> {
        let mut slots: Vec<(StateKey, Arc<Slot>)> = self
            .inner
            .slots
            .iter()
            .filter(|e| wanted(e.key()))
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (key, slot) in slots {
            let st = slot.state.lock();
            for (queue_id, q) in &st.queues {
                let (min, max) = self.inner.store.queue_range(&key.topic, *queue_id);
                // Offsets below the store's minimum are gone, so they count as consumed.
                let committed = q.committed().max(min.0);
                let lag = QueueLag {
                    topic: key.topic.clone(),
                    queue_id: *queue_id,
                    max_offset: max,
                    committed_offset: QueueOffset(committed),
                    lag: max.0.saturating_sub(committed),
                    in_flight: q.in_flight_len(),
                };
                out.push((key.group.clone(), lag));
            }
        }
        out
    }

    /// Messages each group has had moved to its dead-letter topic since the engine opened,
    /// ordered by group.
    pub fn dead_lettered(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .inner
            .dead_lettered
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        out.sort();
        out
    }

    /// Restarts `group` on every queue of `topic` at the first message stored at or after
    /// `timestamp_ms`, dropping what is in flight. Returns the new offset of each queue.
    pub fn reset_offset(
        &self,
        group: &str,
        topic: &str,
        timestamp_ms: i64,
    ) -> Result<Vec<(u32, QueueOffset)>, ConsumeError> {
        self.inner.check_open()?;
        self.inner.journal_ready()?;
        let key = StateKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
        };
        let slot = self.inner.slot(&key);
        let mut queue_ids: Vec<u32> = self
            .inner
            .store
            .queues()
            .into_iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, q)| q)
            .collect();
        queue_ids.extend(slot.state.lock().queues.keys().copied());
        queue_ids.sort_unstable();
        queue_ids.dedup();
        let mut targets = Vec::with_capacity(queue_ids.len());
        for queue_id in queue_ids {
            let offset = self
                .inner
                .store
                .queue_offset_at_time(topic, queue_id, timestamp_ms)?;
            targets.push((queue_id, offset));
        }
        self.restart_queues(&key, &slot, &targets)?;
        Ok(targets)
    }

    /// Sets `group`'s committed offset on one queue of `topic` to `offset` (what a pull
    /// consumer commits): every message below it counts as finished, above it as not yet
    /// delivered, and nothing stays in flight. Durable when it returns (blocks on an fsync:
    /// call it through [`Consumption::call`] in async code).
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: QueueOffset,
    ) -> Result<(), ConsumeError> {
        self.inner.check_open()?;
        self.inner.journal_ready()?;
        let key = StateKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
        };
        let slot = self.inner.slot(&key);
        self.restart_queues(&key, &slot, &[(queue_id, offset)])
    }

    /// `group`'s committed offset on one queue of `topic`: every message below it is
    /// finished. `None` when the group has no state there (it never received, acked or
    /// committed on that queue).
    pub fn committed_offset(&self, group: &str, topic: &str, queue_id: u32) -> Option<QueueOffset> {
        let key = StateKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
        };
        let slot = self.inner.slots.get(&key).map(|s| Arc::clone(s.value()))?;
        let st = slot.state.lock();
        st.queues.get(&queue_id).map(|q| QueueOffset(q.committed()))
    }

    /// Journals and applies a restart of each listed queue at its offset, then wakes the
    /// group's waiting receives; durable when it returns.
    fn restart_queues(
        &self,
        key: &StateKey,
        slot: &Slot,
        targets: &[(u32, QueueOffset)],
    ) -> Result<(), ConsumeError> {
        let ticket = {
            let mut st = slot.state.lock();
            let records: Vec<Record> = targets
                .iter()
                .map(|(queue_id, offset)| Record::Reset {
                    key: key.clone(),
                    queue_id: *queue_id,
                    offset: offset.0,
                })
                .collect();
            let ticket = self.inner.record(&records)?;
            for (queue_id, offset) in targets {
                st.queues.entry(*queue_id).or_default().reset(offset.0);
            }
            ticket
        };
        slot.notify.notify_waiters();
        self.inner.journal.sync(ticket)?;
        Ok(())
    }

    /// Writes a snapshot and refuses further calls. Idempotent. Dropping the engine without
    /// calling this loses nothing acknowledged (the journal is replayed on open).
    pub fn shutdown(&self) -> Result<(), ConsumeError> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = self.inner.snapshot();
        for slot in self.inner.slots.iter() {
            slot.value().notify.notify_waiters();
        }
        result
    }

    /// Writes a snapshot now (normally done when the journal grows past
    /// `snapshot_after_bytes`, at open and at shutdown).
    pub fn snapshot(&self) -> Result<(), ConsumeError> {
        self.inner.check_open()?;
        self.inner.snapshot()
    }

    /// Runs `f`, a call into this engine that may wait for a journal fsync, where it cannot
    /// stall the async runtime: on the blocking pool when the journal fsyncs, inline when it
    /// does not (then a call costs a short lock and one `write`, and a thread hop would cost
    /// more than the call).
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, tokio::task::JoinError> {
        if self.inner.config.fsync_journal {
            tokio::task::spawn_blocking(f).await
        } else {
            Ok(f())
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl Inner {
    pub(super) fn check_open(&self) -> Result<(), ConsumeError> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(ConsumeError::ShutDown)
        } else {
            Ok(())
        }
    }

    pub(super) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Journals `records` (one write, no fsync) and returns the ticket to sync on. The caller
    /// holds the slot lock of the records' (group, topic) and makes the change they describe
    /// in the same critical section; that is also where the state version moves, so a reader
    /// of [`Consumption::state_version`] never misses a change made after it looked.
    pub(super) fn record(&self, records: &[Record]) -> Result<u64, ConsumeError> {
        let ticket = self.journal.append(records)?;
        if !records.is_empty() {
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        Ok(ticket)
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The slot of `key`, created empty if needed.
    pub(super) fn slot(&self, key: &StateKey) -> Arc<Slot> {
        if let Some(s) = self.slots.get(key) {
            return Arc::clone(s.value());
        }
        Arc::clone(self.slots.entry(key.clone()).or_default().value())
    }

    fn existing_slot(&self, key: &StateKey) -> Option<Arc<Slot>> {
        self.slots.get(key).map(|s| Arc::clone(s.value()))
    }

    /// Snapshots if the journal has grown past the configured size; failures are logged (the
    /// journal still holds everything, and a failed journal fsync already fails later calls).
    pub(super) fn maybe_snapshot(&self) {
        if self.journal.gen_bytes() < self.config.snapshot_after_bytes {
            return;
        }
        let Some(_guard) = self.snapshot_lock.try_lock() else {
            return;
        };
        match self
            .journal
            .rotate()
            .and_then(|gen| self.write_snapshot(gen))
        {
            Ok(()) => {
                if self.snapshot_failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(dir = %self.dir.display(), "consumption snapshots work again");
                }
            }
            Err(e) => {
                if !self.snapshot_failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(error = %e, dir = %self.dir.display(), "consumption snapshot failed; the journal keeps growing until one succeeds");
                }
            }
        }
    }

    /// `Ok` while the journal accepts state changes. After a failure it fails fast with the
    /// reason and, at most once per [`journal::REPAIR_INTERVAL`], starts a repair on a thread
    /// of its own (it writes a snapshot, which fsyncs: not on the caller's thread, which may
    /// be an async worker).
    pub(super) fn journal_ready(self: &Arc<Self>) -> Result<(), ConsumeError> {
        let Err(failure) = self.journal.check() else {
            return Ok(());
        };
        if self.journal.claim_repair() && !self.is_shut_down() {
            let inner = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("rocketlog-journal-repair".into())
                .spawn(move || inner.repair_journal());
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start a journal repair; will retry");
            }
        }
        Err(failure)
    }

    /// Makes the journal usable again after a failure: a new generation, then a snapshot of
    /// the whole state (which holds every change the failed generation may have lost).
    fn repair_journal(&self) {
        let _guard = self.snapshot_lock.lock();
        if self.journal.check().is_ok() || self.is_shut_down() {
            return;
        }
        match self
            .journal
            .reopen()
            .and_then(|gen| self.write_snapshot(gen))
        {
            Ok(()) => {
                self.journal.repaired();
                tracing::info!(dir = %self.dir.display(), "consumption state journal repaired; state changes accepted again");
            }
            Err(e) => tracing::debug!(error = %e, "journal repair failed; will retry"),
        }
    }

    fn snapshot(&self) -> Result<(), ConsumeError> {
        let _guard = self.snapshot_lock.lock();
        self.rotate_and_snapshot()
    }

    /// Starts a new journal generation and writes a snapshot replay starts from. The caller
    /// holds `snapshot_lock`.
    pub(super) fn rotate_and_snapshot(&self) -> Result<(), ConsumeError> {
        let gen = self.journal.rotate()?;
        self.write_snapshot(gen)
    }

    /// The whole state, (group, topic) by (group, topic) in key order, each copied under its
    /// slot lock. `max_seq` is read after the copies, so it covers every delivery they hold.
    pub(super) fn image(&self, journal_gen: u64) -> Snapshot {
        let mut slots: Vec<(StateKey, Arc<Slot>)> = self
            .slots
            .iter()
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        let mut queues = Vec::new();
        for (key, slot) in &slots {
            slot.state.lock().to_snapshot(key, &mut queues);
        }
        let max_seq = self.seq.load(Ordering::Acquire).saturating_sub(1);
        Snapshot {
            journal_gen,
            max_seq,
            queues,
        }
    }

    /// Writes a snapshot that replay combines with journal generations `gen` and later, then
    /// deletes older generations. The caller holds `snapshot_lock` and has rotated the journal
    /// to `gen` (or it is the fresh generation of `open`).
    fn write_snapshot(&self, gen: u64) -> Result<(), ConsumeError> {
        snapshot::write(&self.dir, &self.image(gen))?;
        for (old, path) in journal::list(&self.dir)? {
            if old < gen {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not delete a replayed journal generation");
                }
            }
        }
        Ok(())
    }
}
