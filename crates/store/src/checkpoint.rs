//! The checkpoint file: where recovery may start.
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory) after the consume
//! queues and the index have been flushed up to `dispatched`, so after a crash everything
//! derived from log records below `dispatched` is on disk and recovery replays only the rest.
//!
//! Layout (version 2), 72 bytes, little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | magic [`CHECKPOINT_MAGIC`] |
//! | 4  | 4 | version, 2 |
//! | 8  | 4 | flags: bit 0 = written by a clean shutdown |
//! | 12 | 4 | entries in the active index file at `indexed` |
//! | 16 | 8 | flushed log offset |
//! | 24 | 8 | dispatched log offset (consume queues complete below it) |
//! | 32 | 8 | first offset (file name) of the active index file, `u64::MAX` = none |
//! | 40 | 8 | log end (exact after a clean shutdown) |
//! | 48 | 8 | store timestamp of the newest record, ms |
//! | 56 | 8 | indexed log offset (the index is complete below it; never above `dispatched`) |
//! | 64 | 4 | CRC32C of bytes `[0, 64)` |
//! | 68 | 4 | reserved, 0 |
//!
//! Version 1 (64 bytes, CRC at 56) had no `indexed` field: the index was always complete
//! below `dispatched`. It is still read, with `indexed = dispatched`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use thiserror::Error;

/// Magic of the checkpoint file.
pub const CHECKPOINT_MAGIC: u32 = 0x524C_4350;
/// Size of the checkpoint file.
pub const CHECKPOINT_LEN: usize = 72;
/// Size of a version-1 checkpoint file.
const V1_LEN: usize = 64;
const VERSION: u32 = 2;
const FLAG_CLEAN: u32 = 1;
const NO_INDEX_FILE: u64 = u64::MAX;
/// File name inside the data directory.
pub const FILE_NAME: &str = "checkpoint";

/// Recovery's starting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Written by a clean shutdown: `log_end` is exact and everything is flushed.
    pub clean: bool,
    /// Log bytes below are on disk.
    pub flushed: u64,
    /// Consume queues are complete and on disk for records below; never above `flushed`.
    pub dispatched: u64,
    /// The index is complete and on disk for records below; never above `dispatched`. Below
    /// it only while the index could not keep up (no room for a new index file).
    pub indexed: u64,
    /// The active index file and its entry count at `indexed`.
    pub index_file: Option<u64>,
    /// See `index_file`.
    pub index_entries: u32,
    /// End of the log when written (exact after a clean shutdown).
    pub log_end: u64,
    /// Store timestamp of the newest record, so timestamps keep increasing after a restart.
    pub last_store_timestamp_ms: i64,
}

/// Why checkpoint bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    #[error("checkpoint is {len} bytes, expected {CHECKPOINT_LEN} (or {V1_LEN} for version 1)")]
    BadLength { len: usize },
    #[error("bad checkpoint magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("unsupported checkpoint version {found}")]
    BadVersion { found: u32 },
    #[error("checkpoint crc mismatch")]
    BadCrc,
}

impl Checkpoint {
    /// The 72-byte encoding (always the current version).
    pub fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut b = [0u8; CHECKPOINT_LEN];
        b[0..4].copy_from_slice(&CHECKPOINT_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.clean { FLAG_CLEAN } else { 0 };
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.index_entries.to_le_bytes());
        b[16..24].copy_from_slice(&self.flushed.to_le_bytes());
        b[24..32].copy_from_slice(&self.dispatched.to_le_bytes());
        let idx = self.index_file.unwrap_or(NO_INDEX_FILE);
        b[32..40].copy_from_slice(&idx.to_le_bytes());
        b[40..48].copy_from_slice(&self.log_end.to_le_bytes());
        b[48..56].copy_from_slice(&self.last_store_timestamp_ms.to_le_bytes());
        b[56..64].copy_from_slice(&self.indexed.to_le_bytes());
        let crc = crc32c::crc32c(&b[..64]);
        b[64..68].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates either version; never panics.
    pub fn decode(b: &[u8]) -> Result<Checkpoint, CheckpointError> {
        if b.len() != CHECKPOINT_LEN && b.len() != V1_LEN {
            return Err(CheckpointError::BadLength { len: b.len() });
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if u32_at(0) != CHECKPOINT_MAGIC {
            return Err(CheckpointError::BadMagic { found: u32_at(0) });
        }
        let version = u32_at(4);
        let crc_at = match (version, b.len()) {
            (VERSION, CHECKPOINT_LEN) => 64,
            (1, V1_LEN) => 56,
            _ => return Err(CheckpointError::BadVersion { found: version }),
        };
        if u32_at(crc_at) != crc32c::crc32c(&b[..crc_at]) {
            return Err(CheckpointError::BadCrc);
        }
        let idx = u64_at(32);
        let dispatched = u64_at(24);
        let indexed = if version == 1 { dispatched } else { u64_at(56) };
        Ok(Checkpoint {
            clean: u32_at(8) & FLAG_CLEAN != 0,
            index_entries: u32_at(12),
            flushed: u64_at(16),
            dispatched,
            indexed: indexed.min(dispatched),
            index_file: (idx != NO_INDEX_FILE).then_some(idx),
            log_end: u64_at(40),
            last_store_timestamp_ms: u64_at(48) as i64,
        })
    }
}

/// Reads the checkpoint of `dir`: `Ok(None)` if there is none or it is damaged (recovery
/// then rebuilds everything from the log, which is always safe).
pub(crate) fn read(dir: &Path) -> io::Result<Option<Checkpoint>> {
    let path = dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match Checkpoint::decode(&bytes) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring damaged checkpoint; rebuilding from the log");
            Ok(None)
        }
    }
}

/// Atomically replaces the checkpoint of `dir`.
pub(crate) fn write(dir: &Path, cp: &Checkpoint) -> io::Result<()> {
    write_atomically(dir, FILE_NAME, &cp.encode())
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new content.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            clean: true,
            flushed: 123,
            dispatched: 100,
            indexed: 90,
            index_file: Some(64),
            index_entries: 9,
            log_end: 123,
            last_store_timestamp_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        assert_eq!(Checkpoint::decode(&c.encode()), Ok(c));
        let c = Checkpoint {
            index_file: None,
            clean: false,
            ..sample()
        };
        assert_eq!(Checkpoint::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn damage_is_detected() {
        let b = sample().encode();
        for i in 0..68 {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(Checkpoint::decode(&d).is_err(), "byte {i}");
        }
        assert_eq!(
            Checkpoint::decode(&b[..10]),
            Err(CheckpointError::BadLength { len: 10 })
        );
    }

    #[test]
    fn version_1_is_read_with_the_index_complete_below_dispatched() {
        let c = sample();
        let mut v1 = [0u8; V1_LEN];
        v1.copy_from_slice(&c.encode()[..V1_LEN]);
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&v1[..56]);
        v1[56..60].copy_from_slice(&crc.to_le_bytes());
        v1[60..64].fill(0);
        assert_eq!(
            Checkpoint::decode(&v1),
            Ok(Checkpoint {
                indexed: c.dispatched,
                ..c
            })
        );
        // A version-2 header on 64 bytes (or the reverse) is not a checkpoint.
        let mut wrong = v1;
        wrong[4..8].copy_from_slice(&VERSION.to_le_bytes());
        assert!(Checkpoint::decode(&wrong).is_err());
    }

    #[test]
    fn file_round_trip_and_damaged_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), &sample()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(sample()));
        std::fs::write(dir.path().join(FILE_NAME), b"garbage").unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }
}
