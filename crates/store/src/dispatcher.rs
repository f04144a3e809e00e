//! The dispatcher: tails the commit log and builds the consume queues and the index from it.
//!
//! It is the only writer of both. It reads records below a limit (the committed end in Async
//! mode, the flushed end in Sync mode, so consumers never see a record a crash could take
//! back), sleeps on a [`Wake`] when caught up, and publishes its position after each batch.
//! Dispatching is idempotent (a consume-queue entry already present is skipped), so recovery
//! simply runs the same code from the checkpoint.
//!
//! Two positions: `dispatched` (consume queues complete below it) and `indexed` (index complete
//! below it, never above `dispatched`). They move together until an index insert fails (no
//! room for a new index file): then the consume queues go on alone, so messages stay readable,
//! and [`Dispatcher::catch_up_index`] later indexes `[indexed, dispatched)` from the log. Index
//! inserts keep log order either way, since only this thread makes them and it indexes the
//! record at `indexed` next.

use crate::commit_log::CommitLog;
use crate::consume_queue::{ConsumeQueue, CqEntry, Put};
use crate::error::StoreError;
use crate::index::{key_hash, message_id_hash, Index, IndexBatch};
use crate::queue_registry::QueueRegistry;
use crate::record::{self, Record, RecordView};
use crate::segment::Segment;
use crate::wake::Wake;
use parking_lot::Mutex;
use rocketlog_common::{tag_hash, PhysicalOffset};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Bytes of log dispatched between two position updates.
const BATCH_BYTES: u64 = 4 << 20;

/// A consistent view of what is derived: below `dispatched` every record is in the consume
/// queues, below `indexed` in the index, and the active index file then held `index_entries`
/// entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Snapshot {
    pub dispatched: u64,
    pub indexed: u64,
    pub index_file: Option<u64>,
    pub index_entries: u32,
}

/// Dispatcher position, shared with readers and the checkpoint.
#[derive(Debug)]
pub(crate) struct DispatchState {
    position: AtomicU64,
    snapshot: Mutex<Snapshot>,
    watch: watch::Sender<PhysicalOffset>,
    /// Why the index last failed to keep up, while it lags behind the consume queues.
    index_problem: Mutex<Option<String>>,
    pub(crate) wake: Wake,
}

impl DispatchState {
    pub(crate) fn new(start: Snapshot) -> Self {
        DispatchState {
            position: AtomicU64::new(start.dispatched),
            snapshot: Mutex::new(start),
            watch: watch::Sender::new(PhysicalOffset(start.dispatched)),
            index_problem: Mutex::new(None),
            wake: Wake::default(),
        }
    }

    /// Everything below is readable through the consume queues.
    pub(crate) fn position(&self) -> u64 {
        self.position.load(Ordering::SeqCst)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        *self.snapshot.lock()
    }

    /// The index holds fewer records than the consume queues.
    pub(crate) fn index_lags(&self) -> bool {
        let s = self.snapshot();
        s.indexed < s.dispatched
    }

    /// Why the index lags, if it does and an insert failed.
    pub(crate) fn index_problem(&self) -> Option<String> {
        self.index_problem.lock().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<PhysicalOffset> {
        self.watch.subscribe()
    }

    fn publish(&self, snap: Snapshot) {
        *self.snapshot.lock() = snap;
        self.position.store(snap.dispatched, Ordering::SeqCst);
        self.watch.send_replace(PhysicalOffset(snap.dispatched));
    }

    /// Records an index failure; logs only when the index starts lagging (not per retry).
    fn index_failed(&self, at: u64, e: &StoreError) {
        let mut problem = self.index_problem.lock();
        if problem.is_none() {
            tracing::warn!(
                position = at,
                error = %e,
                "index cannot keep up; consume queues continue without it and the index \
                 catches up from the log once there is room"
            );
        }
        *problem = Some(e.to_string());
    }

    fn index_caught_up(&self, at: u64) {
        if self.index_problem.lock().take().is_some() {
            tracing::info!(position = at, "index caught up with the consume queues");
        }
    }
}

/// What to derive from one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Consume-queue entry, and index entries too if `index`.
    Queue { index: bool },
    /// Index entries only (catching up).
    Index,
}

