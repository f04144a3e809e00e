//! The transaction checkpoint file: where a rebuild of the transaction table starts reading
//! the half and op queues. 28 bytes, replaced atomically (temporary file, fsync, rename,
//! fsync of the directory):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `RLTXCKP1` |
//! | 8..16 | half-queue offset (u64, big endian) |
//! | 16..24 | op-queue offset (u64, big endian) |
//! | 24..28 | CRC32C of bytes 0..24 (u32, big endian) |
//!
//! A missing file means "from the start of both queues"; a stale one only costs a longer scan.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::TransactionError;
use super::state::Checkpoint;

const MAGIC: &[u8; 8] = b"RLTXCKP1";
const LEN: usize = 28;
/// File name inside the transaction directory.
pub const FILE_NAME: &str = "checkpoint";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TransactionError + '_ {
    move |source| TransactionError::Io {
        path: path.to_owned(),
        source,
    }
}

pub fn encode(c: Checkpoint) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&c.half.to_be_bytes());
    out[16..24].copy_from_slice(&c.op.to_be_bytes());
    let crc = crc32c::crc32c(&out[..24]);
    out[24..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes the file's bytes; never panics.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let Ok(b) = <&[u8; LEN]>::try_from(bytes) else {
        return Err(format!("{} bytes, expected {LEN}", bytes.len()));
    };
    if &b[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[24..]);
    if crc32c::crc32c(&b[..24]) != u32::from_be_bytes(crc) {
        return Err("checksum mismatch".into());
    }
    let mut half = [0u8; 8];
    half.copy_from_slice(&b[8..16]);
    let mut op = [0u8; 8];
    op.copy_from_slice(&b[16..24]);
    Ok(Checkpoint {
        half: u64::from_be_bytes(half),
        op: u64::from_be_bytes(op),
    })
}

/// The checkpoint file of a transaction directory.
#[derive(Debug)]
pub struct CheckpointFile {
    dir: PathBuf,
}

impl CheckpointFile {
    /// Creates `dir` if needed.
    pub fn new(dir: &Path) -> Result<Self, TransactionError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(CheckpointFile {
            dir: dir.to_owned(),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The saved checkpoint; `None` if there is none yet.
    pub fn read(&self) -> Result<Option<Checkpoint>, TransactionError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => decode(&bytes)
                .map(Some)
                .map_err(|reason| TransactionError::Checkpoint { path, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Replaces the saved checkpoint atomically and durably.
    pub fn write(&self, c: Checkpoint) -> Result<(), TransactionError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        {
            let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&encode(c)).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let c = Checkpoint {
            half: 7,
            op: 1 << 40,
        };
        let bytes = encode(c);
        assert_eq!(decode(&bytes), Ok(c));
        for i in 0..LEN {
            let mut bad = bytes;
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped byte {i}");
        }
        assert!(decode(&bytes[..LEN - 1]).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn file_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let f = CheckpointFile::new(&dir.path().join("tx")).unwrap();
        assert_eq!(f.read().unwrap(), None);
        f.write(Checkpoint { half: 1, op: 2 }).unwrap();
        f.write(Checkpoint { half: 3, op: 4 }).unwrap();
        assert_eq!(f.read().unwrap(), Some(Checkpoint { half: 3, op: 4 }));
        fs::write(dir.path().join("tx").join(FILE_NAME), b"junk").unwrap();
        assert!(matches!(f.read(), Err(TransactionError::Checkpoint { .. })));
    }
}
