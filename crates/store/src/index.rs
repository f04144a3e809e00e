//! Persistent hash-slot index: message id → physical offsets and (topic, key) → physical
//! offsets. Files live in `index/`, named by the 20-digit physical offset of the first record
//! they index; the newest file takes inserts until full.
//!
//! ## File layout (little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | magic [`INDEX_MAGIC`] |
//! | 4  | 4 | version, 1 |
//! | 8  | 4 | slot count S |
//! | 12 | 4 | entry capacity E |
//! | 16 | 4 | entries used |
//! | 20 | 4 | reserved |
//! | 24 | 8 | physical offset of the first indexed record |
//! | 32 | 8 | physical offset of the last indexed record |
//! | 40 | 24 | reserved |
//! | 64 | 4·S | slots: number + 1 of the newest entry whose hash falls in the slot, 0 = none |
//! | 64+4·S | 20·E | entries: key hash (u64), physical offset (u64), number + 1 of the previous entry in the same slot (u32, 0 = none) |
//!
//! A lookup walks the chain of its slot and returns candidate offsets; callers confirm each by
//! reading the record, so hash collisions never return a wrong message. Entries are appended
//! in log order, and a chain only points to older entries, so a walk always terminates.
//!
//! Each file carries its own geometry in its header, so changing `index_slots` or
//! `index_entries_per_file` applies to new files and never breaks the existing ones. A new
//! file is created only when it leaves room for the consume queues (see `space`); until then
//! inserts fail with `DiskFull` and the dispatcher lets the index lag behind the queues.

use crate::checkpoint::Checkpoint;
use crate::config::{FaultInjector, IoPoint};
use crate::error::StoreError;
use crate::mmap::{FileWriter, MappedFile};
use crate::segment::{file_name, list_numbered, sync_dir};
use crate::space::create_with_room;
use parking_lot::{RwLock, RwLockWriteGuard};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use thiserror::Error;

/// Magic of an index file.
pub const INDEX_MAGIC: u32 = 0x524C_4958;
/// Bytes of the header.
pub const HEADER_LEN: usize = 64;
/// Bytes of one slot.
pub const SLOT_LEN: usize = 4;
/// Bytes of one entry.
pub const ENTRY_LEN: usize = 20;
const VERSION: u32 = 1;
/// Longest chain walk per file; bounds a lookup even on a degenerate hash distribution.
const MAX_WALK: usize = 100_000;

/// The fixed header of an index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// Number of hash slots.
    pub slots: u32,
    /// Number of entries the file has room for.
    pub capacity: u32,
    /// Entries written.
    pub count: u32,
    /// Physical offset of the first indexed record (also the file name).
    pub begin_phys: u64,
    /// Physical offset of the last indexed record.
    pub end_phys: u64,
}

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// [`message_id_hash`] or [`key_hash`] of what is indexed.
    pub key_hash: u64,
    /// Where the record starts.
    pub physical_offset: u64,
    /// Number + 1 of the previous entry in the same slot; 0 = none.
    pub prev: u32,
}

