//! The commit log: a contiguous run of equal-sized segments that every topic and queue appends
//! to, and the single short critical section that orders appends.
//!
//! Under the append lock an append only: assigns the queue offset and store timestamp, patches
//! them and the physical offset into the already encoded record, finishes its CRC over the 60
//! patched header bytes, copies the record into the mapped segment and publishes the new end.
//! Encoding, the body CRC, waiting for a new segment and flushing all happen outside it.
//!
//! Invariants: segments are contiguous (`base[i+1] == base[i] + segment_size`) and every base
//! is a multiple of `segment_size`; `committed` is always a record boundary; every segment but
//! the last ends with a filler; bytes below `committed` never change.

use crate::allocator::{Allocator, NewSegment};
use crate::error::StoreError;
use crate::message::{AppendResult, StoredMessage};
use crate::record::{self, Prepared, Record, FILLER_LEN};
use crate::segment::Segment;
use parking_lot::{Mutex, RwLock};
use rocketlog_common::{PhysicalOffset, QueueOffset};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Next queue offset per topic and queue id.
pub(crate) type QueueOffsets = HashMap<String, HashMap<u32, u64>>;

/// Writes refused after a failed flush, with the reason.
#[derive(Debug, Default)]
pub(crate) struct WriteGate {
    read_only: AtomicBool,
    reason: Mutex<String>,
}

impl WriteGate {
    pub(crate) fn set_read_only(&self, reason: String) {
        let mut r = self.reason.lock();
        if !self.read_only.load(Ordering::SeqCst) {
            *r = reason;
            self.read_only.store(true, Ordering::SeqCst);
        }
    }

    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.read_only.load(Ordering::Acquire) {
            return Err(StoreError::ReadOnly {
                reason: self.reason.lock().clone(),
            });
        }
        Ok(())
    }
}

/// The first pre-fault request after start (see [`CommitLog::prefault_ahead`]).
const FIRST_PREFAULT_SPAN: u64 = 4 << 20;

#[derive(Debug)]
struct LogWriter {
    active: Option<NewSegment>,
    write_pos: u64,
    queue_offsets: QueueOffsets,
    last_store_ts: i64,
    /// Pre-faulting has been requested up to this physical offset.
    prefault_requested: u64,
    /// The span of the last pre-fault request (0: none yet); see [`CommitLog::prefault_ahead`].
    prefault_span: u64,
    closed: bool,
    /// Sync mode: records are encoded here and written to the file with one `pwrite` per
    /// flush round (see [`CommitLog::write_pending`]); `None`: encoded straight into the map.
    pending: Option<Pending>,
}

/// Sync-mode records appended but not yet written to the file. They are not readable (not
/// below `committed`) until written, and not acknowledged until flushed, so holding them in
/// memory changes no guarantee; it turns one small `pwrite` per record (each a page-cache
/// write with its own extent and dirtying work) into one per fsync. Measured on the 2-core
/// VM: 64 writes of 1 KiB + fdatasync 0.66-0.79 ms, one write of 64 KiB + fdatasync 0.37 ms.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    /// Physical offset of `buf[0]` (meaningful while `buf` is not empty).
    start: u64,
}

/// Pending bytes beyond which an appender writes them itself instead of leaving them to the
/// flusher (bounds the buffer when appenders run far ahead of a slow fsync).
const PENDING_LIMIT: usize = 4 << 20;

/// What recovery hands the commit log.
#[derive(Debug)]
pub(crate) struct RecoveredLog {
    /// Every segment, in order; the last one is `active` if there is one.
    pub segments: Vec<Arc<Segment>>,
    pub active: Option<NewSegment>,
    pub end: u64,
    pub last_store_ts: i64,
}

/// The commit log.
#[derive(Debug)]
pub(crate) struct CommitLog {
    segment_size: u64,
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<LogWriter>,
    committed: AtomicU64,
    /// The committed end, for followers (replication) that wait for new bytes; sent only while
    /// someone listens.
    end_tx: watch::Sender<u64>,
    allocator: Arc<Allocator>,
    pub(crate) gate: WriteGate,
}

