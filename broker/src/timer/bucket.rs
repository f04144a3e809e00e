//! Time-bucketed, append-only entry files: `<dir>/<20-digit bucket start ms>`, each holding the
//! entries whose `fire_ms` falls in `[start, start + width)`. Appends are buffered per batch and
//! made durable by [`BucketDir::sync`] before a checkpoint names them. A torn tail (crash in the
//! middle of an append) is ignored on load, and so is an entry with a bad CRC: the commit-log
//! rescan from the checkpoint writes every entry it covers again, and duplicates are harmless
//! (the wheel keys entries by `(fire_ms, phys)`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use super::entry::{Entry, ENTRY_LEN};
use super::TimerError;

/// The bucket files of one timer.
#[derive(Debug)]
pub struct BucketDir {
    dir: PathBuf,
    width_ms: i64,
    /// Starts of the buckets that have a file.
    files: BTreeSet<i64>,
    /// Written since the last sync.
    dirty: BTreeSet<i64>,
    /// A file was created or removed since the last directory sync.
    dir_dirty: bool,
    /// Appends not yet written, by bucket start.
    buffered: BTreeMap<i64, Vec<u8>>,
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> TimerError {
    TimerError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl BucketDir {
    /// Opens (creating) `dir` and lists its bucket files; other files are left alone.
    pub fn open(dir: &Path, width_ms: i64) -> Result<BucketDir, TimerError> {
        fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let mut files = BTreeSet::new();
        for item in fs::read_dir(dir).map_err(|e| io("listing", dir, e))? {
            let item = item.map_err(|e| io("listing", dir, e))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() == 20 && name.bytes().all(|c| c.is_ascii_digit()) {
                if let Ok(start) = name.parse::<i64>() {
                    files.insert(start);
                }
            }
        }
        Ok(BucketDir {
            dir: dir.to_path_buf(),
            width_ms: width_ms.max(1),
            files,
            dirty: BTreeSet::new(),
            dir_dirty: false,
            buffered: BTreeMap::new(),
        })
    }

    pub fn width_ms(&self) -> i64 {
        self.width_ms
    }

    /// Start of the bucket holding `ms`.
    pub fn bucket_of(&self, ms: i64) -> i64 {
        ms.div_euclid(self.width_ms) * self.width_ms
    }

    fn path(&self, start: i64) -> PathBuf {
        self.dir.join(format!("{:020}", start.max(0)))
    }

    /// Queues `e` for its bucket; written by [`BucketDir::write`].
    pub fn push(&mut self, e: &Entry) {
        let start = self.bucket_of(e.fire_ms.max(0));
        self.buffered
            .entry(start)
            .or_default()
            .extend_from_slice(&e.encode());
    }

    /// Writes every queued entry to its file (not yet durable).
    pub fn write(&mut self) -> Result<(), TimerError> {
        for (start, bytes) in std::mem::take(&mut self.buffered) {
            let path = self.path(start);
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| io("opening", &path, e))?;
            f.write_all(&bytes).map_err(|e| io("writing", &path, e))?;
            if self.files.insert(start) {
                self.dir_dirty = true;
            }
            self.dirty.insert(start);
        }
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) -> Result<(), TimerError> {
        self.write()?;
        for start in std::mem::take(&mut self.dirty) {
            if !self.files.contains(&start) {
                continue;
            }
            let path = self.path(start);
            match File::open(&path) {
                Ok(f) => f.sync_data().map_err(|e| io("syncing", &path, e))?,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("opening", &path, e)),
            }
        }
        if std::mem::take(&mut self.dir_dirty) {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The first bucket with a file at or after `from`.
    pub fn next_file(&self, from: i64) -> Option<i64> {
        self.files.range(from..).next().copied()
    }

    /// Every entry of the bucket starting at `start` that decodes (none if it has no file).
    /// Queued appends are written first so nothing is missed.
    pub fn load(&mut self, start: i64) -> Result<Vec<Entry>, TimerError> {
        if self.buffered.contains_key(&start) {
            self.write()?;
        }
        if !self.files.contains(&start) {
            return Ok(Vec::new());
        }
        let path = self.path(start);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)
                    .map_err(|e| io("reading", &path, e))?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("opening", &path, e)),
        }
        let mut out = Vec::with_capacity(bytes.len() / ENTRY_LEN);
        let mut bad = 0usize;
        for chunk in bytes.chunks_exact(ENTRY_LEN) {
            match Entry::decode(chunk) {
                Ok(e) => out.push(e),
                Err(_) => bad += 1,
            }
        }
        let torn = bytes.len() % ENTRY_LEN;
        if bad > 0 || torn > 0 {
            tracing::warn!(
                file = %path.display(),
                bad_entries = bad,
                torn_bytes = torn,
                "timer bucket has damaged entries; the commit-log rescan restores them"
            );
        }
        Ok(out)
    }

    /// Deletes every bucket file that ends at or before `end` (exclusive bound of fired time).
    pub fn remove_before(&mut self, end: i64) -> Result<usize, TimerError> {
        let gone: Vec<i64> = self
            .files
            .iter()
            .copied()
            .take_while(|s| s.saturating_add(self.width_ms) <= end)
            .collect();
        for start in &gone {
            let path = self.path(*start);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("removing", &path, e)),
            }
            self.files.remove(start);
            self.dirty.remove(start);
            self.dir_dirty = true;
        }
        Ok(gone.len())
    }

    /// How many bucket files exist.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

/// Entries in the bucket files of `dir` whose bucket ends after `cursor`: the delayed messages
/// not yet delivered, estimated from file sizes without reading them. It counts a recall (its
/// tombstone entry and the message it cancels) and a bucket's already fired part until the
/// bucket's file is removed, and entries written again by a rescan after a crash; it never
/// misses a pending message that reached its bucket file. One `stat` per bucket file.
pub fn pending_estimate(dir: &Path, width_ms: i64, cursor: i64) -> u64 {
    let Ok(items) = fs::read_dir(dir) else {
        return 0;
    };
    let mut entries = 0u64;
    for item in items.flatten() {
        let name = item.file_name();
        let Some(start) = name
            .to_str()
            .filter(|n| n.len() == 20 && n.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        if start.saturating_add(width_ms.max(1)) <= cursor {
            continue;
        }
        if let Ok(m) = item.metadata() {
            entries = entries.saturating_add(m.len() / ENTRY_LEN as u64);
        }
    }
    entries
}

/// fsyncs a directory so that created, renamed and removed entries survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), TimerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_estimate_counts_entries_of_buckets_not_yet_past() {
        let dir = tempfile::tempdir().unwrap();
        let write = |start: i64, entries: usize| {
            let name = format!("{start:020}");
            fs::write(dir.path().join(name), vec![0u8; entries * ENTRY_LEN]).unwrap();
        };
        write(0, 3); // ends at 1000: fired once the cursor is there
        write(1000, 2); // holds the cursor: counted
        write(5000, 4);
        fs::write(dir.path().join("checkpoint"), b"not a bucket").unwrap();
        assert_eq!(pending_estimate(dir.path(), 1000, 999), 9);
        assert_eq!(pending_estimate(dir.path(), 1000, 1500), 6);
        assert_eq!(pending_estimate(dir.path(), 1000, 6000), 0);
        assert_eq!(pending_estimate(&dir.path().join("missing"), 1000, 0), 0);
    }
}
