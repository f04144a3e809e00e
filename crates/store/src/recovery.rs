//! Commit-log recovery: find the end of the valid log, cut a torn tail, and refuse to open a
//! log that is damaged in the middle.
//!
//! - After a clean shutdown the checkpoint's log end is exact: nothing is scanned.
//! - Otherwise records are validated (magic, length, CRC, and the physical offset stored in the
//!   record equals its position) from the checkpoint's safe point, `min(dispatched, flushed)`,
//!   or from the first segment without a checkpoint. The first invalid position `P` ends the
//!   log, unless a valid record follows anywhere after it: then the middle of the log is bad
//!   and `open` fails with `Corrupt` naming the segment file and the offset inside it. A torn
//!   tail is zeroed (and flushed) and segment files past it are deleted.
//! - One exception keeps a machine crash from looking like corruption: the kernel writes dirty
//!   pages back in no particular order, so after a power loss an unflushed page may be missing
//!   (it reads as zeros: segments are preallocated) while later unflushed pages made it. A bad
//!   record at or past the checkpoint's flushed offset whose bytes include such an all-zero
//!   page is such a hole: the log ends there, and the records after it, never acknowledged
//!   in Sync mode, are dropped. Real damage (non-zero garbage, or anything below the flushed
//!   offset) is still `Corrupt`.
//!
//! The search for "valid data after P" looks at every byte position up to the last non-zero
//! byte of each later region, so it is cheap when the tail is zeros (the kill -9 case).

use crate::allocator::NewSegment;
use crate::checkpoint::Checkpoint;
use crate::commit_log::RecoveredLog;
use crate::error::StoreError;
use crate::mmap::{FileWriter, MappedFile};
use crate::record::{self, Record, FILLER_LEN, FILLER_MAGIC, MESSAGE_MAGIC};
use crate::segment::{list_numbered, Segment};
use std::path::Path;
use std::sync::Arc;

struct Opened {
    base: u64,
    file: Arc<MappedFile>,
    writer: FileWriter,
}

/// What the record at `local` of a segment is, if valid.
enum Found {
    Message {
        size: u64,
        store_ts: i64,
    },
    /// A filler: the segment ends here.
    Filler,
}

fn validate(bytes: &[u8], local: usize, base: u64) -> Option<Found> {
    let rest = bytes.get(local..)?;
    let pos = base + local as u64;
    match record::decode(rest).ok()? {
        Record::Message(v) => {
            let fits = local + v.size as usize + FILLER_LEN <= bytes.len();
            (v.physical_offset == pos && fits).then_some(Found::Message {
                size: u64::from(v.size),
                store_ts: v.store_timestamp_ms,
            })
        }
        Record::Filler {
            size,
            physical_offset,
        } => (physical_offset == pos && local + size as usize == bytes.len())
            .then_some(Found::Filler),
    }
}

fn whole(o: &Opened) -> &[u8] {
    o.writer.read(0, o.file.len()).unwrap_or(&[])
}

/// Index one past the last non-zero byte (page-sized chunks first: tails are mostly zeros).
fn nonzero_end(bytes: &[u8]) -> usize {
    const CHUNK: usize = 4096;
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &bytes[start..end];
        if chunk.iter().fold(0u8, |acc, b| acc | b) != 0 {
            return chunk
                .iter()
                .rposition(|b| *b != 0)
                .map_or(start, |i| start + i + 1);
        }
        end = start;
    }
    0
}

/// First position in `[from, nonzero end)` holding a valid record.
fn find_valid(bytes: &[u8], from: usize, base: u64) -> Option<usize> {
    let end = nonzero_end(bytes);
    let magics = [MESSAGE_MAGIC.to_le_bytes(), FILLER_MAGIC.to_le_bytes()];
    (from..end.saturating_sub(7)).find(|&x| {
        let m = &bytes[x + 4..x + 8];
        (m == magics[0] || m == magics[1]) && validate(bytes, x, base).is_some()
    })
}

/// Opens the segments of `dir` and finds the log end (see the module docs).
pub(crate) fn recover_log(
    dir: &Path,
    segment_size: u64,
    cp: Option<&Checkpoint>,
) -> Result<RecoveredLog, StoreError> {
    let opened = open_segments(dir, segment_size)?;
    let Some(first) = opened.first() else {
        // Empty log: continue at the checkpoint's end, rounded to a segment boundary.
        let end = cp.map_or(0, |c| c.log_end.div_ceil(segment_size) * segment_size);
        return Ok(RecoveredLog {
            segments: Vec::new(),
            active: None,
            end,
            last_store_ts: cp.map_or(0, |c| c.last_store_timestamp_ms),
        });
    };
    let log_min = first.base;
    let log_max = opened.last().map_or(log_min, |o| o.base + segment_size);
    let mut last_ts = cp.map_or(0, |c| c.last_store_timestamp_ms);
    let (end, clean) = match cp {
        Some(c) if c.clean && (log_min..=log_max).contains(&c.log_end) => (c.log_end, true),
        _ => {
            let start = cp
                .map_or(log_min, |c| c.dispatched.min(c.flushed))
                .clamp(log_min, log_max);
            let flushed = cp.map_or(log_min, |c| c.flushed);
            (scan(&opened, start, flushed, &mut last_ts)?, false)
        }
    };
    finish(opened, end, segment_size, last_ts, clean)
}

