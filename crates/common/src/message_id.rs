//! Message ids in the format the official RocketMQ 5 clients generate (version 1).
//!
//! Layout, 17 bytes big-endian, written as 34 upper-case hex characters:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | version, `0x01` |
//! | 1..7 | lower 6 bytes of a node id (the clients use a MAC address) |
//! | 7..9 | lower 2 bytes of the process id |
//! | 9..13 | seconds since 2021-01-01T00:00:00Z, lower 32 bits |
//! | 13..17 | process-wide sequence number |
//!
//! The broker never parses ids: it stores and echoes whatever the client sent. Only clients
//! (the Rust SDK, the bench tool) create them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2021-01-01T00:00:00Z as seconds since the Unix epoch.
pub const ID_EPOCH_SECS: u64 = 1_609_459_200;
/// Version byte of the ids made here.
pub const ID_VERSION: u8 = 0x01;
/// Length of an id in hex characters.
pub const ID_HEX_LEN: usize = 34;

/// Makes unique message ids; share one per process.
#[derive(Debug)]
pub struct MessageIdGenerator {
    prefix: [u8; 9],
    sequence: AtomicU32,
}

impl MessageIdGenerator {
    /// A generator for the given node id (lower 6 bytes used) and process id (lower 2 bytes).
    pub fn new(node: u64, pid: u32) -> Self {
        let mut prefix = [0u8; 9];
        prefix[0] = ID_VERSION;
        prefix[1..7].copy_from_slice(&node.to_be_bytes()[2..8]);
        prefix[7..9].copy_from_slice(&(pid as u16).to_be_bytes());
        MessageIdGenerator {
            prefix,
            sequence: AtomicU32::new(0),
        }
    }

    /// A generator for this process: the process id, and a random node id (a MAC address
    /// cannot be read portably; a random one keeps ids from different hosts apart just as well).
    pub fn for_this_process() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Self::new(h.finish(), std::process::id())
    }

    /// The next id, stamped with `now`.
    pub fn next_at(&self, now: SystemTime) -> String {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
            .saturating_sub(ID_EPOCH_SECS) as u32;
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 17];
        bytes[..9].copy_from_slice(&self.prefix);
        bytes[9..13].copy_from_slice(&secs.to_be_bytes());
        bytes[13..17].copy_from_slice(&seq.to_be_bytes());
        let mut out = String::with_capacity(ID_HEX_LEN);
        for b in bytes {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }

    /// The next id, stamped with the current time.
    pub fn next_id(&self) -> String {
        self.next_at(SystemTime::now())
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_official_format() {
        let g = MessageIdGenerator::new(0x0242_AC11_0002, 0x1F40);
        let t = UNIX_EPOCH + Duration::from_secs(ID_EPOCH_SECS + 0x0A1B_2C3D);
        assert_eq!(g.next_at(t), "010242AC1100021F400A1B2C3D00000000");
        assert_eq!(g.next_at(t), "010242AC1100021F400A1B2C3D00000001");
    }

    #[test]
    fn ids_are_unique_and_well_formed() {
        let g = MessageIdGenerator::for_this_process();
        let a = g.next_id();
        let b = g.next_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), ID_HEX_LEN);
        assert!(a.starts_with("01"));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    }
}