/// Why bytes are not a valid index header or entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IndexFormatError {
    #[error("need {need} bytes, got {have}")]
    Truncated { need: usize, have: usize },
    #[error("bad index magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("unsupported index version {found}")]
    BadVersion { found: u32 },
    #[error("index header is inconsistent: {reason}")]
    Inconsistent { reason: &'static str },
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

impl IndexHeader {
    /// The 64-byte encoding.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&INDEX_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.slots.to_le_bytes());
        b[12..16].copy_from_slice(&self.capacity.to_le_bytes());
        b[16..20].copy_from_slice(&self.count.to_le_bytes());
        b[24..32].copy_from_slice(&self.begin_phys.to_le_bytes());
        b[32..40].copy_from_slice(&self.end_phys.to_le_bytes());
        b
    }

    /// Decodes and checks the header; never panics.
    pub fn decode(b: &[u8]) -> Result<IndexHeader, IndexFormatError> {
        let b = b.get(..HEADER_LEN).ok_or(IndexFormatError::Truncated {
            need: HEADER_LEN,
            have: b.len(),
        })?;
        if u32_at(b, 0) != INDEX_MAGIC {
            return Err(IndexFormatError::BadMagic {
                found: u32_at(b, 0),
            });
        }
        if u32_at(b, 4) != VERSION {
            return Err(IndexFormatError::BadVersion {
                found: u32_at(b, 4),
            });
        }
        let h = IndexHeader {
            slots: u32_at(b, 8),
            capacity: u32_at(b, 12),
            count: u32_at(b, 16),
            begin_phys: u64_at(b, 24),
            end_phys: u64_at(b, 32),
        };
        if h.slots == 0 || h.capacity == 0 {
            return Err(IndexFormatError::Inconsistent {
                reason: "zero slots or capacity",
            });
        }
        if h.count > h.capacity {
            return Err(IndexFormatError::Inconsistent {
                reason: "count above capacity",
            });
        }
        Ok(h)
    }

    /// Size of a file with this geometry.
    pub fn file_len(&self) -> u64 {
        file_len(self.slots, self.capacity)
    }
}

/// Size of an index file with `slots` slots and room for `capacity` entries.
pub fn file_len(slots: u32, capacity: u32) -> u64 {
    HEADER_LEN as u64 + u64::from(slots) * SLOT_LEN as u64 + u64::from(capacity) * ENTRY_LEN as u64
}

impl IndexEntry {
    /// The 20-byte encoding.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..8].copy_from_slice(&self.key_hash.to_le_bytes());
        b[8..16].copy_from_slice(&self.physical_offset.to_le_bytes());
        b[16..20].copy_from_slice(&self.prev.to_le_bytes());
        b
    }

    /// Decodes 20 bytes; never panics.
    pub fn decode(b: &[u8]) -> Result<IndexEntry, IndexFormatError> {
        let b = b.get(..ENTRY_LEN).ok_or(IndexFormatError::Truncated {
            need: ENTRY_LEN,
            have: b.len(),
        })?;
        Ok(IndexEntry {
            key_hash: u64_at(b, 0),
            physical_offset: u64_at(b, 8),
            prev: u32_at(b, 16),
        })
    }
}

fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    let mut h = h;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Index hash of a message id (domain-separated from keys).
pub fn message_id_hash(id: &str) -> u64 {
    fnv1a(fnv1a(FNV_OFFSET, b"I\0"), id.as_bytes())
}

/// Index hash of a business key within a topic.
pub fn key_hash(topic: &str, key: &str) -> u64 {
    let h = fnv1a(fnv1a(FNV_OFFSET, b"K\0"), topic.as_bytes());
    fnv1a(fnv1a(h, b"\0"), key.as_bytes())
}

#[derive(Debug)]
struct IndexFile {
    writer: FileWriter,
    header: IndexHeader,
    flushed_count: AtomicU32,
}

impl IndexFile {
    fn path(&self) -> &Path {
        self.writer.file().path()
    }

    fn slot_pos(&self, hash: u64) -> usize {
        HEADER_LEN + (hash % u64::from(self.header.slots)) as usize * SLOT_LEN
    }

    fn entry_pos(&self, n: u32) -> usize {
        HEADER_LEN + self.header.slots as usize * SLOT_LEN + n as usize * ENTRY_LEN
    }

    fn read_u32(&self, pos: usize) -> u32 {
        self.writer.read(pos, 4).map_or(0, |b| u32_at(b, 0))
    }

    fn entry(&self, n: u32) -> Option<IndexEntry> {
        IndexEntry::decode(self.writer.read(self.entry_pos(n), ENTRY_LEN)?).ok()
    }

    fn write(&mut self, pos: usize, bytes: &[u8]) -> Result<(), StoreError> {
        self.writer
            .write(pos, bytes)
            .map_err(|e| StoreError::io(self.writer.file().path(), e))
    }

