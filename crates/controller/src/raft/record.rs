//! The framing of the Raft log file: each entry is one record
//!
//! ```text
//! [body length: u32 LE][crc32c of body: u32 LE][body: JSON of the openraft entry]
//! ```
//!
//! The checksum lets recovery tell a record cut short by a crash (its tail is missing or
//! garbage, and nothing valid follows) from a damaged one in the middle of the log.

use std::io;

/// Bytes before the body: the length, then the checksum.
pub(crate) const HEADER_LEN: usize = 8;
const LEN_AT: usize = 0;
const CRC_AT: usize = 4;
/// No entry of ours comes near this; a larger length is damage, and bounding it keeps a
/// damaged header from making recovery allocate gigabytes.
pub(crate) const MAX_BODY_LEN: usize = 64 << 20;

/// Why the bytes at some position are not a whole, intact record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadRecord {
    /// The file ends inside the header or the body.
    Incomplete,
    /// A zero length: never written by [`encode`], typically a zero-filled tail.
    ZeroLength,
    /// A length beyond [`MAX_BODY_LEN`].
    TooLong(usize),
    /// The body does not match its checksum.
    CrcMismatch { stored: u32, computed: u32 },
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRecord::Incomplete => write!(f, "record cut short"),
            BadRecord::ZeroLength => write!(f, "record of length 0"),
            BadRecord::TooLong(len) => {
                write!(f, "record length {len} exceeds the maximum {MAX_BODY_LEN}")
            }
            BadRecord::CrcMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// Appends one record holding `body` to `out`.
pub(crate) fn encode(body: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    if body.is_empty() || body.len() > MAX_BODY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a log record body must be 1..={MAX_BODY_LEN} bytes, not {}",
                body.len()
            ),
        ));
    }
    // Lossless: bounded by MAX_BODY_LEN above.
    let len = body.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Reads the record at the start of `buf`: its body and the bytes it spans. On failure also
/// returns the body length its header claims (0 if the header is incomplete).
pub(crate) fn decode(buf: &[u8]) -> Result<(&[u8], usize), (BadRecord, usize)> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Err((BadRecord::Incomplete, 0));
    };
    let len = u32_at(header, LEN_AT) as usize;
    let stored = u32_at(header, CRC_AT);
    if len == 0 {
        return Err((BadRecord::ZeroLength, 0));
    }
    if len > MAX_BODY_LEN {
        return Err((BadRecord::TooLong(len), len));
    }
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Err((BadRecord::Incomplete, len));
    };
    let computed = crc32c::crc32c(body);
    if computed != stored {
        return Err((BadRecord::CrcMismatch { stored, computed }, len));
    }
    Ok((body, HEADER_LEN + len))
}

fn u32_at(header: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&header[at..at + 4]);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_any_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode(b"{\"a\":1}", &mut buf).unwrap();
        assert_eq!(decode(&buf).unwrap(), (&b"{\"a\":1}"[..], buf.len()));
        for i in HEADER_LEN..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(matches!(
                decode(&bad),
                Err((BadRecord::CrcMismatch { .. }, 7))
            ));
        }
    }

    #[test]
    fn short_zero_and_oversized_records_are_named() {
        let mut buf = Vec::new();
        encode(b"xyz", &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]).unwrap_err().0, BadRecord::Incomplete);
        }
        assert_eq!(decode(&[0u8; 16]).unwrap_err().0, BadRecord::ZeroLength);
        let mut huge = vec![0xff; 16];
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err((BadRecord::TooLong(_), _))));
        assert!(encode(b"", &mut Vec::new()).is_err());
    }
}
