//! The Raft log and vote on disk, in the member's data directory:
//!
//! - `log`: the entries, one length- and checksum-framed JSON record each, in index order;
//! - `vote.json`, `purged.json`, `committed.json`: small files replaced atomically.
//!
//! Every entry is also kept in memory (the controller's log is small and is purged after each
//! snapshot), so reads never touch the disk. Writes are done on a blocking thread and awaited
//! before the call returns: openraft issues storage writes one at a time, so serializing them
//! this way keeps the required order (a vote is durable before a later append, and so on)
//! without a queue, and a controller writes a handful of entries a second at most.
//!
//! Recovery: a last record cut short or garbled by a crash is cut off with a warning; a
//! damaged record with intact records after it means the file is corrupt, and the member
//! refuses to start rather than silently lose acknowledged entries.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    DefensiveError, Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader,
    StorageError, Violation, Vote,
};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use super::durable::{read_json, remove_stale_tmp, sync_dir, with_path, write_json};
use super::record::{self, BadRecord};
use super::{ControllerError, TypeConfig};

/// The log file's name in the data directory.
pub(crate) const LOG_FILE: &str = "log";
const REWRITE_FILE: &str = "log.rewrite";
const VOTE_FILE: &str = "vote.json";
const PURGED_FILE: &str = "purged.json";
const COMMITTED_FILE: &str = "committed.json";
/// A purge rewrites the file without the purged prefix once that prefix is this large;
/// smaller prefixes stay (they are skipped on open) to spare a rewrite per snapshot.
const REWRITE_PURGED_BYTES: u64 = 64 << 10;

type Entries = BTreeMap<u64, Entry<TypeConfig>>;

/// The Raft log storage of one controller member.
#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    disk: Arc<Mutex<LogFile>>,
    entries: Arc<RwLock<Entries>>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    purged: Option<LogId<u64>>,
}

/// Reads log entries for replication; shares the in-memory index with its [`LogStore`].
#[derive(Debug, Clone)]
pub struct LogReader {
    entries: Arc<RwLock<Entries>>,
}

/// The log file, used by the single writer only.
#[derive(Debug)]
struct LogFile {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    end: u64,
    /// File offset of each live (not purged) entry's record.
    offsets: BTreeMap<u64, u64>,
    /// Set once a write failed: what reached the file is unknown, so nothing more is written
    /// and the member must be restarted (recovery then decides what survived).
    failed: Option<String>,
}

impl LogStore {
    /// Opens (creating it if needed) the log in `dir`, recovering from a torn last record.
    pub fn open(dir: &Path) -> Result<LogStore, ControllerError> {
        fs::create_dir_all(dir).map_err(|source| ControllerError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for name in [VOTE_FILE, PURGED_FILE, COMMITTED_FILE] {
            remove_stale_tmp(dir, name)?;
        }
        remove_stale_tmp(dir, REWRITE_FILE)?;
        let vote: Option<Vote<u64>> = read_json(dir, VOTE_FILE)?;
        let purged: Option<LogId<u64>> = read_json(dir, PURGED_FILE)?;
        let committed: Option<LogId<u64>> = read_json(dir, COMMITTED_FILE)?;
        let (disk, entries) = LogFile::open(dir, purged)?;
        Ok(LogStore {
            dir: dir.to_path_buf(),
            disk: Arc::new(Mutex::new(disk)),
            entries: Arc::new(RwLock::new(entries)),
            vote,
            committed,
            purged,
        })
    }

    /// Whether nothing was ever stored: no vote, no entry, nothing purged. Only such a member
    /// may initialize a cluster.
    pub fn is_fresh(&self) -> bool {
        self.vote.is_none() && self.purged.is_none() && self.entries.read().is_empty()
    }

    /// Runs `f` on the log file on a blocking thread.
    async fn on_disk<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut LogFile) -> io::Result<T> + Send + 'static,
    {
        let disk = Arc::clone(&self.disk);
        tokio::task::spawn_blocking(move || f(&mut disk.lock()))
            .await
            .map_err(|e| io::Error::other(format!("log storage task failed: {e}")))?
    }

    /// Replaces the small file `name` with `value`, durably.
    async fn save_small<T>(&self, name: &'static str, value: T) -> io::Result<()>
    where
        T: Serialize + Send + 'static,
    {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_json(&dir, name, &value))
            .await
            .map_err(|e| io::Error::other(format!("log storage task failed: {e}")))?
    }

    fn last_log_id(&self) -> Option<LogId<u64>> {
        let entries = self.entries.read();
        entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.purged)
    }
}

