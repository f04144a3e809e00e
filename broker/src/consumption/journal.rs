//! The consumption state journal: an append-only file of state changes, replayed over the last
//! snapshot on open, with group commit for the changes that must be durable before they are
//! answered (acks, invisible-duration changes, dead-letter moves, resets).
//!
//! Files are `journal.<generation, 20 digits>` in the state directory; a snapshot names the
//! generation from which replay starts (see `snapshot.rs`).
//!
//! Frame layout (big-endian): `len u32 | crc32c(payload) u32 | payload[len]`. Payload:
//! `kind u8 | group str | topic str | queue_id u32 | offset u64` then, for `Deliver`,
//! `seq u64 | attempt u32 | deadline_ms i64 | message_group opt-str`, and for `FinishRange`
//! (whose `offset` is the range's start) `end u64` (`str` = u32 length + UTF-8; `opt-str` =
//! presence byte + str). Kinds are only ever added: a journal written before `FinishRange`
//! existed reads the same. A frame that is cut short or fails its CRC ends the
//! replay of that file (a torn tail: it was never acknowledged).
//!
//! A failed write or fsync (a full disk, an I/O error) makes the journal refuse appends: after
//! it nothing tells what reached the disk. The engine repairs it without a restart once it can
//! write again ([`Journal::reopen`], a snapshot of the whole state, [`Journal::repaired`]);
//! until then every state change fails with a retriable error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::codec::{DecodeError, Reader, Writer};
use super::error::ConsumeError;

const KIND_DELIVER: u8 = 1;
const KIND_FINISH: u8 = 2;
const KIND_RESET: u8 = 3;
const KIND_FINISH_RANGE: u8 = 4;
const FRAME_HEADER: usize = 8;
/// No record comes near this; a larger length is corruption.
const MAX_PAYLOAD: usize = 1 << 20;
const FILE_PREFIX: &str = "journal.";
/// Least time between two repair attempts of a failed journal.
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(1);

/// (consumer group, topic): the unit of consumption state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    pub group: String,
    pub topic: String,
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The offset is in flight under `seq` until `deadline_ms` (a delivery, a redelivery or a
    /// new invisible duration). Ignored on replay if the offset is finished by then.
    Deliver {
        key: StateKey,
        queue_id: u32,
        offset: u64,
        seq: u64,
        attempt: u32,
        deadline_ms: i64,
        message_group: Option<String>,
    },
    /// The offset is finished (acked or dead-lettered).
    Finish {
        key: StateKey,
        queue_id: u32,
        offset: u64,
    },
    /// The queue restarts at `offset` with nothing in flight (first use, or reset by time).
    Reset {
        key: StateKey,
        queue_id: u32,
        offset: u64,
    },
    /// Every offset of `[start, end)` is finished, in flight or not (acks made on another
    /// broker, merged in bulk: one record instead of one `Finish` per offset).
    FinishRange {
        key: StateKey,
        queue_id: u32,
        start: u64,
        end: u64,
    },
}

