//! The consume queue of one (topic, queue id): entry N locates the Nth message of the queue in
//! the commit log. Files live in `consumequeue/<topic>/<queue id>/`, each named by the 20-digit
//! queue offset of its first entry and holding a fixed number of entries.
//!
//! ## Entry layout (20 bytes, little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 8 | physical offset of the record |
//! | 8  | 4 | record size (never 0: a zero size marks an empty slot) |
//! | 12 | 8 | tag hash (`rocketlog_common::tag_hash`, 0 = no tag) |
//!
//! Invariants: readable entries are `[min, max)`, dense and in log order (physical offsets
//! increase); only the dispatcher writes (`put`), always at `max`; an entry below `max` never
//! changes while the store runs.

use crate::error::StoreError;
use crate::mmap::{FileWriter, MappedFile};
use crate::segment::{file_name, list_numbered, sync_dir};
use crate::space::create_with_room;
use parking_lot::{Mutex, RwLock};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thiserror::Error;

/// Size of one entry.
pub const ENTRY_LEN: usize = 20;

/// One consume-queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    /// Where the record starts in the commit log.
    pub physical_offset: u64,
    /// Record size; never 0 for a written entry.
    pub size: u32,
    /// `rocketlog_common::tag_hash` of the tag, 0 for none: lets filters skip without reading.
    pub tag_hash: u64,
}

/// Why bytes are not an entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryError {
    #[error("consume-queue entry needs {ENTRY_LEN} bytes, got {len}")]
    BadLength { len: usize },
}

impl CqEntry {
    /// The 20-byte encoding.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..8].copy_from_slice(&self.physical_offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b[12..20].copy_from_slice(&self.tag_hash.to_le_bytes());
        b
    }

    /// Decodes exactly 20 bytes; `Ok(None)` for an empty slot. Never panics.
    pub fn decode(b: &[u8]) -> Result<Option<CqEntry>, EntryError> {
        let b: &[u8; ENTRY_LEN] = b
            .try_into()
            .map_err(|_| EntryError::BadLength { len: b.len() })?;
        let mut p = [0u8; 8];
        p.copy_from_slice(&b[0..8]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[12..20]);
        let size = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        Ok((size != 0).then(|| CqEntry {
            physical_offset: u64::from_le_bytes(p),
            size,
            tag_hash: u64::from_le_bytes(t),
        }))
    }
}

/// What `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    Appended,
    /// The entry was already there (replay after a restart).
    AlreadyPresent,
    /// The record's queue offset is past `expected`: entries are missing. Not written.
    Gap {
        expected: u64,
    },
}

#[derive(Debug)]
struct Files {
    /// File number (first entry / per_file) of `list[0]`.
    first_no: u64,
    list: VecDeque<Arc<MappedFile>>,
}

/// One consume queue.
#[derive(Debug)]
pub(crate) struct ConsumeQueue {
    dir: PathBuf,
    per_file: u64,
    files: RwLock<Files>,
    writer: Mutex<Option<(u64, FileWriter)>>,
    min: AtomicU64,
    max: AtomicU64,
    flushed: AtomicU64,
}

impl ConsumeQueue {
    /// A new, empty queue whose first entry will be `start`. Files are created on first put.
    pub(crate) fn create(dir: PathBuf, per_file: u64, start: u64) -> Self {
        ConsumeQueue {
            dir,
            per_file,
            files: RwLock::new(Files {
                first_no: start / per_file,
                list: VecDeque::new(),
            }),
            writer: Mutex::new(None),
            min: AtomicU64::new(start),
            max: AtomicU64::new(start),
            flushed: AtomicU64::new(start),
        }
    }

    /// `(min, max)`: readable entries are `[min, max)`.
    pub(crate) fn range(&self) -> (u64, u64) {
        let min = self.min.load(Ordering::Acquire);
        let max = self.max.load(Ordering::Acquire);
        (min.min(max), max)
    }

    fn file_len(&self) -> u64 {
        self.per_file * ENTRY_LEN as u64
    }

    fn corrupt(&self, file: &Path, local: usize, reason: impl Into<String>) -> StoreError {
        StoreError::corrupt(file, (local * ENTRY_LEN) as u64, reason)
    }

    /// Entry `i` if it is readable.
    pub(crate) fn entry(&self, i: u64) -> Result<Option<CqEntry>, StoreError> {
        let mut out = Vec::with_capacity(1);
        self.entries(i, 1, &mut out)?;
        Ok(out.pop())
    }