impl CommitLog {
    /// `write_through`: write records with `pwrite` rather than into the map (Sync mode).
    pub(crate) fn new(
        segment_size: u64,
        write_through: bool,
        allocator: Arc<Allocator>,
        rec: RecoveredLog,
        queue_offsets: QueueOffsets,
    ) -> Self {
        let next_base = match &rec.active {
            Some(a) => a.segment.end(),
            None => rec.end,
        };
        allocator.request(next_base, rec.active.is_some());
        if let Some(a) = &rec.active {
            allocator.set_active(a.segment.clone());
        }
        // No warm-up at open: an idle store keeps no pre-faulted (resident) window; the first
        // append asks for one.
        let prefault_requested = rec.end;
        CommitLog {
            segment_size,
            segments: RwLock::new(rec.segments),
            committed: AtomicU64::new(rec.end),
            end_tx: watch::channel(rec.end).0,
            writer: Mutex::new(LogWriter {
                active: rec.active,
                write_pos: rec.end,
                queue_offsets,
                last_store_ts: rec.last_store_ts,
                prefault_requested,
                prefault_span: 0,
                closed: false,
                pending: write_through.then(Pending::default),
            }),
            allocator,
            gate: WriteGate::default(),
        }
    }

    /// Appends a prepared record (checked, measured, variable-part CRC done). On return the
    /// bytes are in the mapped segment and published below `committed`.
    pub(crate) fn append(
        &self,
        rec: &Prepared<'_>,
        topic: &str,
        queue_id: u32,
        now_ms: i64,
    ) -> Result<AppendResult, StoreError> {
        let size = rec.len() as u64;
        let mut w = self.writer.lock();
        loop {
            if w.closed {
                return Err(StoreError::ShutDown);
            }
            self.gate.check()?;
            let pos = w.write_pos;
            let fits = w
                .active
                .as_ref()
                .is_some_and(|a| pos + size + FILLER_LEN as u64 <= a.segment.end());
            if fits {
                return self.write_record(&mut w, rec, topic, queue_id, now_ms);
            }
            let next_base = match &w.active {
                Some(a) => a.segment.end(),
                None => pos,
            };
            if let Some(new) = self.allocator.take_ready(next_base) {
                self.roll(&mut w, new)?;
                continue;
            }
            // Never wait for file creation under the append lock.
            drop(w);
            self.allocator.wait_ready(next_base)?;
            w = self.writer.lock();
        }
    }

    fn write_record(
        &self,
        w: &mut LogWriter,
        rec: &Prepared<'_>,
        topic: &str,
        queue_id: u32,
        now_ms: i64,
    ) -> Result<AppendResult, StoreError> {
        let pos = w.write_pos;
        let LogWriter {
            active,
            queue_offsets,
            last_store_ts,
            pending,
            ..
        } = &mut *w;
        let Some(active) = active.as_mut() else {
            return Err(StoreError::ShutDown); // unreachable: caller checked `fits`
        };
        let slot = match queue_offsets.get_mut(topic) {
            Some(queues) => queues.entry(queue_id).or_insert(0),
            None => queue_offsets
                .entry(topic.to_owned())
                .or_default()
                .entry(queue_id)
                .or_insert(0),
        };
        let queue_offset = *slot;
        let ts = now_ms.max(*last_store_ts);
        let end = pos + rec.len() as u64;
        let pending_len = match pending {
            Some(p) => {
                if p.buf.is_empty() {
                    p.start = pos;
                }
                let at = p.buf.len();
                p.buf.resize(at + rec.len(), 0);
                rec.write(&mut p.buf[at..], queue_offset, pos, ts);
                p.buf.len()
            }
            None => {
                let local = (pos - active.segment.base) as usize;
                active
                    .writer
                    .region_mut(local, rec.len())
                    .map(|dst| rec.write(dst, queue_offset, pos, ts))
                    .map_err(|e| StoreError::io(active.segment.file.path(), e))?;
                active.writer.publish(local + rec.len());
                0
            }
        };
        *slot += 1;
        *last_store_ts = ts;
        w.write_pos = end;
        if w.pending.is_none() {
            self.publish_end(end);
        } else if pending_len >= PENDING_LIMIT {
            self.write_pending_locked(w)?;
        }
        self.prefault_ahead(w, end);
        Ok(AppendResult {
            physical_offset: PhysicalOffset(pos),
            size: rec.len() as u32,
            queue_offset: QueueOffset(queue_offset),
            store_timestamp_ms: ts,
        })
    }