impl Record {
    pub fn key(&self) -> &StateKey {
        match self {
            Record::Deliver { key, .. }
            | Record::Finish { key, .. }
            | Record::Reset { key, .. }
            | Record::FinishRange { key, .. } => key,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer::default();
        let (kind, key, queue_id, offset) = match self {
            Record::Deliver {
                key,
                queue_id,
                offset,
                ..
            } => (KIND_DELIVER, key, queue_id, offset),
            Record::Finish {
                key,
                queue_id,
                offset,
            } => (KIND_FINISH, key, queue_id, offset),
            Record::Reset {
                key,
                queue_id,
                offset,
            } => (KIND_RESET, key, queue_id, offset),
            Record::FinishRange {
                key,
                queue_id,
                start,
                ..
            } => (KIND_FINISH_RANGE, key, queue_id, start),
        };
        w.u8(kind);
        w.str(&key.group);
        w.str(&key.topic);
        w.u32(*queue_id);
        w.u64(*offset);
        if let Record::Deliver {
            seq,
            attempt,
            deadline_ms,
            message_group,
            ..
        } = self
        {
            w.u64(*seq);
            w.u32(*attempt);
            w.i64(*deadline_ms);
            w.opt_str(message_group.as_deref());
        }
        if let Record::FinishRange { end, .. } = self {
            w.u64(*end);
        }
        let payload = w.buf;
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        out.extend_from_slice(&payload);
    }

    fn decode_payload(payload: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader::new(payload);
        let kind = r.u8()?;
        let key = StateKey {
            group: r.str()?,
            topic: r.str()?,
        };
        let queue_id = r.u32()?;
        let offset = r.u64()?;
        let rec = match kind {
            KIND_DELIVER => Record::Deliver {
                key,
                queue_id,
                offset,
                seq: r.u64()?,
                attempt: r.u32()?,
                deadline_ms: r.i64()?,
                message_group: r.opt_str()?,
            },
            KIND_FINISH => Record::Finish {
                key,
                queue_id,
                offset,
            },
            KIND_RESET => Record::Reset {
                key,
                queue_id,
                offset,
            },
            KIND_FINISH_RANGE => Record::FinishRange {
                key,
                queue_id,
                start: offset,
                end: r.u64()?,
            },
            _ => return Err(DecodeError("unknown record kind")),
        };
        if r.remaining() != 0 {
            return Err(DecodeError("trailing bytes in record"));
        }
        Ok(rec)
    }
}

/// Encodes records as consecutive frames.
pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.encode_into(&mut out);
    }
    out
}

/// What replaying one journal file found.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<Record>,
    /// Bytes of valid frames from the start.
    pub valid_len: usize,
    /// Why decoding stopped before the end, if it did.
    pub stopped: Option<&'static str>,
}

/// Decodes frames until the end or the first bad frame; never panics.
pub fn decode(bytes: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < FRAME_HEADER {
            out.stopped = Some("truncated frame header");
            break;
        }
        let mut r = Reader::new(rest);
        let (len, crc) = match (r.u32(), r.u32()) {
            (Ok(l), Ok(c)) => (l as usize, c),
            _ => {
                out.stopped = Some("truncated frame header");
                break;
            }
        };
        if len > MAX_PAYLOAD {
            out.stopped = Some("frame length out of range");
            break;
        }
        let Ok(payload) = r.bytes(len) else {
            out.stopped = Some("truncated frame");
            break;
        };
        if crc32c::crc32c(payload) != crc {
            out.stopped = Some("frame checksum mismatch");
            break;
        }
        match Record::decode_payload(payload) {
            Ok(rec) => out.records.push(rec),
            Err(DecodeError(reason)) => {
                out.stopped = Some(reason);
                break;
            }
        }
        pos += FRAME_HEADER + len;
        out.valid_len = pos;
    }
    out
}

/// Path of journal generation `gen` in `dir`.
pub fn journal_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{gen:020}"))
}

/// The journal files in `dir`, by ascending generation.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, ConsumeError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| ConsumeError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ConsumeError::io(dir, e))?;
        let name = entry.file_name();
        let Some(gen) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_PREFIX))
            .and_then(|g| g.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((gen, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Fsyncs a directory so that file creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), ConsumeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ConsumeError::io(dir, e))
}

#[derive(Debug)]
struct Active {
    file: Arc<File>,
    path: PathBuf,
    gen: u64,
    /// Bytes written over the journal's lifetime (all generations): the group-commit ticket.
    written: u64,
    gen_bytes: u64,
    failed: Option<String>,
}

/// The open journal: appends are serialized by a short lock; `sync` is group commit (the first
/// waiter fsyncs for everyone who wrote before it started).
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    active: Mutex<Active>,
    synced: AtomicU64,
    sync_lock: Mutex<()>,
    /// `false`: [`Journal::sync`] does not fsync. The records are already written (in the page
    /// cache), so they survive a crash of the process, only not of the machine: the guarantee
    /// of the broker's Async flush mode, which this follows.
    fsync: bool,
    /// While failed: when the next repair attempt may start.
    next_repair: Mutex<Option<Instant>>,
}

fn create(dir: &Path, gen: u64) -> Result<(File, PathBuf), ConsumeError> {
    let path = journal_path(dir, gen);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| ConsumeError::io(&path, e))?;
    sync_dir(dir)?;
    Ok((file, path))
}

