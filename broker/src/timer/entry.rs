//! One timer entry: a fixed 48-byte record in a bucket file (`bucket.rs`). Entries point at
//! commit-log records; they hold no message data, so the files stay small and can always be
//! rebuilt from the log.
//!
//! Layout (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `fire_ms` i64: when the entry is acted on (the delivery time, or a roll time) |
//! | 8 | 8 | `deliver_ms` i64: when the message becomes visible |
//! | 16 | 8 | `phys` u64: physical offset of the timer record (or of the tombstone) |
//! | 24 | 8 | `origin` u64: physical offset of the first timer record of this message |
//! | 32 | 4 | `size` u32: record size |
//! | 36 | 4 | `kind` u32: 1 schedule, 2 cancel |
//! | 40 | 4 | reserved, 0 |
//! | 44 | 4 | CRC32C of bytes 0..44 |

/// Bytes of one encoded entry.
pub const ENTRY_LEN: usize = 48;
const CRC_AT: usize = 44;

/// What an entry asks the timer to do at `fire_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Deliver the message (or, when `fire_ms < deliver_ms`, re-append its timer record so
    /// that retention never deletes a pending message).
    Schedule,
    /// The message `(deliver_ms, origin)` was recalled.
    Cancel,
}

/// One timer entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub fire_ms: i64,
    pub deliver_ms: i64,
    pub phys: u64,
    pub origin: u64,
    pub size: u32,
    pub kind: EntryKind,
}

/// Why bytes are not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("timer entry needs {ENTRY_LEN} bytes, got {0}")]
    Short(usize),
    #[error("timer entry CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc { stored: u32, computed: u32 },
    #[error("timer entry has unknown kind {0}")]
    Kind(u32),
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

impl Entry {
    /// The identity of the message this entry concerns (recalls name it so).
    pub fn target(&self) -> (i64, u64) {
        (self.deliver_ms, self.origin)
    }

    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..8].copy_from_slice(&self.fire_ms.to_le_bytes());
        b[8..16].copy_from_slice(&self.deliver_ms.to_le_bytes());
        b[16..24].copy_from_slice(&self.phys.to_le_bytes());
        b[24..32].copy_from_slice(&self.origin.to_le_bytes());
        b[32..36].copy_from_slice(&self.size.to_le_bytes());
        let kind: u32 = match self.kind {
            EntryKind::Schedule => 1,
            EntryKind::Cancel => 2,
        };
        b[36..40].copy_from_slice(&kind.to_le_bytes());
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the first [`ENTRY_LEN`] bytes of `b`; never panics.
    pub fn decode(b: &[u8]) -> Result<Entry, EntryError> {
        if b.len() < ENTRY_LEN {
            return Err(EntryError::Short(b.len()));
        }
        let stored = u32_at(b, CRC_AT);
        let computed = crc32c::crc32c(&b[..CRC_AT]);
        if stored != computed {
            return Err(EntryError::Crc { stored, computed });
        }
        let kind = match u32_at(b, 36) {
            1 => EntryKind::Schedule,
            2 => EntryKind::Cancel,
            k => return Err(EntryError::Kind(k)),
        };
        Ok(Entry {
            fire_ms: u64_at(b, 0) as i64,
            deliver_ms: u64_at(b, 8) as i64,
            phys: u64_at(b, 16),
            origin: u64_at(b, 24),
            size: u32_at(b, 32),
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            fire_ms: 1_700_000_000_123,
            deliver_ms: 1_700_000_500_000,
            phys: 42,
            origin: 7,
            size: 300,
            kind: EntryKind::Schedule,
        }
    }

    #[test]
    fn round_trip() {
        for kind in [EntryKind::Schedule, EntryKind::Cancel] {
            let e = Entry { kind, ..sample() };
            assert_eq!(Entry::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn damage_is_detected_never_panics() {
        let b = sample().encode();
        assert_eq!(Entry::decode(&b[..10]), Err(EntryError::Short(10)));
        for i in 0..ENTRY_LEN {
            let mut d = b;
            d[i] ^= 0x40;
            assert!(Entry::decode(&d).is_err(), "flip at byte {i}");
        }
        assert!(Entry::decode(&[0u8; ENTRY_LEN]).is_err());
    }

    /// Smoke fuzzing: random bytes of random lengths never panic the decoders of the timer's
    /// disk and wire formats.
    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = Entry::decode(&bytes);
            let _ = crate::timer::checkpoint::Checkpoint::decode(&bytes);
            let text: String = bytes
                .iter()
                .map(|b| char::from(b"0123456789abcdef|"[usize::from(*b) % 17]))
                .collect();
            let _ = crate::timer::RecallHandle::decode(&text);
            let _ = crate::timer::RecallHandle::decode(&hex::encode(&bytes));
        }
    }
}