    /// Sync mode: writes the pending records to the file (one `pwrite`) and makes them
    /// readable. Returns the new committed end if anything was written. A failed write makes
    /// the log read-only: what was acknowledged stays, nothing later is accepted.
    pub(crate) fn write_pending(&self) -> Result<Option<u64>, StoreError> {
        let mut w = self.writer.lock();
        if w.pending.as_ref().is_none_or(|p| p.buf.is_empty()) {
            return Ok(None);
        }
        self.write_pending_locked(&mut w)?;
        Ok(Some(self.committed()))
    }

    fn write_pending_locked(&self, w: &mut LogWriter) -> Result<(), StoreError> {
        let LogWriter {
            active, pending, ..
        } = w;
        let (Some(p), Some(active)) = (pending.as_mut(), active.as_mut()) else {
            return Ok(());
        };
        if p.buf.is_empty() {
            return Ok(());
        }
        let local = (p.start - active.segment.base) as usize;
        if let Err(e) = active.writer.write_through(local, &p.buf) {
            let e = StoreError::io(active.segment.file.path(), e);
            self.gate
                .set_read_only(format!("writing the log at {} failed: {e}", p.start));
            return Err(e);
        }
        active.writer.publish(local + p.buf.len());
        let end = p.start + p.buf.len() as u64;
        p.buf.clear();
        self.publish_end(end);
        Ok(())
    }

    /// Makes `end` the committed end and tells followers.
    fn publish_end(&self, end: u64) {
        self.committed.store(end, Ordering::SeqCst);
        if self.end_tx.receiver_count() > 0 {
            self.end_tx.send_replace(end);
        }
    }

    /// Follows the committed end (see [`CommitLog::committed`]).
    pub(crate) fn subscribe_end(&self) -> watch::Receiver<u64> {
        let rx = self.end_tx.subscribe();
        // A subscriber that arrives between two appends would otherwise hold a stale value
        // until the next one.
        self.end_tx.send_replace(self.committed());
        rx
    }

    /// Appends bytes another log wrote at the same offsets (replication): whole records
    /// starting exactly at this log's end, each checked (magic, length, CRC, its recorded
    /// position, its queue offset continuing the queue), at most up to the end of one segment.
    /// A chunk ending with a segment's filler closes that segment; the next chunk starts the
    /// next one. Returns the new end. Nothing is written when the chunk is refused.
    pub(crate) fn append_raw(&self, at: u64, bytes: &[u8]) -> Result<u64, StoreError> {
        let refuse = |reason: String| StoreError::BadReplicaChunk { offset: at, reason };
        let mut w = self.writer.lock();
        loop {
            if w.closed {
                return Err(StoreError::ShutDown);
            }
            self.gate.check()?;
            if w.write_pos != at {
                return Err(refuse(format!("this log ends at {}", w.write_pos)));
            }
            let seg_end = w.active.as_ref().map(|a| a.segment.end());
            if let Some(seg_end) = seg_end.filter(|&e| at < e) {
                let plan = plan_raw(at, bytes, seg_end, &w.queue_offsets).map_err(refuse)?;
                return self.write_raw(&mut w, at, bytes, plan);
            }
            // The previous chunk closed its segment (or the log has none yet).
            let next_base = seg_end.unwrap_or(at);
            if let Some(new) = self.allocator.take_ready(next_base) {
                self.install(&mut w, new);
                continue;
            }
            drop(w);
            self.allocator.wait_ready(next_base)?;
            w = self.writer.lock();
        }
    }