    fn put(&mut self, hash: u64, phys: u64) -> Result<(), StoreError> {
        let slot_pos = self.slot_pos(hash);
        let prev = self.read_u32(slot_pos);
        let n = self.header.count;
        let entry = IndexEntry {
            key_hash: hash,
            physical_offset: phys,
            prev,
        };
        self.write(self.entry_pos(n), &entry.encode())?;
        self.write(slot_pos, &(n + 1).to_le_bytes())?;
        self.header.count = n + 1;
        self.header.end_phys = phys;
        let h = self.header.encode();
        self.write(0, &h)
    }

    fn lookup(&self, hash: u64, max: usize, out: &mut Vec<u64>) {
        let mut e = self.read_u32(self.slot_pos(hash));
        let mut steps = 0;
        while e != 0 && e <= self.header.count && out.len() < max && steps < MAX_WALK {
            let Some(entry) = self.entry(e - 1) else {
                break;
            };
            if entry.key_hash == hash {
                out.push(entry.physical_offset);
            }
            if entry.prev >= e {
                break; // chains only point backwards; anything else is damage
            }
            e = entry.prev;
            steps += 1;
        }
    }

    /// How many of the first `count` entries index records below `before`: entries are in log
    /// order, so those are a prefix.
    fn count_below(&self, count: u32, before: u64) -> u32 {
        let (mut lo, mut hi) = (0, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid) {
                Some(e) if e.physical_offset < before => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    /// Rebuilds the slot table from the first `count` entries (after a crash the slots may
    /// point at entries past the checkpoint).
    fn rebuild(&mut self, count: u32) -> Result<(), StoreError> {
        let slots_len = self.header.slots as usize * SLOT_LEN;
        self.writer
            .zero(HEADER_LEN, HEADER_LEN + slots_len)
            .map_err(|e| StoreError::io(self.writer.file().path(), e))?;
        let mut end_phys = self.header.begin_phys;
        for n in 0..count {
            let Some(entry) = self.entry(n) else { break };
            let pos = self.slot_pos(entry.key_hash);
            self.write(pos, &(n + 1).to_le_bytes())?;
            end_phys = entry.physical_offset;
        }
        self.header.count = count;
        self.header.end_phys = end_phys;
        let h = self.header.encode();
        self.write(0, &h)
    }
}

/// Geometry and room rules of new index files.
#[derive(Debug, Clone)]
pub(crate) struct IndexConfig {
    pub slots: u32,
    pub capacity: u32,
    /// Bytes a new file must leave available (room for the consume queues).
    pub keep_free: u64,
    pub faults: FaultInjector,
}

/// All index files.
#[derive(Debug)]
pub(crate) struct Index {
    dir: PathBuf,
    config: IndexConfig,
    files: RwLock<Vec<IndexFile>>,
}

/// Exclusive access for the dispatcher's inserts of one batch.
pub(crate) struct IndexBatch<'a> {
    index: &'a Index,
    files: RwLockWriteGuard<'a, Vec<IndexFile>>,
}

impl IndexBatch<'_> {
    /// Indexes `hash` → `phys`; `phys` must not decrease between calls.
    pub(crate) fn put(&mut self, hash: u64, phys: u64) -> Result<(), StoreError> {
        if self
            .files
            .last()
            .is_none_or(|f| f.header.count >= f.header.capacity)
        {
            let f = self.index.create_file(phys)?;
            self.files.push(f);
        }
        match self.files.last_mut() {
            Some(f) => f.put(hash, phys),
            None => Ok(()),
        }
    }

    /// The active file and its entry count, for the checkpoint.
    pub(crate) fn snapshot(&self) -> (Option<u64>, u32) {
        match self.files.last() {
            Some(f) => (Some(f.header.begin_phys), f.header.count),
            None => (None, 0),
        }
    }
}