impl Journal {
    /// Starts a new, empty generation `gen` in `dir` (older generations are left for the caller
    /// to delete once a snapshot covers them).
    pub fn create(dir: &Path, gen: u64, fsync: bool) -> Result<Journal, ConsumeError> {
        let (file, path) = create(dir, gen)?;
        Ok(Journal {
            dir: dir.to_owned(),
            active: Mutex::new(Active {
                file: Arc::new(file),
                path,
                gen,
                written: 0,
                gen_bytes: 0,
                failed: None,
            }),
            synced: AtomicU64::new(0),
            sync_lock: Mutex::new(()),
            fsync,
            next_repair: Mutex::new(None),
        })
    }

    fn failed(reason: &str) -> ConsumeError {
        ConsumeError::JournalFailed {
            reason: reason.to_owned(),
        }
    }

    /// Marks the journal failed; only the first failure is logged (not every refused call).
    fn fail(&self, a: &mut Active, reason: String) {
        if a.failed.is_none() {
            tracing::warn!(
                error = %reason,
                "consumption state journal failed; state changes are refused until it can \
                 be written again"
            );
        }
        a.failed = Some(reason);
    }

    /// `Err(JournalFailed)` while an earlier write or fsync failure is not repaired.
    pub fn check(&self) -> Result<(), ConsumeError> {
        match &self.active.lock().failed {
            Some(reason) => Err(Self::failed(reason)),
            None => Ok(()),
        }
    }

    /// Whether the caller may start a repair now: true at most once per [`REPAIR_INTERVAL`].
    pub fn claim_repair(&self) -> bool {
        let mut next = self.next_repair.lock();
        let now = Instant::now();
        if next.is_some_and(|at| now < at) {
            return false;
        }
        *next = Some(now + REPAIR_INTERVAL);
        true
    }

    /// First step of a repair: switches to a new, empty generation and returns it. The journal
    /// stays failed (appends refused) until [`repaired`](Self::repaired); the caller writes a
    /// snapshot naming the new generation in between. The failed generation is not fsynced:
    /// that snapshot supersedes it.
    pub fn reopen(&self) -> Result<u64, ConsumeError> {
        let mut a = self.active.lock();
        let gen = a.gen + 1;
        let (file, path) = create(&self.dir, gen)?;
        a.file = Arc::new(file);
        a.path = path;
        a.gen = gen;
        a.gen_bytes = 0;
        Ok(gen)
    }

    /// Last step of a repair: a snapshot holding every change made so far is on disk, so
    /// everything written up to now counts as durable and appends are accepted again.
    pub fn repaired(&self) {
        let mut a = self.active.lock();
        a.failed = None;
        self.synced.fetch_max(a.written, Ordering::AcqRel);
        *self.next_repair.lock() = None;
    }

    /// Writes the records (one `write`, no fsync) and returns the ticket to pass to
    /// [`sync`](Self::sync) to make them durable.
    pub fn append(&self, records: &[Record]) -> Result<u64, ConsumeError> {
        let mut a = self.active.lock();
        if let Some(reason) = &a.failed {
            return Err(Self::failed(reason));
        }
        if records.is_empty() {
            return Ok(a.written);
        }
        let bytes = encode(records);
        if let Err(e) = (&*a.file).write_all(&bytes) {
            let reason = format!("write to {}: {e}", a.path.display());
            self.fail(&mut a, reason.clone());
            return Err(Self::failed(&reason));
        }
        a.written += bytes.len() as u64;
        a.gen_bytes += bytes.len() as u64;
        Ok(a.written)
    }