    fn write_raw(
        &self,
        w: &mut LogWriter,
        at: u64,
        bytes: &[u8],
        plan: RawPlan,
    ) -> Result<u64, StoreError> {
        // Replicas never append their own records, so nothing is pending; write through when
        // the log does (Sync mode), into the map otherwise.
        self.write_pending_locked(w)?;
        let Some(active) = w.active.as_mut() else {
            return Err(StoreError::ShutDown); // unreachable: the caller checked it
        };
        let local = (at - active.segment.base) as usize;
        let written = if w.pending.is_some() {
            active.writer.write_through(local, bytes)
        } else {
            active
                .writer
                .region_mut(local, bytes.len())
                .map(|dst| dst.copy_from_slice(bytes))
        };
        if let Err(e) = written {
            let e = StoreError::io(active.segment.file.path(), e);
            self.gate
                .set_read_only(format!("writing replicated bytes at {at} failed: {e}"));
            return Err(e);
        }
        active.writer.publish(local + bytes.len());
        for (topic, queues) in plan.next_offsets {
            let slots = w.queue_offsets.entry(topic).or_default();
            slots.extend(queues);
        }
        if plan.last_store_ts > 0 {
            w.last_store_ts = w.last_store_ts.max(plan.last_store_ts);
        }
        let end = at + bytes.len() as u64;
        w.write_pos = end;
        self.publish_end(end);
        self.prefault_ahead(w, end);
        Ok(end)
    }

    /// Keeps the allocator pre-faulting ahead of the writer at `end`. Each time the writer has
    /// used half of the last request, the next one asks for twice its span, from
    /// [`FIRST_PREFAULT_SPAN`] up to the configured window: under load the window is reached
    /// within a few tens of MiB written, while a broker that takes a message now and then holds
    /// only a few MiB of pre-faulted pages instead of the whole window.
    fn prefault_ahead(&self, w: &mut LogWriter, end: u64) {
        let window = self.allocator.prefault_window();
        if window == 0 || end + w.prefault_span / 2 <= w.prefault_requested {
            return;
        }
        let span = if w.prefault_span == 0 {
            FIRST_PREFAULT_SPAN
        } else {
            w.prefault_span.saturating_mul(2)
        }
        .min(window);
        w.prefault_span = span;
        w.prefault_requested = end + span;
        self.allocator.prefault_to(end, w.prefault_requested);
    }

    /// Makes `new` the active segment after the previous one was closed by replicated bytes
    /// (its filler came with them).
    fn install(&self, w: &mut LogWriter, new: NewSegment) {
        if let Some(old) = w.active.take() {
            old.writer.publish(old.segment.file.len());
        }
        let base = new.segment.base;
        self.segments.write().push(new.segment.clone());
        w.write_pos = base;
        self.allocator.set_active(new.segment.clone());
        w.active = Some(new);
        self.publish_end(base);
        self.allocator.request(base + self.segment_size, true);
    }

    /// Whole records from `from` (a record boundary below the committed end), at most
    /// `max_bytes` of them but at least one, never past the end of `from`'s segment. Empty
    /// at the committed end.
    pub(crate) fn read_raw(&self, from: u64, max_bytes: usize) -> Result<Vec<u8>, StoreError> {
        let end = self.committed();
        if from == end {
            return Ok(Vec::new());
        }
        let seg = self
            .segment_at(from)
            .filter(|_| from < end)
            .ok_or_else(|| self.out_of_range(from))?;
        let limit = end.min(seg.end());
        let mut to = from;
        while to < limit {
            let local = (to - seg.base) as usize;
            let head = seg
                .file
                .read(local, 8)
                .ok_or_else(|| self.out_of_range(to))?;
            let (size, _) = record::peek(head)
                .map_err(|e| StoreError::corrupt(seg.file.path(), to, e.to_string()))?;
            let next = to + u64::from(size);
            if size == 0 || next > limit {
                return Err(StoreError::corrupt(
                    seg.file.path(),
                    to,
                    format!("record of {size} bytes runs past the written end {limit}"),
                ));
            }
            if to > from && next - from > max_bytes as u64 {
                break;
            }
            to = next;
        }
        let local = (from - seg.base) as usize;
        seg.file
            .read(local, (to - from) as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| self.out_of_range(from))
    }