/// Turns log records into consume-queue entries and index entries.
pub(crate) struct Dispatcher<'a> {
    log: &'a CommitLog,
    queues: &'a QueueRegistry,
    index: &'a Index,
    cache: HashMap<String, HashMap<u32, Arc<ConsumeQueue>>>,
    cache_generation: u64,
    segment: Option<Arc<Segment>>,
}

impl<'a> Dispatcher<'a> {
    pub(crate) fn new(log: &'a CommitLog, queues: &'a QueueRegistry, index: &'a Index) -> Self {
        Dispatcher {
            log,
            queues,
            index,
            cache: HashMap::new(),
            cache_generation: u64::MAX,
            segment: None,
        }
    }

    /// Dispatches records from `from` (the dispatched position) towards `limit`, at most one
    /// batch; publishes and returns the new position. Index entries are made only while the
    /// index is level with the queues; an index failure leaves it behind without stopping
    /// the queues. A consume-queue failure stops the batch (retried by the caller).
    pub(crate) fn step(
        &mut self,
        state: &DispatchState,
        from: u64,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let mut indexed = state.snapshot().indexed;
        let mut batch = self.index.batch();
        let end = limit.min(from.saturating_add(BATCH_BYTES));
        let mut pos = from;
        let mut result = Ok(());
        while pos < end {
            let level = indexed == pos;
            match self.one(&mut batch, pos, Work::Queue { index: level }) {
                Ok((next, indexing)) => {
                    if level {
                        match indexing {
                            Ok(()) => indexed = next,
                            Err(e) => state.index_failed(pos, &e),
                        }
                    }
                    pos = next;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if pos > from {
            let (index_file, index_entries) = batch.snapshot();
            drop(batch);
            state.publish(Snapshot {
                dispatched: pos,
                indexed,
                index_file,
                index_entries,
            });
        }
        result.map(|()| pos)
    }

    /// Indexes one batch of the records the index lags behind the consume queues by
    /// (records retention deleted meanwhile are skipped) and publishes the progress. `Ok(true)`
    /// once the index is level with the queues.
    pub(crate) fn catch_up_index(&mut self, state: &DispatchState) -> Result<bool, StoreError> {
        let snap = state.snapshot();
        let mut indexed = snap.indexed.max(self.log.min_offset()).min(snap.dispatched);
        let end = snap.dispatched.min(indexed.saturating_add(BATCH_BYTES));
        let mut batch = self.index.batch();
        let mut result = Ok(());
        while indexed < end {
            match self.one(&mut batch, indexed, Work::Index) {
                Ok((next, Ok(()))) => indexed = next,
                Ok((_, Err(e))) | Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let (index_file, index_entries) = batch.snapshot();
        drop(batch);
        // The problem is cleared before the position is published, so that whoever sees the
        // index caught up also sees no problem.
        let caught_up = result.is_ok() && indexed == snap.dispatched;
        if caught_up {
            state.index_caught_up(indexed);
        }
        // Only this thread publishes, so `dispatched` is still the one read above.
        state.publish(Snapshot {
            indexed,
            index_file,
            index_entries,
            ..snap
        });
        match result {
            Ok(()) if caught_up => Ok(true),
            Ok(()) => Ok(false),
            Err(e) => {
                state.index_failed(indexed, &e);
                Err(e)
            }
        }
    }

    fn segment_for(&mut self, pos: u64) -> Result<Arc<Segment>, StoreError> {
        if let Some(s) = &self.segment {
            if s.base <= pos && pos < s.end() {
                return Ok(s.clone());
            }
        }
        let s = self
            .log
            .segment_at(pos)
            .ok_or(StoreError::OffsetOutOfRange {
                offset: pos,
                min: self.log.min_offset(),
                max: self.log.committed(),
            })?;
        self.segment = Some(s.clone());
        Ok(s)
    }

    /// Derives `work` from the record at `pos`; returns the next record's position and the
    /// outcome of its index inserts (`Ok` when none were due).
    fn one(
        &mut self,
        batch: &mut IndexBatch<'_>,
        pos: u64,
        work: Work,
    ) -> Result<(u64, Result<(), StoreError>), StoreError> {
        let seg = self.segment_for(pos)?;
        let local = (pos - seg.base) as usize;
        let corrupt = |reason: String| StoreError::corrupt(seg.file.path(), local as u64, reason);
        let head = seg
            .file
            .read(local, 8)
            .ok_or_else(|| corrupt("record header not published".into()))?;
        let (size, _) = record::peek(head).map_err(|e| corrupt(e.to_string()))?;
        let bytes = seg
            .file
            .read(local, size as usize)
            .ok_or_else(|| corrupt(format!("record of {size} bytes not published")))?;
        match record::decode_trusted(bytes).map_err(|e| corrupt(e.to_string()))? {
            Record::Filler { size, .. } => Ok((pos + u64::from(size), Ok(()))),
            Record::Message(v) => {
                let next = pos + u64::from(v.size);
                let index = match work {
                    Work::Index => true,
                    Work::Queue { index } => self.dispatch(&v, pos)? && index,
                };
                let indexing = if index {
                    Self::index_record(batch, &v, pos)
                } else {
                    Ok(())
                };
                Ok((next, indexing))
            }
        }
    }

    fn queue(
        &mut self,
        topic: &str,
        queue_id: u32,
        v: &RecordView<'_>,
        pos: u64,
    ) -> Result<Option<Arc<ConsumeQueue>>, StoreError> {
        let generation = self.queues.generation();
        if generation != self.cache_generation {
            self.cache.clear();
            self.cache_generation = generation;
        }
        if let Some(q) = self.cache.get(topic).and_then(|m| m.get(&queue_id)) {
            return Ok(Some(q.clone()));
        }
        let q = self
            .queues
            .get_or_create(topic, queue_id, v.queue_offset, pos)?;
        if let Some(q) = &q {
            self.cache
                .entry(topic.to_owned())
                .or_default()
                .insert(queue_id, q.clone());
        }
        Ok(q)
    }

    /// Puts the consume-queue entry of the record at `pos`; `false` if the record has no
    /// place in a queue (deleted topic, gap) and so gets no index entries either.
    fn dispatch(&mut self, v: &RecordView<'_>, pos: u64) -> Result<bool, StoreError> {
        let Some(queue) = self.queue(v.topic, v.queue_id, v, pos)? else {
            return Ok(false); // record of a deleted topic
        };
        let entry = CqEntry {
            physical_offset: pos,
            size: v.size,
            tag_hash: v.tag.map_or(rocketlog_common::tag::NO_TAG_HASH, tag_hash),
        };
        match queue.put(v.queue_offset, entry)? {
            // Replay after a restart: the index position says whether the index has it.
            Put::Appended | Put::AlreadyPresent => Ok(true),
            Put::Gap { expected } => {
                tracing::error!(
                    topic = v.topic,
                    queue_id = v.queue_id,
                    queue_offset = v.queue_offset,
                    expected,
                    physical_offset = pos,
                    "consume queue gap; record not dispatched"
                );
                Ok(false)
            }
        }
    }

    /// The index entries of one record: its message id and each key. After a failure part of
    /// them may be in; indexing the record again duplicates those, which lookups remove.
    fn index_record(
        batch: &mut IndexBatch<'_>,
        v: &RecordView<'_>,
        pos: u64,
    ) -> Result<(), StoreError> {
        if !v.message_id.is_empty() {
            batch.put(message_id_hash(v.message_id), pos)?;
        }
        for key in v.keys() {
            if !key.is_empty() {
                batch.put(key_hash(v.topic, key), pos)?;
            }
        }
        Ok(())
    }
}