    /// Returns once everything up to `ticket` is on disk. A failed fsync fails this and every
    /// later call: the journal cannot tell what reached the disk.
    pub fn sync(&self, ticket: u64) -> Result<(), ConsumeError> {
        if self.synced.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        if !self.fsync {
            // `append` wrote the records before handing out the ticket (a failed write was
            // reported there and gave no ticket): nothing left to do, no lock to take.
            return Ok(());
        }
        let _leader = self.sync_lock.lock();
        if self.synced.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let (file, path, upto) = {
            let a = self.active.lock();
            if let Some(reason) = &a.failed {
                return Err(Self::failed(reason));
            }
            (Arc::clone(&a.file), a.path.clone(), a.written)
        };
        // A rotation between taking the file and now fsyncs the old generation itself and
        // publishes that through `synced`, so fsyncing the file taken here is enough.
        if let Err(e) = file.sync_data() {
            let reason = format!("fsync of {}: {e}", path.display());
            self.fail(&mut self.active.lock(), reason.clone());
            return Err(Self::failed(&reason));
        }
        self.synced.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Makes everything written so far durable.
    #[cfg(test)]
    pub fn sync_all(&self) -> Result<(), ConsumeError> {
        let ticket = self.active.lock().written;
        self.sync(ticket)
    }

    /// Fsyncs the current generation and switches appends to generation + 1, returning the
    /// new generation. Records appended before this call are in the old generation.
    pub fn rotate(&self) -> Result<u64, ConsumeError> {
        let mut a = self.active.lock();
        if let Some(reason) = &a.failed {
            return Err(Self::failed(reason));
        }
        if let Err(e) = a.file.sync_data() {
            let reason = format!("fsync of {}: {e}", a.path.display());
            self.fail(&mut a, reason.clone());
            return Err(Self::failed(&reason));
        }
        self.synced.fetch_max(a.written, Ordering::AcqRel);
        let gen = a.gen + 1;
        let (file, path) = create(&self.dir, gen)?;
        a.file = Arc::new(file);
        a.path = path;
        a.gen = gen;
        a.gen_bytes = 0;
        Ok(gen)
    }

    /// Bytes in the current generation (drives snapshots).
    pub fn gen_bytes(&self) -> u64 {
        self.active.lock().gen_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StateKey {
        StateKey {
            group: "g".into(),
            topic: "t".into(),
        }
    }

    fn samples() -> Vec<Record> {
        vec![
            Record::Reset {
                key: key(),
                queue_id: 0,
                offset: 0,
            },
            Record::Deliver {
                key: key(),
                queue_id: 3,
                offset: 9,
                seq: 77,
                attempt: 2,
                deadline_ms: 1_700_000_000_000,
                message_group: Some("order-1".into()),
            },
            Record::Deliver {
                key: key(),
                queue_id: 3,
                offset: 10,
                seq: 78,
                attempt: 1,
                deadline_ms: -1,
                message_group: None,
            },
            Record::Finish {
                key: key(),
                queue_id: 3,
                offset: 9,
            },
            Record::FinishRange {
                key: key(),
                queue_id: 3,
                start: 10,
                end: 1 << 40,
            },
        ]
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&samples());
        let d = decode(&bytes);
        assert_eq!(d.records, samples());
        assert_eq!(d.valid_len, bytes.len());
        assert_eq!(d.stopped, None);
    }

    #[test]
    fn torn_tail_stops_cleanly() {
        let bytes = encode(&samples());
        let first_len = encode(&samples()[..1]).len();
        for cut in 0..bytes.len() {
            let d = decode(&bytes[..cut]);
            assert!(d.valid_len <= cut);
            assert_eq!(d.records[..], samples()[..d.records.len()]);
            if cut >= first_len {
                assert!(!d.records.is_empty());
            }
        }
    }

    #[test]
    fn flipped_bytes_are_detected() {
        let bytes = encode(&samples());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            let d = decode(&b);
            // Nothing decoded may differ from what was written.
            assert_eq!(d.records[..], samples()[..d.records.len()], "flip at {i}");
            assert!(d.records.len() < samples().len(), "flip at {i} undetected");
        }
    }

    #[test]
    fn append_sync_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), 1, true).unwrap();
        let t1 = j.append(&samples()[..2]).unwrap();
        j.sync(t1).unwrap();
        let gen = j.rotate().unwrap();
        assert_eq!(gen, 2);
        let t2 = j.append(&samples()[2..]).unwrap();
        assert!(t2 > t1);
        j.sync(t2).unwrap();
        let files = list(dir.path()).unwrap();
        assert_eq!(
            files.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let first = decode(&std::fs::read(&files[0].1).unwrap());
        let second = decode(&std::fs::read(&files[1].1).unwrap());
        assert_eq!(first.records, samples()[..2]);
        assert_eq!(second.records, samples()[2..]);
    }
}