fn read_range<RB: RangeBounds<u64>>(
    entries: &RwLock<Entries>,
    range: RB,
) -> Vec<Entry<TypeConfig>> {
    entries
        .read()
        .range(range)
        .map(|(_, e)| e.clone())
        .collect()
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        Ok(LogState {
            last_purged_log_id: self.purged,
            last_log_id: self.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            entries: Arc::clone(&self.entries),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.save_small(VOTE_FILE, *vote)
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        if committed == self.committed {
            return Ok(());
        }
        self.save_small(COMMITTED_FILE, committed)
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let mut prev = self.last_log_id();
        let mut batch = Vec::new();
        let mut indexes = Vec::with_capacity(entries.len());
        for e in &entries {
            if prev.is_some_and(|p| p.index + 1 != e.log_id.index) {
                let violation = Violation::LogsNonConsecutive {
                    prev,
                    next: e.log_id,
                };
                callback.log_io_completed(Err(io::Error::other(violation.to_string())));
                return Err(DefensiveError::new(ErrorSubject::Logs, violation).into());
            }
            prev = Some(e.log_id);
            let start = batch.len();
            let encoded = serde_json::to_vec(e)
                .map_err(io::Error::other)
                .and_then(|body| record::encode(&body, &mut batch));
            if let Err(err) = encoded {
                let copy = io::Error::new(err.kind(), err.to_string());
                callback.log_io_completed(Err(copy));
                return Err(StorageError::from_io_error(
                    ErrorSubject::Log(e.log_id),
                    ErrorVerb::Write,
                    err,
                ));
            }
            indexes.push((e.log_id.index, start as u64));
        }
        if let Err(err) = self.on_disk(move |d| d.append(&batch, &indexes)).await {
            let copy = io::Error::new(err.kind(), err.to_string());
            callback.log_io_completed(Err(copy));
            return Err(StorageError::from_io_error(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                err,
            ));
        }
        {
            let mut mem = self.entries.write();
            for e in entries {
                mem.insert(e.log_id.index, e);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let since = log_id.index;
        self.on_disk(move |d| d.truncate(since))
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.entries.write().split_off(&since);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // Record the purge point first: should the rewrite below not happen (a crash), the
        // next open still skips the purged prefix.
        self.save_small(PURGED_FILE, log_id)
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.purged = Some(log_id);
        {
            let mut mem = self.entries.write();
            let kept = mem.split_off(&(log_id.index + 1));
            *mem = kept;
        }
        let upto = log_id.index;
        self.on_disk(move |d| d.purge(upto))
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// What scanning the log file found.
struct Scanned {
    /// Each intact record's offset and entry, in file order.
    records: Vec<(u64, Entry<TypeConfig>)>,
    /// Bytes up to the end of the last intact record.
    valid_len: u64,
}

/// Reads every record of the file at `path`, stopping at a torn tail.
fn scan(path: &Path, bytes: &[u8]) -> Result<Scanned, ControllerError> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        match record::decode(rest) {
            Ok((body, spans)) => {
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(body).map_err(|e| ControllerError::CorruptLog {
                        path: path.to_path_buf(),
                        offset: pos as u64,
                        reason: format!("intact record does not hold a log entry: {e}"),
                    })?;
                records.push((pos as u64, entry));
                pos += spans;
            }
            Err((bad, body_len)) => {
                if is_torn_tail(rest, &bad, body_len) {
                    tracing::warn!(
                        path = %path.display(),
                        offset = pos,
                        dropped_bytes = rest.len(),
                        "cutting off the log's torn last record ({bad})"
                    );
                    break;
                }
                return Err(ControllerError::CorruptLog {
                    path: path.to_path_buf(),
                    offset: pos as u64,
                    reason: format!("{bad}, and more records follow"),
                });
            }
        }
    }
    Ok(Scanned {
        records,
        valid_len: pos as u64,
    })
}

/// Whether a bad record at the start of `rest` is what a crash during the last append leaves:
/// it runs to (or past) the end of the file, or only zeros follow it.
fn is_torn_tail(rest: &[u8], bad: &BadRecord, body_len: usize) -> bool {
    if *bad == BadRecord::Incomplete {
        return true;
    }
    let spans = record::HEADER_LEN.saturating_add(body_len);
    match rest.get(spans..) {
        None | Some([]) => true,
        Some(after) => after.iter().all(|b| *b == 0),
    }
}

impl LogFile {
    fn open(dir: &Path, purged: Option<LogId<u64>>) -> Result<(LogFile, Entries), ControllerError> {
        let path = dir.join(LOG_FILE);
        let io_err = |source| ControllerError::Io {
            path: path.clone(),
            source,
        };
        let existed = path.exists();
        let bytes = if existed {
            fs::read(&path).map_err(io_err)?
        } else {
            Vec::new()
        };
        let scanned = scan(&path, &bytes)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err)?;
        if scanned.valid_len < bytes.len() as u64 {
            file.set_len(scanned.valid_len).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        if !existed {
            sync_dir(dir).map_err(io_err)?;
        }

        let first_live = purged.map_or(0, |p| p.index + 1);
        let mut offsets = BTreeMap::new();
        let mut entries = Entries::new();
        let mut prev: Option<u64> = purged.map(|p| p.index);
        for (offset, entry) in scanned.records {
            let index = entry.log_id.index;
            if index < first_live {
                continue;
            }
            if prev.is_some_and(|p| p + 1 != index) {
                return Err(ControllerError::CorruptLog {
                    path: path.clone(),
                    offset,
                    reason: format!(
                        "entry {index} does not follow entry {}",
                        prev.unwrap_or_default()
                    ),
                });
            }
            prev = Some(index);
            offsets.insert(index, offset);
            entries.insert(index, entry);
        }
        let disk = LogFile {
            dir: dir.to_path_buf(),
            path,
            file,
            end: scanned.valid_len,
            offsets,
            failed: None,
        };
        Ok((disk, entries))
    }

    fn check_usable(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(io::Error::other(format!(
                "{}: not writing after an earlier failure ({why})",
                self.path.display()
            ))),
        }
    }

    /// Runs a write, and refuses every later one if it fails.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut LogFile) -> io::Result<T>) -> io::Result<T> {
        self.check_usable()?;
        let res = f(self);
        if let Err(e) = &res {
            self.failed = Some(e.to_string());
        }
        res
    }

    /// Appends the encoded records `batch` (entry index, offset within the batch) and fsyncs.
    fn append(&mut self, batch: &[u8], indexes: &[(u64, u64)]) -> io::Result<()> {
        self.guarded(|d| {
            d.file.write_all(batch).map_err(|e| with_path(&d.path, e))?;
            d.file.sync_data().map_err(|e| with_path(&d.path, e))?;
            for (index, at) in indexes {
                d.offsets.insert(*index, d.end + at);
            }
            d.end += batch.len() as u64;
            Ok(())
        })
    }

    /// Cuts the file at entry `since`, which goes with everything after it.
    fn truncate(&mut self, since: u64) -> io::Result<()> {
        let Some(&at) = self.offsets.get(&since) else {
            // Nothing at or after `since` is stored (it may lie past the end).
            if self.offsets.range(since..).next().is_none() {
                return Ok(());
            }
            return Err(io::Error::other(format!(
                "{}: no record for entry {since} to truncate at",
                self.path.display()
            )));
        };
        self.guarded(|d| {
            d.file.set_len(at).map_err(|e| with_path(&d.path, e))?;
            d.file.sync_all().map_err(|e| with_path(&d.path, e))?;
            d.end = at;
            d.offsets.split_off(&since);
            Ok(())
        })
    }

    /// Forgets entries up to `upto`, rewriting the file without them once they take up enough
    /// of it.
    fn purge(&mut self, upto: u64) -> io::Result<()> {
        self.offsets = self.offsets.split_off(&(upto + 1));
        let prefix = self.offsets.values().next().copied().unwrap_or(self.end);
        if prefix < REWRITE_PURGED_BYTES {
            return Ok(());
        }
        self.guarded(|d| d.rewrite_from(prefix))
    }

    /// Replaces the file with its bytes from `prefix` on: copy to a new file, fsync, rename.
    fn rewrite_from(&mut self, prefix: u64) -> io::Result<()> {
        let tmp = self.dir.join(REWRITE_FILE);
        let mut src = File::open(&self.path).map_err(|e| with_path(&self.path, e))?;
        src.seek(SeekFrom::Start(prefix))
            .map_err(|e| with_path(&self.path, e))?;
        let mut dst = File::create(&tmp).map_err(|e| with_path(&tmp, e))?;
        io::copy(&mut src, &mut dst).map_err(|e| with_path(&tmp, e))?;
        dst.sync_all().map_err(|e| with_path(&tmp, e))?;
        drop(dst);
        fs::rename(&tmp, &self.path).map_err(|e| with_path(&self.path, e))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| with_path(&self.path, e))?;
        self.end -= prefix;
        for offset in self.offsets.values_mut() {
            *offset -= prefix;
        }
        tracing::debug!(path = %self.path.display(), dropped_bytes = prefix, "rewrote the purged log");
        Ok(())
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