    /// Appends up to `n` readable entries starting at `from` to `out`.
    pub(crate) fn entries(
        &self,
        from: u64,
        n: usize,
        out: &mut Vec<CqEntry>,
    ) -> Result<(), StoreError> {
        let (min, max) = self.range();
        if from < min {
            return Ok(());
        }
        let end = max.min(from.saturating_add(n as u64));
        let files = self.files.read();
        let mut i = from;
        while i < end {
            let no = i / self.per_file;
            let Some(file) = no
                .checked_sub(files.first_no)
                .and_then(|k| files.list.get(k as usize))
            else {
                return Ok(()); // removed by retention meanwhile
            };
            let local = (i % self.per_file) as usize;
            let stop = end.min((no + 1) * self.per_file);
            let count = (stop - i) as usize;
            let bytes = file
                .read(local * ENTRY_LEN, count * ENTRY_LEN)
                .ok_or_else(|| {
                    self.corrupt(file.path(), local, "entry below max is not published")
                })?;
            for (k, chunk) in bytes.chunks_exact(ENTRY_LEN).enumerate() {
                match CqEntry::decode(chunk) {
                    Ok(Some(e)) => out.push(e),
                    _ => return Err(self.corrupt(file.path(), local + k, "empty entry below max")),
                }
            }
            i = stop;
        }
        Ok(())
    }

    /// Writes entry `queue_offset` (dispatcher only).
    pub(crate) fn put(&self, queue_offset: u64, entry: CqEntry) -> Result<Put, StoreError> {
        let max = self.max.load(Ordering::Acquire);
        if queue_offset < max {
            return Ok(Put::AlreadyPresent);
        }
        if queue_offset > max {
            if self.min.load(Ordering::Acquire) != max {
                return Ok(Put::Gap { expected: max });
            }
            self.restart_at(queue_offset)?;
        }
        let no = queue_offset / self.per_file;
        let local = (queue_offset % self.per_file) as usize * ENTRY_LEN;
        let mut w = self.writer.lock();
        if w.as_ref().map(|(n, _)| *n) != Some(no) {
            *w = Some((no, self.new_file(no)?));
        }
        let Some((_, writer)) = w.as_mut() else {
            return Err(StoreError::ShutDown); // unreachable: set just above
        };
        writer
            .write(local, &entry.encode())
            .map_err(|e| StoreError::io(writer.file().path(), e))?;
        writer.publish(local + ENTRY_LEN);
        self.max.store(queue_offset + 1, Ordering::Release);
        Ok(Put::Appended)
    }

