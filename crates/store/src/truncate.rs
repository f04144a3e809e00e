//! Cutting the commit log back to an earlier record boundary, on a closed data directory: what
//! a former master does before it follows the new master of its broker group, whose log never
//! had the records this one wrote last (they were not replicated). The new master then ships
//! its own bytes from the cut on, at the same offsets.
//!
//! Only files change here; every derived structure is repaired by the next open:
//!
//! 1. The checkpoint is rewound (dispatched, indexed, flushed and log end at most the cut, and
//!    not clean), so that open trusts nothing at or past the cut: it validates the log from
//!    the checkpoint, cuts consume-queue and index entries at or past its replay start and
//!    rebuilds them from the log.
//! 2. Tombstones of topics deleted above the cut are dropped: those deletions happened after
//!    the log last ended at the cut, in the history being discarded. Such a topic's queue
//!    files are gone, so the checkpoint then sends the replay back to the log start, and the
//!    queues come back as they were at the cut.
//! 3. The cut range of the segment holding the cut is zeroed (segments are preallocated and
//!    zero-filled: recovery ends the log where zeros begin), the page holding the cut first
//!    and durably, then the rest; later segments are deleted, newest first.
//!
//! A crash at any point leaves a directory that opens. Before step 3 the old tail is intact
//! and valid, so open keeps it (under the rewound checkpoint it is merely replayed) and the
//! truncation can run again. Once the first page is on disk, recovery ends the log at the
//! cut: the zeros lie at or past the checkpoint's flushed offset, where they count as a torn
//! tail; the rest of step 3 is what recovery would do anyway. Segments are deleted newest
//! first so the remaining ones are contiguous at every moment.

