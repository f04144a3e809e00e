//! The public handle: [`Store`].

use crate::core::{now_ms, Core, ABORT, DISPATCH_HURRY, DRAIN};
use crate::error::StoreError;
use crate::flush::{PendingAppend, Stop};
use crate::index::{key_hash, message_id_hash};
use crate::message::{AppendMessage, AppendResult, LogScan, QueueRead, StoredMessage};
use crate::open::open_core;
use crate::queue_registry::remove_tree;
use crate::record::{self, Prepared, Record, FILLER_LEN};
use crate::retention::RetentionReport;
use crate::{FlushMode, StoreConfig};
use parking_lot::Mutex;
use rocketlog_common::{validate_topic, PhysicalOffset, QueueOffset};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::watch;

/// Queue entries examined by one `read_queue` call at most (bounds a call whose filter
/// rejects everything).
const MAX_SCAN_ENTRIES: u64 = 64 * 1024;
/// Message bytes returned by one `read_queue` call at most (at least one message).
const MAX_READ_BYTES: u64 = 64 << 20;
/// Candidates examined by one index lookup at most.
const MAX_LOOKUP: usize = 256;

#[derive(Debug, Default)]
struct Threads {
    flusher: Option<JoinHandle<()>>,
    dispatcher: Option<JoinHandle<()>>,
    allocator: Option<JoinHandle<()>>,
    housekeeper: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    core: Arc<Core>,
    threads: Mutex<Threads>,
}

/// Progress of the message-id/key index against the consume queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStatus {
    /// The index holds every record below this.
    pub indexed: PhysicalOffset,
    /// The consume queues hold every record below this (`indexed <= dispatched`).
    pub dispatched: PhysicalOffset,
    /// Why the index lags (the last failed insert), while it does.
    pub problem: Option<String>,
}

impl IndexStatus {
    /// Log bytes the index has yet to catch up with (lookups scan them meanwhile).
    pub fn lag_bytes(&self) -> u64 {
        self.dispatched.0.saturating_sub(self.indexed.0)
    }
}

/// An open store: one commit log with its consume queues and index, in one data directory.
///
/// Cheap to clone (all clones share one store); `Send + Sync`. Call [`Store::shutdown`] for a
/// clean stop (fast restart). Dropping the last handle without it stops the threads without a
/// final checkpoint: the next open recovers as after a process crash, losing nothing that
/// reached the operating system.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

fn join(h: Option<JoinHandle<()>>) {
    if let Some(h) = h {
        if h.join().is_err() {
            tracing::error!("a store thread panicked");
        }
    }
}

fn spawn(
    name: &str,
    core: &Arc<Core>,
    f: impl FnOnce(&Core) + Send + 'static,
) -> Result<JoinHandle<()>, StoreError> {
    let dir = core.config.data_dir.clone();
    let core = core.clone();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || f(&core))
        .map_err(|e| StoreError::io(&dir, e))
}