    fn new_file(&self, no: u64) -> Result<FileWriter, StoreError> {
        let path = self.dir.join(file_name(no * self.per_file));
        let new_dir = !self.dir.exists();
        std::fs::create_dir_all(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        let (file, writer) = create_with_room(&path, self.file_len(), 0, || {
            MappedFile::create(&path, self.file_len(), false)
        })?;
        sync_dir(&self.dir)?;
        if new_dir {
            // queue dir and topic dir are new too: make their entries durable.
            for d in self.dir.ancestors().skip(1).take(2) {
                sync_dir(d)?;
            }
        }
        let mut files = self.files.write();
        if files.list.is_empty() {
            files.first_no = no;
        }
        files.list.push_back(file);
        Ok(writer)
    }

    /// Drops every file of an empty queue so that it starts over at `start`.
    fn restart_at(&self, start: u64) -> Result<(), StoreError> {
        *self.writer.lock() = None;
        let mut files = self.files.write();
        for f in files.list.drain(..) {
            remove_file(f.path())?;
        }
        files.first_no = start / self.per_file;
        self.min.store(start, Ordering::Release);
        self.max.store(start, Ordering::Release);
        self.flushed.store(start, Ordering::Release);
        Ok(())
    }

    /// msync of the entries written since the last flush.
    /// Releases the resident pages of every file but the newest (see
    /// [`MappedFile::release`]): older entries are read again only by consumers far behind,
    /// which map them back on demand.
    pub(crate) fn release_resident(&self) -> std::io::Result<()> {
        let older: Vec<Arc<MappedFile>> = {
            let f = self.files.read();
            let n = f.list.len().saturating_sub(1);
            f.list.iter().take(n).cloned().collect()
        };
        for file in older {
            file.release(0, file.len())?;
        }
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        let max = self.max.load(Ordering::Acquire);
        let from = self.flushed.load(Ordering::Acquire);
        if from >= max {
            return Ok(());
        }
        let files: Vec<(u64, Arc<MappedFile>)> = {
            let f = self.files.read();
            f.list
                .iter()
                .enumerate()
                .map(|(k, m)| (f.first_no + k as u64, m.clone()))
                .collect()
        };
        for (no, file) in files {
            let start = no * self.per_file;
            let a = from.max(start);
            let b = max.min(start + self.per_file);
            if a < b {
                let local = ((a - start) as usize) * ENTRY_LEN;
                file.flush_range(local, (b - a) as usize * ENTRY_LEN)
                    .map_err(|e| StoreError::io(file.path(), e))?;
            }
        }
        self.flushed.store(max, Ordering::Release);
        Ok(())
    }

    /// Drops entries that point below `log_min` (deleted by retention): moves `min` and deletes
    /// whole files below it, never the last file.
    pub(crate) fn truncate_below(&self, log_min: u64) -> Result<(), StoreError> {
        let (min, max) = self.range();
        let (mut lo, mut hi) = (min, max);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid)? {
                Some(e) if e.physical_offset < log_min => lo = mid + 1,
                _ => hi = mid,
            }
        }
        if lo > min {
            self.min.store(lo, Ordering::Release);
        }
        let min_no = self.min.load(Ordering::Acquire) / self.per_file;
        let mut files = self.files.write();
        while files.list.len() > 1 && files.first_no < min_no {
            if let Some(f) = files.list.pop_front() {
                files.first_no += 1;
                remove_file(f.path())?;
            }
        }
        Ok(())
    }

    /// Opens the queue in `dir` after a restart. Entries whose record lies at or past
    /// `replay_start` are cut off (the dispatcher rewrites them from the log), then trailing
    /// entries failing `valid(entry, queue_offset)` too. `Ok(None)`: no files.
    pub(crate) fn open(
        dir: PathBuf,
        replay_start: u64,
        valid: &dyn Fn(&CqEntry, u64) -> bool,
    ) -> Result<Option<Self>, StoreError> {
        let listed = list_numbered(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let Some((first_name, first_path)) = listed.first() else {
            return Ok(None);
        };
        let len = std::fs::metadata(first_path)
            .map_err(|e| StoreError::io(first_path, e))?
            .len();
        if len == 0 || len % ENTRY_LEN as u64 != 0 {
            return Err(StoreError::corrupt(
                first_path,
                0,
                format!("bad file length {len}"),
            ));
        }
        let per_file = len / ENTRY_LEN as u64;
        let mut mapped = Vec::with_capacity(listed.len());
        for (k, (name, path)) in listed.iter().enumerate() {
            if *name != first_name + k as u64 * per_file {
                return Err(StoreError::corrupt(
                    path,
                    0,
                    "consume-queue files are not contiguous",
                ));
            }
            mapped.push(MappedFile::open(path, len, false).map_err(|e| StoreError::io(path, e))?);
        }
        let first_no = first_name / per_file;
        let q = ConsumeQueue::create(dir, per_file, first_no * per_file);
        q.recover(mapped, first_no, replay_start, valid)?;
        Ok(Some(q))
    }

    fn recover(
        &self,
        mut mapped: Vec<(Arc<MappedFile>, FileWriter)>,
        first_no: u64,
        replay_start: u64,
        valid: &dyn Fn(&CqEntry, u64) -> bool,
    ) -> Result<(), StoreError> {
        let pf = self.per_file;
        let read = |m: &[(Arc<MappedFile>, FileWriter)], i: u64| -> Option<CqEntry> {
            let (_, w) = m.get((i / pf - first_no) as usize)?;
            let b = w.read((i % pf) as usize * ENTRY_LEN, ENTRY_LEN)?;
            CqEntry::decode(b).ok().flatten()
        };
        let start = first_no * pf;
        let last_start = start + (mapped.len() as u64 - 1) * pf;
        // min: first non-empty slot of the first file (a queue that started mid-file has zeros
        // before it); an all-empty file is an empty queue at the file's start.
        let min = (start..start + pf)
            .find(|&i| read(&mapped, i).is_some())
            .unwrap_or(start);
        // end: first empty slot of the last file (binary search; entries are a prefix).
        let (mut lo, mut hi) = (last_start.max(min), last_start + pf);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if read(&mapped, mid).is_some() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut end = lo.max(min);
        while end > min {
            match read(&mapped, end - 1) {
                Some(e) if e.physical_offset < replay_start && valid(&e, end - 1) => break,
                _ => end -= 1,
            }
        }
        // Keep files up to the one holding `end` (at least one), zero the rest of it.
        let keep = (((end.max(start) - start) / pf) as usize + 1).min(mapped.len());
        for (f, _) in mapped.drain(keep..) {
            remove_file(f.path())?;
        }
        let last_no = first_no + keep as u64 - 1;
        let local_end = (end.saturating_sub(last_no * pf)).min(pf) as usize * ENTRY_LEN;
        let mut files = VecDeque::with_capacity(keep);
        let n = mapped.len();
        let mut last_writer = None;
        for (k, (f, mut w)) in mapped.into_iter().enumerate() {
            if k + 1 < n {
                w.publish(f.len());
            } else {
                w.zero(local_end, f.len())
                    .map_err(|e| StoreError::io(f.path(), e))?;
                f.flush_range(local_end, f.len() - local_end)
                    .map_err(|e| StoreError::io(f.path(), e))?;
                w.publish(local_end);
                last_writer = Some((last_no, w));
            }
            files.push_back(f);
        }
        *self.files.write() = Files {
            first_no,
            list: files,
        };
        *self.writer.lock() = last_writer;
        let min = min.min(end);
        self.min.store(min, Ordering::Release);
        self.max.store(end, Ordering::Release);
        self.flushed.store(end, Ordering::Release);
        Ok(())
    }
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: u64) -> CqEntry {
        CqEntry {
            physical_offset: p,
            size: 100,
            tag_hash: p * 7,
        }
    }

    #[test]
    fn entry_round_trip_and_empty_slot() {
        let x = e(12345);
        assert_eq!(CqEntry::decode(&x.encode()), Ok(Some(x)));
        assert_eq!(CqEntry::decode(&[0u8; ENTRY_LEN]), Ok(None));
        assert_eq!(
            CqEntry::decode(&[1u8; 19]),
            Err(EntryError::BadLength { len: 19 })
        );
    }

    #[test]
    fn put_read_roll_files_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let qdir = dir.path().join("T").join("0");
        let q = ConsumeQueue::create(qdir.clone(), 4, 0);
        for i in 0..10 {
            assert_eq!(q.put(i, e(i * 100)).unwrap(), Put::Appended);
        }
        assert_eq!(q.put(3, e(300)).unwrap(), Put::AlreadyPresent);
        assert_eq!(q.put(12, e(1200)).unwrap(), Put::Gap { expected: 10 });
        assert_eq!(q.range(), (0, 10));
        let mut out = Vec::new();
        q.entries(2, 5, &mut out).unwrap();
        assert_eq!(out, (2..7).map(|i| e(i * 100)).collect::<Vec<_>>());
        assert_eq!(q.entry(10).unwrap(), None);
        q.flush().unwrap();
        assert_eq!(list_numbered(&qdir).unwrap().len(), 3);
        drop(q);

        // Reopen: entries at or past the replay start are cut.
        let q = ConsumeQueue::open(qdir.clone(), 650, &|_, _| true)
            .unwrap()
            .unwrap();
        assert_eq!(q.range(), (0, 7));
        assert_eq!(q.put(7, e(700)).unwrap(), Put::Appended);
        assert_eq!(q.entry(7).unwrap(), Some(e(700)));
        drop(q);
        let q = ConsumeQueue::open(qdir.clone(), 250, &|_, _| true)
            .unwrap()
            .unwrap();
        assert_eq!(q.range(), (0, 3));
        assert_eq!(list_numbered(&qdir).unwrap().len(), 1);
        drop(q);
        // Validation walks back over entries that do not match the log.
        let q = ConsumeQueue::open(qdir, u64::MAX, &|_, i| i < 1)
            .unwrap()
            .unwrap();
        assert_eq!(q.range(), (0, 1));
    }

    #[test]
    fn retention_moves_min_and_deletes_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let qdir = dir.path().join("T").join("1");
        let q = ConsumeQueue::create(qdir.clone(), 4, 0);
        for i in 0..10 {
            q.put(i, e(i * 100)).unwrap();
        }
        q.truncate_below(550).unwrap();
        assert_eq!(q.range(), (6, 10));
        assert_eq!(q.entry(5).unwrap(), None);
        assert_eq!(list_numbered(&qdir).unwrap().len(), 2);
        q.truncate_below(10_000).unwrap();
        assert_eq!(q.range(), (10, 10));
        assert_eq!(list_numbered(&qdir).unwrap().len(), 1, "last file kept");
        // An empty queue accepts a restart further on.
        assert_eq!(q.put(20, e(2000)).unwrap(), Put::Appended);
        assert_eq!(q.range(), (20, 21));
        drop(q);
        let q = ConsumeQueue::open(qdir, u64::MAX, &|_, _| true)
            .unwrap()
            .unwrap();
        assert_eq!(q.range(), (20, 21));
    }
}