    /// Closes the active segment with a filler and makes `new` the active one.
    fn roll(&self, w: &mut LogWriter, new: NewSegment) -> Result<(), StoreError> {
        // Pending records belong to the old segment: write them before it is closed.
        self.write_pending_locked(w)?;
        if let Some(mut old) = w.active.take() {
            let local = (w.write_pos - old.segment.base) as usize;
            let rest = old.segment.file.len() - local;
            if rest > 0 {
                let filler = record::encode_filler(rest as u32, w.write_pos);
                let n = filler.len().min(rest);
                if let Err(e) = old.writer.write(local, &filler[..n]) {
                    let path = old.segment.file.path().to_path_buf();
                    w.active = Some(old);
                    return Err(StoreError::io(&path, e));
                }
            }
            old.writer.publish(old.segment.file.len());
        }
        let base = new.segment.base;
        self.segments.write().push(new.segment.clone());
        w.write_pos = base;
        self.allocator.set_active(new.segment.clone());
        w.active = Some(new);
        self.publish_end(base);
        self.allocator.request(base + self.segment_size, true);
        Ok(())
    }

    /// End of the last complete record: everything below is readable and never changes.
    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// First byte still on disk.
    pub(crate) fn min_offset(&self) -> u64 {
        match self.segments.read().first() {
            Some(s) => s.base,
            None => self.committed(),
        }
    }

    /// The segment holding `pos`.
    pub(crate) fn segment_at(&self, pos: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read();
        let first = segs.first()?;
        let idx = usize::try_from(pos.checked_sub(first.base)? / self.segment_size).ok()?;
        segs.get(idx).filter(|s| pos < s.end()).cloned()
    }

    /// A copy of the segment list.
    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().clone()
    }

    fn out_of_range(&self, pos: u64) -> StoreError {
        StoreError::OffsetOutOfRange {
            offset: pos,
            min: self.min_offset(),
            max: self.committed(),
        }
    }

    /// Calls `f` with the published bytes of the record at `pos` (a record boundary).
    pub(crate) fn with_record<R>(
        &self,
        pos: u64,
        f: impl FnOnce(&[u8], &Segment) -> R,
    ) -> Result<R, StoreError> {
        let seg = self.segment_at(pos).ok_or_else(|| self.out_of_range(pos))?;
        let local = (pos - seg.base) as usize;
        let head = seg
            .file
            .read(local, 8)
            .ok_or_else(|| self.out_of_range(pos))?;
        let (size, _) = record::peek(head)
            .map_err(|e| StoreError::corrupt(seg.file.path(), local as u64, e.to_string()))?;
        let bytes = seg.file.read(local, size as usize).ok_or_else(|| {
            StoreError::corrupt(
                seg.file.path(),
                local as u64,
                format!(
                    "record of {size} bytes at physical offset {pos} runs past the written end"
                ),
            )
        })?;
        Ok(f(bytes, &seg))
    }

    /// The message at `pos`, CRC-checked.
    pub(crate) fn read_message(&self, pos: u64) -> Result<StoredMessage, StoreError> {
        self.with_record(pos, |bytes, seg| match record::decode(bytes) {
            Ok(Record::Message(v)) => Ok(v.to_stored()),
            Ok(Record::Filler { .. }) => Err(self.out_of_range(pos)),
            Err(e) => Err(StoreError::corrupt(
                seg.file.path(),
                pos - seg.base,
                format!("physical offset {pos}: {e}"),
            )),
        })?
    }

    /// msync of the log bytes in `[from, to)`.
    pub(crate) fn flush(&self, from: u64, to: u64) -> Result<(), StoreError> {
        for seg in self.segments() {
            let a = from.max(seg.base);
            let b = to.min(seg.end());
            if a >= b {
                continue;
            }
            seg.file
                .flush_range((a - seg.base) as usize, (b - a) as usize)
                .map_err(|e| StoreError::io(seg.file.path(), e))?;
        }
        Ok(())
    }

    /// Refuses every later append with `ShutDown`; returns the final end.
    pub(crate) fn close(&self) -> u64 {
        let mut w = self.writer.lock();
        w.closed = true;
        w.write_pos
    }

    /// Runs `f` under the append lock with the queue-offset table and the committed end, so
    /// that nothing is appended while it runs.
    pub(crate) fn with_append_lock<R>(&self, f: impl FnOnce(&mut QueueOffsets, u64) -> R) -> R {
        let mut w = self.writer.lock();
        let end = w.write_pos;
        f(&mut w.queue_offsets, end)
    }

    /// Store timestamp of the newest appended record.
    pub(crate) fn last_store_timestamp(&self) -> i64 {
        self.writer.lock().last_store_ts
    }

    /// Removes the oldest segment from the log if `keep` says it may go. The last segment is
    /// never removed. The caller deletes the file; readers holding it keep their mapping.
    pub(crate) fn remove_oldest_if(
        &self,
        may_remove: impl FnOnce(&Segment, &Segment) -> bool,
    ) -> Option<Arc<Segment>> {
        let mut segs = self.segments.write();
        if segs.len() < 2 || !may_remove(&segs[0], &segs[1]) {
            return None;
        }
        Some(segs.remove(0))
    }
}