impl Store {
    /// Opens (creating if needed) the store in `config.data_dir`: recovers after a crash,
    /// replays the log into consume queues and index, and starts the background threads.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let core = Arc::new(open_core(config)?);
        let store = Store {
            shared: Arc::new(Shared {
                core: core.clone(),
                threads: Mutex::new(Threads::default()),
            }),
        };
        {
            let mut t = store.shared.threads.lock();
            t.allocator = Some(spawn("rocketlog-alloc", &core, |c| c.allocator.run())?);
            t.flusher = Some(spawn("rocketlog-flush", &core, |c| {
                c.flusher.run(&c.log, &|bytes| {
                    c.allocator.note_flush(bytes);
                    c.dispatch.wake.notify()
                })
            })?);
            t.dispatcher = Some(spawn("rocketlog-dispatch", &core, |c| c.run_dispatcher())?);
            t.housekeeper = Some(spawn("rocketlog-housekeep", &core, |c| {
                c.run_housekeeper()
            })?);
        }
        Ok(store)
    }

    fn core(&self) -> &Core {
        &self.shared.core
    }

    /// Appends a message. When this returns the record is in the mapped log with its queue
    /// offset assigned; await the returned handle for durability (Sync mode).
    pub fn append(&self, msg: AppendMessage) -> Result<PendingAppend, StoreError> {
        let core = self.core();
        core.check_open()?;
        if core.replica.load(Ordering::Acquire) {
            return Err(StoreError::Replica);
        }
        validate_topic(&msg.topic)?;
        let payload = msg.body.len() + record::properties_len(&msg.properties);
        if payload > core.config.max_message_size {
            return Err(StoreError::MessageTooLarge {
                size: payload,
                max: core.config.max_message_size,
            });
        }
        let max_record = (core.config.segment_size as usize).saturating_sub(FILLER_LEN);
        let prepared = Prepared::new(&msg)?;
        if prepared.len() > max_record {
            return Err(StoreError::MessageTooLarge {
                size: prepared.len(),
                max: max_record,
            });
        }
        let result = core
            .log
            .append(&prepared, &msg.topic, msg.queue_id, now_ms())?;
        // Async: the record is readable now. A napping dispatcher collects appends as a batch;
        // a large backlog cuts the nap short. Sync: it becomes readable when flushed, and the
        // flusher wakes the dispatcher then (waking it here would cost a futex call and a
        // context switch per append for nothing).
        if matches!(core.config.flush_mode, FlushMode::Async { .. }) {
            core.dispatch.wake.notify_or_hurry(|| {
                core.readable_limit()
                    .saturating_sub(core.dispatch.position())
                    >= DISPATCH_HURRY
            });
        }
        let end = result.physical_offset.0 + u64::from(result.size);
        Ok(core.flusher.pending(result, end))
    }

    /// Flushes, stops the threads and writes a clean checkpoint (the next open scans nothing).
    /// Idempotent; every later call on any clone fails with `ShutDown`.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        let core = self.core();
        if core.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let end = core.log.close();
        let mut t = self.shared.threads.lock();
        core.flusher.stop(Stop::Drain);
        join(t.flusher.take());
        core.request_stop(DRAIN);
        join(t.dispatcher.take());
        core.allocator.stop();
        join(t.allocator.take());
        join(t.housekeeper.take());
        let clean = core.flusher.flushed() == end && core.dispatch.position() == end;
        let result = core.checkpoint(clean).map(|_| ());
        core.lock_file.lock().take();
        if !clean {
            return Err(core.log.gate.check().err().unwrap_or(StoreError::ReadOnly {
                reason: "shutdown could not flush or dispatch the whole log".into(),
            }));
        }
        result
    }

    /// Up to `max_messages` messages of a queue from `from`, skipping entries whose tag hash
    /// `filter` rejects. `from` must lie in `[min, max]` of the queue.
    pub fn read_queue(
        &self,
        topic: &str,
        queue_id: u32,
        from: QueueOffset,
        max_messages: usize,
        filter: &dyn Fn(u64) -> bool,
    ) -> Result<QueueRead, StoreError> {
        let core = self.core();
        core.check_open()?;
        let Some(q) = core.queues.get(topic, queue_id) else {
            if from.0 != 0 {
                return Err(StoreError::OffsetOutOfRange {
                    offset: from.0,
                    min: 0,
                    max: 0,
                });
            }
            return Ok(QueueRead::default());
        };
        let (min, max) = q.range();
        if from.0 < min || from.0 > max {
            return Err(StoreError::OffsetOutOfRange {
                offset: from.0,
                min,
                max,
            });
        }
        let mut out = QueueRead {
            messages: Vec::new(),
            next_offset: from,
            min_offset: QueueOffset(min),
            max_offset: QueueOffset(max),
        };
        let mut next = from.0;
        let mut bytes = 0u64;
        let mut entries = Vec::with_capacity(64);
        'outer: while next < max && next - from.0 < MAX_SCAN_ENTRIES {
            entries.clear();
            q.entries(next, 64, &mut entries)?;
            if entries.is_empty() {
                break;
            }
            for e in &entries {
                if out.messages.len() >= max_messages || bytes >= MAX_READ_BYTES {
                    break 'outer;
                }
                let offset = next;
                next += 1;
                if !filter(e.tag_hash) {
                    continue;
                }
                if let Some(m) = self.read_entry(topic, queue_id, offset, e.physical_offset)? {
                    bytes += u64::from(m.size);
                    out.messages.push(m);
                }
            }
        }
        out.next_offset = QueueOffset(next);
        Ok(out)
    }

    /// The record a queue entry points at, checked to be that entry's message; `None` if
    /// retention deleted it meanwhile.
    fn read_entry(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        phys: u64,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let core = self.core();
        match core.log.read_message(phys) {
            Ok(m) if m.topic == topic && m.queue_id == queue_id && m.queue_offset.0 == offset => {
                Ok(Some(m))
            }
            Ok(m) => Err(StoreError::Corrupt {
                file: core
                    .config
                    .data_dir
                    .join("consumequeue")
                    .join(topic)
                    .join(queue_id.to_string()),
                offset: offset * crate::consume_queue::ENTRY_LEN as u64,
                reason: format!(
                    "entry {offset} points at physical offset {phys}, which holds {}/{} offset {}",
                    m.topic, m.queue_id, m.queue_offset
                ),
            }),
            Err(StoreError::OffsetOutOfRange { .. }) if phys < core.log.min_offset() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The message at a queue offset, if readable.
    pub fn get(
        &self,
        topic: &str,
        queue_id: u32,
        offset: QueueOffset,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let core = self.core();
        core.check_open()?;
        let Some(q) = core.queues.get(topic, queue_id) else {
            return Ok(None);
        };
        match q.entry(offset.0)? {
            Some(e) => self.read_entry(topic, queue_id, offset.0, e.physical_offset),
            None => Ok(None),
        }
    }

    /// The message whose record starts at `offset` (CRC-checked).
    pub fn read_at(&self, offset: PhysicalOffset) -> Result<StoredMessage, StoreError> {
        self.core().check_open()?;
        self.core().log.read_message(offset.0)
    }

    /// `(min, max)`: readable queue offsets are `[min, max)`; `max` is the next offset to
    /// become readable. `(0, 0)` for an unknown queue.
    pub fn queue_range(&self, topic: &str, queue_id: u32) -> (QueueOffset, QueueOffset) {
        match self.core().queues.get(topic, queue_id) {
            Some(q) => {
                let (min, max) = q.range();
                (QueueOffset(min), QueueOffset(max))
            }
            None => (QueueOffset(0), QueueOffset(0)),
        }
    }

    /// Every (topic, queue id) with a consume queue, sorted.
    pub fn queues(&self) -> Vec<(String, u32)> {
        self.core().queues.list()
    }

    fn lookup(
        &self,
        hash: u64,
        max: usize,
        keep: impl Fn(&StoredMessage) -> bool,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let core = self.core();
        core.check_open()?;
        // Read before the index: whatever the index gains meanwhile is in the scanned range.
        let snap = core.dispatch.snapshot();
        let mut cands = core.index.lookup(hash, MAX_LOOKUP);
        if snap.indexed < snap.dispatched {
            self.scan_unindexed(hash, snap.indexed, snap.dispatched, &mut cands)?;
        }
        cands.sort_unstable();
        cands.dedup();
        let mut out = Vec::new();
        // Newest first, so `max` keeps the most recent matches.
        for phys in cands.into_iter().rev() {
            if out.len() >= max {
                break;
            }
            match core.log.read_message(phys) {
                Ok(m) if keep(&m) => out.push(m),
                Ok(_) => {}
                Err(StoreError::OffsetOutOfRange { .. }) => {} // deleted by retention
                Err(e) => return Err(e),
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Adds the records of `[from, to)` whose id or a key hashes to `hash`: the part of the
    /// log the index has not caught up with, so lookups stay complete while it lags.
    fn scan_unindexed(
        &self,
        hash: u64,
        from: u64,
        to: u64,
        out: &mut Vec<u64>,
    ) -> Result<(), StoreError> {
        let log = &self.core().log;
        let mut pos = from.max(log.min_offset());
        while pos < to {
            let step = log.with_record(pos, |b, _| match record::decode_trusted(b) {
                Ok(Record::Message(v)) => {
                    let hit = message_id_hash(v.message_id) == hash
                        || v.keys().any(|k| key_hash(v.topic, k) == hash);
                    Some((u64::from(v.size), hit))
                }
                Ok(Record::Filler { size, .. }) => Some((u64::from(size), false)),
                Err(_) => None,
            });
            match step {
                Ok(Some((size, hit))) => {
                    if hit && out.len() < MAX_LOOKUP {
                        out.push(pos);
                    }
                    pos += size;
                }
                // Dispatched records were valid; a segment deleted meanwhile ends the scan.
                Ok(None) | Err(StoreError::OffsetOutOfRange { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every stored message with this message id (duplicates included), in log order.
    pub fn lookup_message_id(&self, message_id: &str) -> Result<Vec<StoredMessage>, StoreError> {
        self.lookup(message_id_hash(message_id), MAX_LOOKUP, |m| {
            m.message_id == message_id
        })
    }

    /// The newest `max` messages of `topic` carrying `key`, in log order.
    pub fn lookup_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.lookup(key_hash(topic, key), max.min(MAX_LOOKUP), |m| {
            m.topic == topic && m.keys.iter().any(|k| k == key)
        })
    }

    /// The first queue offset whose message was stored at or after `timestamp_ms`; the
    /// queue's max offset if none was.
    pub fn queue_offset_at_time(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<QueueOffset, StoreError> {
        let core = self.core();
        core.check_open()?;
        let Some(q) = core.queues.get(topic, queue_id) else {
            return Ok(QueueOffset(0));
        };
        let (mut lo, mut hi) = q.range();
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ts = match q.entry(mid)? {
                Some(e) => core
                    .log
                    .with_record(e.physical_offset, |b, _| {
                        record::peek_store_timestamp(b).ok()
                    })
                    .ok()
                    .flatten(),
                None => None,
            };
            // Unreadable (deleted) entries are older than anything readable.
            if ts.is_none_or(|t| t < timestamp_ms) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(QueueOffset(lo))
    }

    /// Drops every consume queue of `topic`; its log records age out with retention. Appends
    /// to the topic afterwards start a new incarnation at queue offset 0.
    pub fn delete_topic(&self, topic: &str) -> Result<(), StoreError> {
        let core = self.core();
        core.check_open()?;
        validate_topic(topic)?;
        let trash = core.log.with_append_lock(|offsets, end| {
            let r = core.queues.delete_topic(topic, end);
            if r.is_ok() {
                offsets.remove(topic);
            }
            r
        })?;
        match trash {
            Some(dir) => remove_tree(&dir),
            None => Ok(()),
        }
    }

    /// Advances whenever new messages become readable through `read_queue`.
    pub fn dispatched(&self) -> watch::Receiver<PhysicalOffset> {
        self.core().dispatch.subscribe()
    }

    /// `(min, max)`: the first byte still on disk and the end of the written log.
    pub fn log_range(&self) -> (PhysicalOffset, PhysicalOffset) {
        let log = &self.core().log;
        (
            PhysicalOffset(log.min_offset()),
            PhysicalOffset(log.committed()),
        )
    }

    /// How far the index has caught up with the consume queues.
    pub fn index_status(&self) -> IndexStatus {
        let core = self.core();
        let snap = core.dispatch.snapshot();
        IndexStatus {
            indexed: PhysicalOffset(snap.indexed),
            dispatched: PhysicalOffset(snap.dispatched),
            problem: core.dispatch.index_problem(),
        }
    }

    /// Log bytes below this are on disk.
    pub fn flushed_offset(&self) -> PhysicalOffset {
        PhysicalOffset(self.core().flusher.flushed())
    }

    /// How long the commit log's flushes have taken since the store opened.
    pub fn fsync_stats(&self) -> crate::FsyncSnapshot {
        self.core().flusher.fsync_stats()
    }

    /// The share of the data directory's file system in use (df's "Use%", 0..=1), or `None`
    /// when it cannot be read.
    pub fn disk_used_ratio(&self) -> Option<f64> {
        crate::mmap::disk_space(&self.core().config.data_dir)
            .ok()
            .map(|s| s.use_ratio())
    }

    /// `(used, available)` bytes of the data directory's file system (df's "Used" and
    /// "Avail"), or `None` when it cannot be read.
    pub fn disk_space(&self) -> Option<(u64, u64)> {
        crate::mmap::disk_space(&self.core().config.data_dir)
            .ok()
            .map(|s| (s.used, s.available))
    }

    /// Decoded records from `from` (a record boundary) up to the written end, at most
    /// `max_bytes` of records but always at least one if there is one. The written end may be
    /// past `flushed_offset()` in Sync mode: bound by it if only durable records may be used.
    pub fn scan_log(&self, from: PhysicalOffset, max_bytes: usize) -> Result<LogScan, StoreError> {
        let core = self.core();
        core.check_open()?;
        let (min, end) = (core.log.min_offset(), core.log.committed());
        if from.0 < min || from.0 > end {
            return Err(StoreError::OffsetOutOfRange {
                offset: from.0,
                min,
                max: end,
            });
        }
        let mut out = LogScan {
            messages: Vec::new(),
            next: from,
        };
        let mut pos = from.0;
        let mut bytes = 0usize;
        while pos < end {
            let step = core
                .log
                .with_record(pos, |b, seg| match record::decode(b) {
                    Ok(Record::Message(v)) => Ok((u64::from(v.size), Some(v.to_stored()))),
                    Ok(Record::Filler { size, .. }) => Ok((u64::from(size), None)),
                    Err(e) => Err(StoreError::corrupt(
                        seg.file.path(),
                        pos - seg.base,
                        format!("physical offset {pos}: {e}"),
                    )),
                })??;
            if let Some(m) = step.1 {
                if !out.messages.is_empty() && bytes + m.size as usize > max_bytes {
                    break;
                }
                bytes += m.size as usize;
                out.messages.push(m);
            }
            pos += step.0;
            out.next = PhysicalOffset(pos);
        }
        Ok(out)
    }

    /// Makes the store a replica (`true`: only [`Store::append_replicated`] appends) or a
    /// master again (`false`).
    pub fn set_replica(&self, replica: bool) {
        self.core().replica.store(replica, Ordering::Release);
    }

    /// Whether the store is a replica (see [`Store::set_replica`]).
    pub fn is_replica(&self) -> bool {
        self.core().replica.load(Ordering::Acquire)
    }

    /// Size of every commit-log segment (a replica's must equal its master's).
    pub fn segment_size(&self) -> u64 {
        self.core().config.segment_size
    }

    /// The end of the written log (a physical offset), updated on every append while anyone
    /// holds a receiver: what a follower may read up to.
    pub fn subscribe_log_end(&self) -> watch::Receiver<u64> {
        self.core().log.subscribe_end()
    }

    /// Raw bytes of whole records from `from` (a record boundary; `log_range().1` gives an
    /// empty result), at most `max_bytes` but at least one record, never past the end of the
    /// segment holding `from`: what a master ships to its replicas, byte for byte.
    pub fn read_log_bytes(
        &self,
        from: PhysicalOffset,
        max_bytes: usize,
    ) -> Result<Vec<u8>, StoreError> {
        let core = self.core();
        core.check_open()?;
        let min = core.log.min_offset();
        if from.0 < min {
            return Err(StoreError::OffsetOutOfRange {
                offset: from.0,
                min,
                max: core.log.committed(),
            });
        }
        core.log.read_raw(from.0, max_bytes)
    }

    /// Appends bytes the master wrote at the same offsets (see [`Store::read_log_bytes`]):
    /// they must start at this log's end and be whole valid records continuing its queues,
    /// else they are refused with [`StoreError::BadReplicaChunk`] and nothing is written. The
    /// dispatcher builds consume queues and index from them as from local appends. Await the
    /// handle for durability under this store's flush mode.
    pub fn append_replicated(
        &self,
        at: PhysicalOffset,
        bytes: &[u8],
    ) -> Result<PendingAppend, StoreError> {
        let core = self.core();
        core.check_open()?;
        let end = core.log.append_raw(at.0, bytes)?;
        if matches!(core.config.flush_mode, FlushMode::Async { .. }) {
            core.dispatch.wake.notify();
        }
        let result = AppendResult {
            physical_offset: at,
            size: u32::try_from(end - at.0).unwrap_or(u32::MAX),
            queue_offset: QueueOffset(0),
            store_timestamp_ms: core.log.last_store_timestamp(),
        };
        Ok(core.flusher.pending(result, end))
    }

    /// Runs retention now (it also runs every `retention_check_interval`).
    pub fn run_retention_now(&self) -> Result<RetentionReport, StoreError> {
        self.core().check_open()?;
        self.core().run_retention()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let core = &self.core;
        if core.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // No final flush or checkpoint: the next open recovers like after a crash.
        core.log.close();
        core.flusher.stop(Stop::Abort);
        core.request_stop(ABORT);
        core.allocator.stop();
        let t = self.threads.get_mut();
        join(t.flusher.take());
        join(t.dispatcher.take());
        join(t.allocator.take());
        join(t.housekeeper.take());
    }
}
