//! Numbered files: commit-log segments, consume-queue files and index files are all named by
//! the 20-digit zero-padded number of their first byte (log) or first entry (queues).

use crate::error::StoreError;
use crate::mmap::MappedFile;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Width of every numbered file name.
pub const NAME_DIGITS: usize = 20;

/// `n` as a 20-digit zero-padded file name.
pub fn file_name(n: u64) -> String {
    format!("{n:020}")
}

/// The number in a 20-digit file name; `None` for any other name (temp files, strays).
pub fn parse_file_name(name: &str) -> Option<u64> {
    if name.len() != NAME_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The numbered files of `dir`, sorted by number. A missing directory has none.
pub(crate) fn list_numbered(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_file_name) {
            out.push((n, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(n, _)| *n);
    Ok(out)
}

/// fsync of a directory, so that files created or renamed in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// One commit-log segment: the mapped file and the physical offset of its first byte.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub file: Arc<MappedFile>,
}

impl Segment {
    /// Physical offset one past the segment's last byte.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.file.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(0), "00000000000000000000");
        assert_eq!(file_name(1 << 30), "00000000001073741824");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("0000000000000000000"), None);
        assert_eq!(parse_file_name("0000000000000000000x"), None);
        assert_eq!(parse_file_name("00000000000000000000.tmp"), None);
    }

    #[test]
    fn lists_only_numbered_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for n in [300u64, 5, 70] {
            std::fs::write(dir.path().join(file_name(n)), b"").unwrap();
        }
        std::fs::write(dir.path().join("checkpoint.tmp"), b"").unwrap();
        let got: Vec<u64> = list_numbered(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(got, vec![5, 70, 300]);
        assert!(list_numbered(&dir.path().join("missing"))
            .unwrap()
            .is_empty());
    }
}
