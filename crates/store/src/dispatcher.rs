//! The dispatcher: tails the commit log and builds the consume queues and the index from it.
//!
//! It is the only writer of both. It reads records below a limit (the committed end in Async
//! mode, the flushed end in Sync mode, so consumers never see a record a crash could take
//! back), sleeps on a [`Wake`] when caught up, and publishes its position after each batch.
//! Dispatching is idempotent (a consume-queue entry already present is skipped), so recovery
//! simply runs the same code from the checkpoint.

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
/// queues and the index, and the active index file then held `index_entries` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Snapshot {
    pub dispatched: u64,
    pub index_file: Option<u64>,
    pub index_entries: u32,
}

/// Dispatcher position, shared with readers and the checkpoint.
#[derive(Debug)]
pub(crate) struct DispatchState {
    position: AtomicU64,
    snapshot: Mutex<Snapshot>,
    watch: watch::Sender<PhysicalOffset>,
    pub(crate) wake: Wake,
}

impl DispatchState {
    pub(crate) fn new(start: Snapshot) -> Self {
        DispatchState {
            position: AtomicU64::new(start.dispatched),
            snapshot: Mutex::new(start),
            watch: watch::Sender::new(PhysicalOffset(start.dispatched)),
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

    pub(crate) fn subscribe(&self) -> watch::Receiver<PhysicalOffset> {
        self.watch.subscribe()
    }

    fn publish(&self, snap: Snapshot) {
        *self.snapshot.lock() = snap;
        self.position.store(snap.dispatched, Ordering::SeqCst);
        self.watch.send_replace(PhysicalOffset(snap.dispatched));
    }
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

    /// Dispatches records from `from` (a record boundary) towards `limit`, at most one batch;
    /// publishes and returns the new position.
    pub(crate) fn step(
        &mut self,
        state: &DispatchState,
        from: u64,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let mut batch = self.index.batch();
        let end = limit.min(from.saturating_add(BATCH_BYTES));
        let mut pos = from;
        let result = (|| {
            while pos < end {
                pos = self.one(&mut batch, pos)?;
            }
            Ok(())
        })();
        if pos > from {
            let (index_file, index_entries) = batch.snapshot();
            drop(batch);
            state.publish(Snapshot {
                dispatched: pos,
                index_file,
                index_entries,
            });
        }
        result.map(|()| pos)
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

    /// Dispatches the record at `pos`; returns the next record's position.
    fn one(&mut self, batch: &mut IndexBatch<'_>, pos: u64) -> Result<u64, StoreError> {
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
            Record::Filler { size, .. } => Ok(pos + u64::from(size)),
            Record::Message(v) => {
                self.dispatch(batch, &v, pos)?;
                Ok(pos + u64::from(v.size))
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

    fn dispatch(
        &mut self,
        batch: &mut IndexBatch<'_>,
        v: &RecordView<'_>,
        pos: u64,
    ) -> Result<(), StoreError> {
        let Some(queue) = self.queue(v.topic, v.queue_id, v, pos)? else {
            return Ok(()); // record of a deleted topic
        };
        let entry = CqEntry {
            physical_offset: pos,
            size: v.size,
            tag_hash: v.tag.map_or(rocketlog_common::tag::NO_TAG_HASH, tag_hash),
        };
        match queue.put(v.queue_offset, entry)? {
            Put::Appended => {}
            Put::AlreadyPresent => return Ok(()), // replay: the index has it too
            Put::Gap { expected } => {
                tracing::error!(
                    topic = v.topic,
                    queue_id = v.queue_id,
                    queue_offset = v.queue_offset,
                    expected,
                    physical_offset = pos,
                    "consume queue gap; record not dispatched"
                );
                return Ok(());
            }
        }
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