impl Index {
    /// Opens `dir`. Without a checkpoint everything is rebuilt from the log; otherwise files
    /// starting at or past `replay_start` are dropped and, after a crash, the active file is
    /// cut back to the checkpoint's entry count and to the records below `replay_start`, which
    /// the dispatcher indexes again. (The second bound matters after `truncate_log`: the
    /// checkpoint's count may include entries for records of the cut tail.)
    pub(crate) fn open(
        dir: PathBuf,
        config: IndexConfig,
        cp: Option<&Checkpoint>,
        replay_start: u64,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let mut files = Vec::new();
        for (name, path) in list_numbered(&dir).map_err(|e| StoreError::io(&dir, e))? {
            let keep = cp.is_some() && name < replay_start;
            if !keep {
                remove(&path)?;
                continue;
            }
            match Self::open_file(&path) {
                Ok(f) => files.push(f),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dropping unreadable index file");
                    remove(&path)?;
                }
            }
        }
        if let (Some(cp), Some(last)) = (cp, files.last_mut()) {
            if !cp.clean {
                let count = if cp.index_file == Some(last.header.begin_phys) {
                    cp.index_entries.min(last.header.capacity)
                } else {
                    last.header.count
                };
                let count = last.count_below(count, replay_start);
                last.rebuild(count)?;
                last.writer
                    .file()
                    .flush_all()
                    .map_err(|e| StoreError::io(last.writer.file().path(), e))?;
            }
        }
        for f in &files {
            f.flushed_count.store(f.header.count, Ordering::Release);
        }
        Ok(Index {
            dir,
            config,
            files: RwLock::new(files),
        })
    }

    fn open_file(path: &Path) -> Result<IndexFile, StoreError> {
        let len = std::fs::metadata(path)
            .map_err(|e| StoreError::io(path, e))?
            .len();
        let (_, writer) =
            MappedFile::open(path, len, false).map_err(|e| StoreError::io(path, e))?;
        let header = writer
            .read(0, HEADER_LEN)
            .ok_or_else(|| StoreError::corrupt(path, 0, "index file shorter than its header"))
            .and_then(|b| {
                IndexHeader::decode(b).map_err(|e| StoreError::corrupt(path, 0, e.to_string()))
            })?;
        if header.file_len() != len {
            return Err(StoreError::corrupt(
                path,
                0,
                "index file length does not match its header",
            ));
        }
        Ok(IndexFile {
            writer,
            header,
            flushed_count: AtomicU32::new(0),
        })
    }

    fn create_file(&self, begin: u64) -> Result<IndexFile, StoreError> {
        let header = IndexHeader {
            slots: self.config.slots,
            capacity: self.config.capacity,
            count: 0,
            begin_phys: begin,
            end_phys: begin,
        };
        let path = self.dir.join(file_name(begin));
        let (_, mut writer) =
            create_with_room(&path, header.file_len(), self.config.keep_free, || {
                self.config
                    .faults
                    .check(IoPoint::CreateIndexFile { begin })?;
                MappedFile::create(&path, header.file_len(), false)
            })?;
        writer
            .write(0, &header.encode())
            .map_err(|e| StoreError::io(&path, e))?;
        sync_dir(&self.dir)?;
        Ok(IndexFile {
            writer,
            header,
            flushed_count: AtomicU32::new(0),
        })
    }

    /// Exclusive access for a batch of inserts.
    pub(crate) fn batch(&self) -> IndexBatch<'_> {
        IndexBatch {
            index: self,
            files: self.files.write(),
        }
    }

    /// Candidate physical offsets for `hash`, newest first, at most `max`.
    pub(crate) fn lookup(&self, hash: u64, max: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for f in self.files.read().iter().rev() {
            if out.len() >= max {
                break;
            }
            f.lookup(hash, max, &mut out);
        }
        out
    }

    /// msync of every file changed since the last flush.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        for f in self.files.read().iter() {
            let count = f.header.count;
            if f.flushed_count.load(Ordering::Acquire) != count {
                f.writer
                    .file()
                    .flush_all()
                    .map_err(|e| StoreError::io(f.path(), e))?;
                f.flushed_count.store(count, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Deletes files whose every record lies below `log_min` (never the active one).
    pub(crate) fn delete_below(&self, log_min: u64) -> Result<(), StoreError> {
        let mut files = self.files.write();
        while files.len() > 1 && files[0].header.end_phys < log_min {
            let f = files.remove(0);
            let path = f.path().to_path_buf();
            drop(f);
            remove(&path)?;
        }
        Ok(())
    }
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_entry_round_trip() {
        let h = IndexHeader {
            slots: 7,
            capacity: 9,
            count: 3,
            begin_phys: 100,
            end_phys: 300,
        };
        assert_eq!(IndexHeader::decode(&h.encode()), Ok(h));
        assert_eq!(h.file_len(), 64 + 28 + 180);
        let mut bad = h.encode();
        bad[16] = 200; // count above capacity
        assert!(IndexHeader::decode(&bad).is_err());
        assert!(IndexHeader::decode(&[0u8; 10]).is_err());
        let e = IndexEntry {
            key_hash: 0xdead_beef,
            physical_offset: 42,
            prev: 5,
        };
        assert_eq!(IndexEntry::decode(&e.encode()), Ok(e));
    }

    #[test]
    fn hashes_are_domain_separated() {
        assert_ne!(message_id_hash("a"), key_hash("", "a"));
        assert_ne!(key_hash("ab", "c"), key_hash("a", "bc"));
    }

    fn geometry() -> IndexConfig {
        IndexConfig {
            slots: 3,
            capacity: 4,
            keep_free: 0,
            faults: FaultInjector::none(),
        }
    }

    fn cp(dispatched: u64, file: Option<u64>, entries: u32) -> Checkpoint {
        Checkpoint {
            clean: false,
            dispatched,
            indexed: dispatched,
            flushed: dispatched,
            index_file: file,
            index_entries: entries,
            ..Checkpoint::default()
        }
    }

    /// An index in a new directory holding ten records at 0, 10, .., 90, keyed "even" and
    /// "odd" by turns.
    fn ten_records() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(
            dir.path().join("index"),
            geometry(),
            Some(&cp(0, None, 0)),
            0,
        )
        .unwrap();
        {
            let mut b = idx.batch();
            for p in 0..10u64 {
                b.put(
                    key_hash("T", if p % 2 == 0 { "even" } else { "odd" }),
                    p * 10,
                )
                .unwrap();
            }
            assert_eq!(b.snapshot(), (Some(80), 2));
        }
        (dir, idx)
    }

    #[test]
    fn lookup_rolls_files_and_survives_crash_recovery() {
        let (dir, idx) = ten_records();
        assert_eq!(
            idx.lookup(key_hash("T", "even"), 100),
            vec![80, 60, 40, 20, 0]
        );
        assert_eq!(idx.lookup(key_hash("T", "odd"), 2), vec![90, 70]);
        assert!(idx.lookup(key_hash("T", "none"), 10).is_empty());
        idx.flush().unwrap();
        drop(idx);
        // Crash with the checkpoint taken after 7 records (file 40 held 3 entries then).
        let c = cp(70, Some(40), 3);
        let idx = Index::open(dir.path().join("index"), geometry(), Some(&c), 70).unwrap();
        assert_eq!(idx.lookup(key_hash("T", "even"), 100), vec![60, 40, 20, 0]);
        assert_eq!(idx.lookup(key_hash("T", "odd"), 100), vec![50, 30, 10]);
        idx.delete_below(45).unwrap();
        assert_eq!(idx.lookup(key_hash("T", "even"), 100), vec![60, 40]);
    }

    #[test]
    fn reopening_drops_entries_at_or_past_the_replay_start_even_if_the_checkpoint_counts_them() {
        let (dir, idx) = ten_records();
        idx.flush().unwrap();
        drop(idx);
        // The checkpoint says file 40 holds 4 entries (40..=70), but the log was cut at 55.
        let c = cp(55, Some(40), 4);
        let idx = Index::open(dir.path().join("index"), geometry(), Some(&c), 55).unwrap();
        assert_eq!(idx.lookup(key_hash("T", "even"), 100), vec![40, 20, 0]);
        assert_eq!(idx.lookup(key_hash("T", "odd"), 100), vec![50, 30, 10]);
        assert_eq!(idx.batch().snapshot(), (Some(40), 2));
    }
}