fn open_segments(dir: &Path, segment_size: u64) -> Result<Vec<Opened>, StoreError> {
    let mut out: Vec<Opened> = Vec::new();
    for (base, path) in list_numbered(dir).map_err(|e| StoreError::io(dir, e))? {
        if base % segment_size != 0 {
            return Err(StoreError::Config {
                reason: format!(
                    "segment {} does not start at a multiple of segment_size {segment_size}; was the directory written with another segment size?",
                    path.display()
                ),
            });
        }
        if let Some(prev) = out.last() {
            if base != prev.base + segment_size {
                return Err(StoreError::corrupt(
                    &path,
                    0,
                    format!("missing segment(s) between {} and {base}", prev.base),
                ));
            }
        }
        let (file, writer) = MappedFile::open(&path, segment_size, true).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                StoreError::Config {
                    reason: format!(
                        "{}: {e}; was it written with another segment_size?",
                        path.display()
                    ),
                }
            } else {
                StoreError::io(&path, e)
            }
        })?;
        out.push(Opened { base, file, writer });
    }
    Ok(out)
}

const PAGE: usize = 4096;

fn all_zero(r: &[u8]) -> bool {
    r.iter().all(|b| *b == 0)
}

/// Do the bytes at `local`, up to the next valid record at `next` (same segment) if any, look
/// like pages that never reached the disk: zeros from `local` to the end of its page, or a
/// whole zero page before `next`?
fn lost_page(bytes: &[u8], local: usize, next: Option<usize>) -> bool {
    let first_end = (local / PAGE + 1) * PAGE;
    if all_zero(&bytes[local..first_end.min(bytes.len())]) {
        return true;
    }
    let Some(next) = next else { return false };
    (first_end..next)
        .step_by(PAGE)
        .any(|p| p + PAGE <= next && all_zero(&bytes[p..p + PAGE]))
}

/// Validates records from `start`; returns the end of the valid log or `Corrupt`. Holes from
/// lost pages (see the module docs) count as a torn tail at or past `flushed`.
fn scan(opened: &[Opened], start: u64, flushed: u64, last_ts: &mut i64) -> Result<u64, StoreError> {
    let Some(first) = opened.first() else {
        return Ok(start);
    };
    let size = first.file.len() as u64;
    let mut i = ((start - first.base) / size) as usize;
    let mut pos = start;
    while let Some(seg) = opened.get(i) {
        let bytes = whole(seg);
        let local = (pos - seg.base) as usize;
        if local >= bytes.len() {
            i += 1;
            continue;
        }
        match validate(bytes, local, seg.base) {
            Some(Found::Message { size, store_ts }) => {
                pos += size;
                *last_ts = store_ts;
            }
            Some(Found::Filler) => {
                pos = seg.base + bytes.len() as u64;
                i += 1;
            }
            None => {
                // The usual end of a log after a crash: zeros. Torn either way, no search.
                if pos >= flushed && lost_page(bytes, local, None) {
                    return Ok(pos);
                }
                let Some((later, x)) = next_valid(opened, i, local) else {
                    return Ok(pos); // torn tail: nothing valid follows
                };
                let same = (later == i).then_some(x);
                if pos >= flushed && lost_page(bytes, local, same) {
                    return Ok(pos); // a hole left by a power loss
                }
                return Err(corrupt_at(opened, i, local, later, x));
            }
        }
    }
    Ok(pos)
}

/// The first valid record after `local` of segment `i`: (segment index, local offset).
fn next_valid(opened: &[Opened], i: usize, local: usize) -> Option<(usize, usize)> {
    let seg = &opened[i];
    find_valid(whole(seg), local + 1, seg.base)
        .map(|x| (i, x))
        .or_else(|| {
            (i + 1..opened.len())
                .find_map(|j| find_valid(whole(&opened[j]), 0, opened[j].base).map(|x| (j, x)))
        })
}

fn corrupt_at(opened: &[Opened], i: usize, local: usize, later: usize, x: usize) -> StoreError {
    let seg = &opened[i];
    let why = match record::decode(&whole(seg)[local..]) {
        Err(e) => e.to_string(),
        Ok(_) => "record does not belong at this position".to_string(),
    };
    StoreError::corrupt(
        seg.file.path(),
        local as u64,
        format!(
            "invalid record at physical offset {} ({why}) followed by a valid record at physical offset {}",
            seg.base + local as u64,
            opened[later].base + x as u64
        ),
    )
}

/// Zeroes everything past `end` (not needed after a clean shutdown: nothing was written
/// there), deletes segment files past the one holding it, and builds the commit log's
/// starting state.
fn finish(
    opened: Vec<Opened>,
    end: u64,
    segment_size: u64,
    last_ts: i64,
    clean: bool,
) -> Result<RecoveredLog, StoreError> {
    let mut segments = Vec::new();
    let mut active = None;
    let mut doomed = Vec::new();
    for mut o in opened {
        let seg_end = o.base + segment_size;
        if seg_end <= end {
            o.writer.publish(o.file.len());
            segments.push(Arc::new(Segment {
                base: o.base,
                file: o.file,
            }));
        } else if o.base <= end {
            let local = (end - o.base) as usize;
            let dirty = if clean { 0 } else { nonzero_end(whole(&o)) };
            if dirty > local {
                o.writer
                    .zero(local, dirty)
                    .and_then(|()| o.file.flush_range(local, dirty - local))
                    .map_err(|e| StoreError::io(o.file.path(), e))?;
            }
            o.writer.publish(local);
            let segment = Arc::new(Segment {
                base: o.base,
                file: o.file,
            });
            segments.push(segment.clone());
            active = Some(NewSegment {
                segment,
                writer: o.writer,
            });
        } else {
            doomed.push(o.file.path().to_path_buf());
        }
    }
    // Newest first: a crash in between must not leave a gap between segments (that would
    // read as damage).
    for path in doomed.iter().rev() {
        std::fs::remove_file(path).map_err(|e| StoreError::io(path, e))?;
    }
    Ok(RecoveredLog {
        segments,
        active,
        end,
        last_store_ts: last_ts,
    })
}