use crate::checkpoint::{self, Checkpoint};
use crate::commit_log::RecoveredLog;
use crate::config::StoreConfig;
use crate::error::{StoreError, TruncateRefusal};
use crate::open::lock_dir;
use crate::queue_registry::{read_tombstones, write_tombstones, TOMBSTONES_FILE};
use crate::record::{self, Record};
use crate::recovery::recover_log;
use crate::segment::{file_name, list_numbered, sync_dir, Segment};
use rocketlog_common::PhysicalOffset;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What [`truncate_log`] did: the log ended at `from` and now ends at `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// The log end before (after recovery cut a torn tail, if there was one).
    pub from: u64,
    /// The log end now.
    pub to: u64,
    /// Log bytes cut off: `from - to` (0 when `to` was the end already).
    pub bytes: u64,
}

/// The page size recovery assumes when it tells a lost page from damage.
const PAGE: u64 = 4096;
/// Zeros written per call.
const ZERO_CHUNK: u64 = 1 << 20;

/// Cuts the commit log of the closed data directory `config.data_dir` so that it ends at `to`.
///
/// Takes the directory's `LOCK` (`Locked` while a store has it open) and recovers the log end
/// as [`crate::Store::open`] does (cutting a torn tail, as open would). `to` must be a record
/// boundary in `[log start, log end]`: the log end (then nothing changes) or the start of a
/// valid record (message or filler); anything else is refused with
/// [`StoreError::BadTruncation`] and nothing is changed. After the next open, no consume queue,
/// index lookup or log read sees a record at or past `to`, every queue continues after its
/// last remaining entry, and the log continues at `to` with appends or replicated bytes.
pub fn truncate_log(config: &StoreConfig, to: PhysicalOffset) -> Result<Truncated, StoreError> {
    config.validate()?;
    let data_dir = &config.data_dir;
    let _lock = lock_dir(data_dir)?;
    let cp = checkpoint::read(data_dir)
        .map_err(|e| StoreError::io(&data_dir.join(checkpoint::FILE_NAME), e))?;
    let log_dir = data_dir.join("commitlog");
    let rec = recover_log(&log_dir, config.segment_size, cp.as_ref())?;
    let (from, to) = (rec.end, to.0);
    let log_start = rec.segments.first().map_or(from, |s| s.base);
    let base = check_cut(&rec, config.segment_size, to)?;
    // Unmaps every segment: from here on plain file I/O.
    drop(rec);
    let Some(base) = base else {
        return Ok(Truncated { from, to, bytes: 0 });
    };

    rewind_derived(data_dir, cp, to, log_start)?;
    let limit = from.min(base + config.segment_size);
    zero_durably(&log_dir.join(file_name(base)), to - base, limit - base)?;
    delete_after(&log_dir, base)?;
    tracing::info!(
        from,
        to,
        bytes = from - to,
        "truncated the commit log; the next open rebuilds consume queues and index past the cut"
    );
    Ok(Truncated {
        from,
        to,
        bytes: from - to,
    })
}

/// Rewinds the checkpoint so that the next open trusts nothing at or past `to`, and drops the
/// tombstones above `to` (see the module docs), in that order: a crash in between leaves a
/// directory that opens as before.
fn rewind_derived(
    data_dir: &Path,
    cp: Option<Checkpoint>,
    to: u64,
    log_start: u64,
) -> Result<(), StoreError> {
    let mut tombstones = read_tombstones(&data_dir.join(TOMBSTONES_FILE))?;
    let before = tombstones.len();
    tombstones.retain(|_, off| *off <= to);
    let revived = tombstones.len() != before;
    // Without a checkpoint open trusts nothing anyway. With one, it is rewound before the log
    // changes: until then a clean one would make open trust the old end, and zeros below its
    // flushed offset would read as damage.
    if let Some(cp) = cp {
        let replay = if revived { log_start } else { to };
        checkpoint::write(data_dir, &rewound(cp, to, replay))
            .map_err(|e| StoreError::io(&data_dir.join(checkpoint::FILE_NAME), e))?;
    }
    if revived {
        write_tombstones(data_dir, &tombstones)?;
    }
    Ok(())
}

/// Checks that `to` may become the log end. Returns the base of the segment holding it, or
/// `None` if it is the end already.
fn check_cut(rec: &RecoveredLog, segment_size: u64, to: u64) -> Result<Option<u64>, StoreError> {
    let refuse = |why| StoreError::BadTruncation { offset: to, why };
    let end = rec.end;
    let log_start = rec.segments.first().map_or(end, |s| s.base);
    if to > end {
        return Err(refuse(TruncateRefusal::BeyondLogEnd { log_end: end }));
    }
    if to < log_start {
        return Err(refuse(TruncateRefusal::BelowLogStart { log_start }));
    }
    if to == end {
        return Ok(None);
    }
    // Segments are contiguous and `to` lies below the end, so one of them holds it.
    let seg = usize::try_from((to - log_start) / segment_size)
        .ok()
        .and_then(|i| rec.segments.get(i))
        .filter(|s| to < s.end())
        .ok_or(StoreError::OffsetOutOfRange {
            offset: to,
            min: log_start,
            max: end,
        })?;
    let limit = end.min(seg.end());
    // Every segment starts with a record: walk its records up to `to`.
    let mut pos = seg.base;
    while pos < to {
        let next = pos + record_size(seg, pos, limit)?;
        if next > to {
            return Err(refuse(TruncateRefusal::NotRecordStart {
                before: pos,
                after: next,
            }));
        }
        pos = next;
    }
    check_record(seg, to, limit)?;
    Ok(Some(seg.base))
}

/// Size of the record at `pos` of `seg` (a record boundary below `limit`).
fn record_size(seg: &Segment, pos: u64, limit: u64) -> Result<u64, StoreError> {
    let corrupt = |reason: String| StoreError::corrupt(seg.file.path(), pos, reason);
    let head = seg
        .file
        .read((pos - seg.base) as usize, 8)
        .ok_or_else(|| corrupt(format!("record header at {pos} runs past {limit}")))?;
    let (size, _) = record::peek(head).map_err(|e| corrupt(e.to_string()))?;
    let size = u64::from(size);
    if size == 0 || pos + size > limit {
        return Err(corrupt(format!(
            "record of {size} bytes at {pos} runs past the log end {limit}"
        )));
    }
    Ok(size)
}

/// The record at `pos` is whole, CRC-checked and was written at `pos`: the log may end there
/// and continue with another log's bytes. (After a clean shutdown recovery validated nothing.)
fn check_record(seg: &Segment, pos: u64, limit: u64) -> Result<(), StoreError> {
    let corrupt = |reason: String| StoreError::corrupt(seg.file.path(), pos, reason);
    let bytes = seg
        .file
        .read((pos - seg.base) as usize, (limit - pos) as usize)
        .ok_or_else(|| corrupt(format!("bytes from {pos} to {limit} are not readable")))?;
    let written_at = match record::decode(bytes) {
        Ok(Record::Message(v)) => v.physical_offset,
        Ok(Record::Filler {
            physical_offset, ..
        }) => physical_offset,
        Err(e) => return Err(corrupt(format!("record at {pos}: {e}"))),
    };
    if written_at != pos {
        return Err(corrupt(format!(
            "the record at {pos} says it was written at {written_at}"
        )));
    }
    Ok(())
}

/// `cp` with nothing at or past `to` trusted, and the consume queues and index replayed from
/// `replay` (at most `to`) on.
fn rewound(cp: Checkpoint, to: u64, replay: u64) -> Checkpoint {
    let dispatched = cp.dispatched.min(replay);
    Checkpoint {
        // Not clean: open must validate the log from the checkpoint rather than trust its end.
        clean: false,
        flushed: cp.flushed.min(to),
        dispatched,
        indexed: cp.indexed.min(dispatched),
        log_end: to,
        // The index's active file and count are kept: open cuts that file back to the records
        // below `indexed` (see `Index::open`). The newest timestamp is kept too: timestamps
        // only have to keep increasing.
        ..cp
    }
}

/// Zeroes `[from, to)` of the file at `path`: the page holding `from` first, synced, so that
/// the cut is in effect before the rest is written; then the rest, synced.
fn zero_durably(path: &Path, from: u64, to: u64) -> Result<(), StoreError> {
    let io = |e| StoreError::io(path, e);
    let file = OpenOptions::new().write(true).open(path).map_err(io)?;
    let first = to.min((from / PAGE + 1) * PAGE);
    for (a, b) in [(from, first), (first, to)] {
        if a < b {
            write_zeros(&file, a, b).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
    }
    Ok(())
}

fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK.min(to - from) as usize];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(ZERO_CHUNK) as usize;
        file.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Deletes the segment files after the one at `base`, newest first, and syncs the directory.
fn delete_after(log_dir: &Path, base: u64) -> Result<(), StoreError> {
    let listed = list_numbered(log_dir).map_err(|e| StoreError::io(log_dir, e))?;
    for (_, path) in listed.iter().rev().filter(|(b, _)| *b > base) {
        std::fs::remove_file(path).map_err(|e| StoreError::io(path, e))?;
    }
    sync_dir(log_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewinding_trusts_nothing_past_the_cut() {
        let cp = Checkpoint {
            clean: true,
            flushed: 900,
            dispatched: 800,
            indexed: 700,
            index_file: Some(100),
            index_entries: 12,
            log_end: 900,
            last_store_timestamp_ms: 42,
        };
        assert_eq!(
            rewound(cp, 750, 750),
            Checkpoint {
                clean: false,
                flushed: 750,
                dispatched: 750,
                indexed: 700,
                log_end: 750,
                ..cp
            }
        );
        // Replaying from the log start (a topic deleted past the cut comes back).
        let r = rewound(cp, 850, 0);
        assert_eq!(
            (r.dispatched, r.indexed, r.flushed, r.log_end),
            (0, 0, 850, 850)
        );
    }

    #[test]
    fn zeroing_covers_exactly_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let len = 3 * PAGE as usize + 100;
        std::fs::write(&path, vec![0xAB; len]).unwrap();
        zero_durably(&path, 100, 2 * PAGE + 7).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), len, "never truncates the file");
        assert!(bytes[..100].iter().all(|b| *b == 0xAB));
        assert!(bytes[100..2 * PAGE as usize + 7].iter().all(|b| *b == 0));
        assert!(bytes[2 * PAGE as usize + 7..].iter().all(|b| *b == 0xAB));
    }
}