/// What a replicated chunk does to the writer's state, worked out before anything is written.
#[derive(Debug, Default)]
struct RawPlan {
    next_offsets: HashMap<String, HashMap<u32, u64>>,
    last_store_ts: i64,
}

/// Checks that `bytes` are whole valid records laid out from `at` within a segment ending at
/// `seg_end`, each continuing its queue, and a filler (if any) last and closing the segment.
fn plan_raw(
    at: u64,
    bytes: &[u8],
    seg_end: u64,
    offsets: &QueueOffsets,
) -> Result<RawPlan, String> {
    if bytes.is_empty() {
        return Err("the chunk is empty".into());
    }
    if at + bytes.len() as u64 > seg_end {
        return Err(format!(
            "{} bytes run past the segment end {seg_end}",
            bytes.len()
        ));
    }
    let mut plan = RawPlan::default();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let here = at + pos as u64;
        let rest = &bytes[pos..];
        let (size, _) = record::peek(rest).map_err(|e| format!("at {here}: {e}"))?;
        let size = size as usize;
        if size == 0 || size > rest.len() {
            return Err(format!(
                "at {here}: a record of {size} bytes with {} left in the chunk",
                rest.len()
            ));
        }
        match record::decode(&rest[..size]).map_err(|e| format!("at {here}: {e}"))? {
            Record::Message(v) => {
                if v.physical_offset != here {
                    return Err(format!(
                        "the record at {here} says it was written at {}",
                        v.physical_offset
                    ));
                }
                let expected = plan
                    .next_offsets
                    .get(v.topic)
                    .and_then(|q| q.get(&v.queue_id))
                    .or_else(|| offsets.get(v.topic).and_then(|q| q.get(&v.queue_id)))
                    .copied()
                    .unwrap_or(0);
                if v.queue_offset != expected {
                    return Err(format!(
                        "the record at {here} has queue offset {} in {}:{}, this log's next is {expected}",
                        v.queue_offset, v.topic, v.queue_id
                    ));
                }
                plan.next_offsets
                    .entry(v.topic.to_owned())
                    .or_default()
                    .insert(v.queue_id, expected + 1);
                plan.last_store_ts = plan.last_store_ts.max(v.store_timestamp_ms);
            }
            Record::Filler {
                physical_offset, ..
            } => {
                if physical_offset != here || here + size as u64 != seg_end {
                    return Err(format!(
                        "the filler at {here} (written at {physical_offset}, {size} bytes) does not close the segment ending at {seg_end}"
                    ));
                }
                if pos + size != bytes.len() {
                    return Err(format!("bytes follow the filler at {here}"));
                }
            }
        }
        pos += size;
    }
    Ok(plan)
}

/// Decodes the queue offsets a recovered log implies: the next offset of every queue.
pub(crate) fn offsets_from(queues: impl IntoIterator<Item = (String, u32, u64)>) -> QueueOffsets {
    let mut out = QueueOffsets::new();
    for (topic, q, next) in queues {
        out.entry(topic).or_default().insert(q, next);
    }
    out
}
