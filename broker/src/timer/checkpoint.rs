//! The timer checkpoint, `<timer dir>/checkpoint`: how far the timer has indexed the timer topic
//! and fired entries. Written atomically (temporary file, fsync, rename, directory fsync) and
//! only once everything it claims is durable:
//!
//! - every timer record below queue offset `scan_offset` has its entry in a synced bucket file
//!   (or was fired);
//! - every entry with `fire_ms <= cursor_ms` indexed below `scan_offset` was fired, and the
//!   records those firings appended lie below `log_offset`, which was flushed.
//!
//! Restart resumes indexing at `scan_offset` and reads the log from `log_offset` to learn which
//! entries fired after the checkpoint (their appended records name their source), so nothing is
//! fired twice or lost.
//!
//! Layout (little-endian, 40 bytes): magic `RLTM` u32, version u32, scan_offset u64,
//! cursor_ms i64, log_offset u64, reserved u32, CRC32C of bytes 0..36.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::bucket::sync_dir;
use super::TimerError;

const FILE: &str = "checkpoint";
const TMP: &str = "checkpoint.tmp";
const MAGIC: u32 = u32::from_le_bytes(*b"RLTM");
const VERSION: u32 = 1;
const LEN: usize = 40;

/// See the module documentation for what each field promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub scan_offset: u64,
    pub cursor_ms: i64,
    pub log_offset: u64,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.scan_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.cursor_ms.to_le_bytes());
        b[24..32].copy_from_slice(&self.log_offset.to_le_bytes());
        let crc = crc32c::crc32c(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != LEN {
            return None;
        }
        let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let long = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(a)
        };
        if word(0) != MAGIC || word(4) != VERSION || word(36) != crc32c::crc32c(&b[..36]) {
            return None;
        }
        Some(Checkpoint {
            scan_offset: long(8),
            cursor_ms: long(16) as i64,
            log_offset: long(24),
        })
    }

    /// The checkpoint in `dir`: `Ok(None)` if there is none; an error if it is unreadable or
    /// damaged (it is written atomically, so damage is not a crash artefact).
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>, TimerError> {
        let path = dir.join(FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TimerError::Io {
                    what: "reading",
                    path,
                    source,
                })
            }
        };
        Checkpoint::decode(&bytes)
            .map(Some)
            .ok_or(TimerError::BadCheckpoint { path })
    }

    /// Replaces the checkpoint in `dir` atomically and durably.
    pub fn store(&self, dir: &Path) -> Result<(), TimerError> {
        let tmp = dir.join(TMP);
        let io = |what: &'static str, source| TimerError::Io {
            what,
            path: tmp.clone(),
            source,
        };
        let mut f = File::create(&tmp).map_err(|e| io("creating", e))?;
        f.write_all(&self.encode()).map_err(|e| io("writing", e))?;
        f.sync_all().map_err(|e| io("syncing", e))?;
        drop(f);
        fs::rename(&tmp, dir.join(FILE)).map_err(|e| io("renaming", e))?;
        sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let c = Checkpoint {
            scan_offset: 12,
            cursor_ms: 1_700_000_000_000,
            log_offset: 4096,
        };
        assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
        let mut b = c.encode();
        b[9] ^= 1;
        assert_eq!(Checkpoint::decode(&b), None);
        assert_eq!(Checkpoint::decode(&b[..20]), None);
    }

    #[test]
    fn store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
        let c = Checkpoint {
            scan_offset: 3,
            cursor_ms: 5,
            log_offset: 7,
        };
        c.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(c));
        fs::write(dir.path().join(FILE), b"junk").unwrap();
        assert!(Checkpoint::load(dir.path()).is_err());
    }
}
