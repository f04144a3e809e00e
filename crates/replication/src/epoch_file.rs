//! The epoch history on disk, in the file `epochs` beside the commit log.
//!
//! # Format
//!
//! ASCII text, every line ended by one line feed (`0x0A`), no other whitespace:
//!
//! 1. the header `rocketlog-epochs v1`;
//! 2. one line per entry, oldest first: the epoch and the start offset, each in decimal (digits
//!    `0`-`9` only, at most 20 of them, no sign), separated by one space (`0x20`), e.g.
//!    `3 1048576`;
//! 3. the trailer `crc32c ` followed by exactly 8 lowercase hexadecimal digits: the CRC-32C
//!    (Castagnoli) of every byte of the file before the trailer, i.e. from the `r` of the
//!    header through the line feed ending the last entry.
//!
//! An empty history is the header and the trailer alone. Text, so an operator can read it with
//! `cat`; the trailer, so a torn or damaged file is noticed rather than silently taken for a
//! shorter history (which would make a replica trust bytes it must not).
//!
//! # Durability
//!
//! Every change writes the whole file to `epochs.tmp`, fsyncs it, renames it over `epochs` and
//! fsyncs the directory: after a crash the file is the old history or the new one, never a mix.
//! A stale `epochs.tmp` left by a crash is never read, and is overwritten by the next change.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::epochs::{EpochEntry, EpochError, EpochHistory};

const HEADER: &str = "rocketlog-epochs v1";
const TRAILER: &str = "crc32c ";
const TMP_NAME: &str = "epochs.tmp";
/// How much of a damaged line an error quotes: enough to recognise it, not a whole file.
const QUOTE_MAX: usize = 48;

/// An [`EpochHistory`] kept in `dir/epochs`.
#[derive(Debug)]
pub struct EpochFile {
    path: PathBuf,
    history: EpochHistory,
}

/// Why the epoch file could not be read or changed.
#[derive(Debug, Error)]
pub enum EpochFileError {
    /// An I/O operation on a file of the epoch history failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation, e.g. "writing".
        what: &'static str,
        /// The file or directory it was done on.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The file exists but does not hold a valid history.
    #[error("{} is damaged at line {line}: {problem}", path.display())]
    Damaged {
        /// The epoch file.
        path: PathBuf,
        /// 1-based line where the problem was found.
        line: usize,
        /// What is wrong there.
        problem: Damage,
    },
    /// The change would break the ordering of the history; nothing was written.
    #[error(transparent)]
    Rejected(#[from] EpochError),
}

/// What is wrong with a damaged epoch file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Damage {
    /// The file has no bytes at all.
    #[error("the file is empty")]
    Empty,
    /// The first line is not the header this version writes.
    #[error("expected the header `{HEADER}`, found {found:?}")]
    BadHeader {
        /// The start of the line found.
        found: String,
    },
    /// A line between the header and the trailer is not an entry.
    #[error("expected `<epoch> <start offset>` in decimal, found {found:?}")]
    BadEntry {
        /// The start of the line found.
        found: String,
    },
    /// The `crc32c` trailer does not have 8 lowercase hex digits.
    #[error("expected `{TRAILER}<8 hex digits>`, found {found:?}")]
    BadTrailer {
        /// The start of the line found.
        found: String,
    },
    /// The file ends without a trailer: it was cut short.
    #[error("the `{TRAILER}` trailer is missing: the file was cut short")]
    MissingTrailer,
    /// The last line has no line feed: the file was cut short.
    #[error("the last line has no line feed: the file was cut short")]
    Unterminated,
    /// Lines follow the trailer.
    #[error("data after the `{TRAILER}` trailer")]
    AfterTrailer,
    /// The bytes before the trailer are not those the checksum was computed over.
    #[error("checksum mismatch: the trailer says {stored:08x}, the contents give {computed:08x}")]
    ChecksumMismatch {
        /// The checksum in the trailer.
        stored: u32,
        /// The checksum of the bytes before it.
        computed: u32,
    },
    /// The checksum matches but the entries are out of order: written by a faulty writer.
    #[error("{0}")]
    OutOfOrder(EpochError),
}

impl EpochFile {
    /// Name of the file inside the directory given to [`EpochFile::open`].
    pub const FILE_NAME: &'static str = "epochs";

    /// Opens `dir/epochs`; a missing file is an empty history. A damaged file is an error
    /// naming the path and the line, never read as a shorter history.
    pub fn open(dir: &Path) -> Result<EpochFile, EpochFileError> {
        let path = dir.join(Self::FILE_NAME);
        let history = match fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|(line, problem)| EpochFileError::Damaged {
                path: path.clone(),
                line,
                problem,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => EpochHistory::new(),
            Err(source) => {
                return Err(EpochFileError::Io {
                    what: "reading",
                    path,
                    source,
                })
            }
        };
        Ok(EpochFile { path, history })
    }

    /// The history as last persisted.
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// Path of the epoch file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`EpochHistory::begin`], then persists the history durably. On any error the history
    /// in memory is unchanged. After an I/O error the file holds the old history or, if only
    /// the final directory sync failed, possibly the new one; treat it as fatal for the role
    /// change being made.
    pub fn begin(&mut self, epoch: u64, start_offset: u64) -> Result<(), EpochFileError> {
        let mut next = self.history.clone();
        next.begin(epoch, start_offset)?;
        self.replace(next)
    }

    /// [`EpochHistory::truncate_to`], then persists the history durably, with the same
    /// guarantees as [`EpochFile::begin`]. Writes nothing if no entry changes.
    pub fn truncate_to(&mut self, offset: u64) -> Result<(), EpochFileError> {
        let mut next = self.history.clone();
        next.truncate_to(offset);
        if next == self.history {
            return Ok(());
        }
        self.replace(next)
    }

    /// Replaces the whole history with `history` (the master's, once it admitted this log as
    /// a prefix of its own), durably. Writes nothing if they are equal.
    pub fn adopt(&mut self, history: EpochHistory) -> Result<(), EpochFileError> {
        if history == self.history {
            return Ok(());
        }
        self.replace(history)
    }

    fn replace(&mut self, next: EpochHistory) -> Result<(), EpochFileError> {
        persist(&self.path, &encode(&next))?;
        self.history = next;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically and durably: temporary file, fsync, rename, dir fsync.
fn persist(path: &Path, bytes: &[u8]) -> Result<(), EpochFileError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let tmp = dir.join(TMP_NAME);
    if let Err(e) = write_synced(&tmp, bytes) {
        // Best effort: a leftover is harmless (never read), just untidy.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(io_error("renaming over `epochs`", &tmp))?;
    // The rename lives in the directory: without this a crash could bring back the old file.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing directory", dir))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), EpochFileError> {
    let mut file = File::create(path).map_err(io_error("creating", path))?;
    file.write_all(bytes).map_err(io_error("writing", path))?;
    file.sync_all().map_err(io_error("syncing", path))
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EpochFileError {
    let path = path.to_path_buf();
    move |source| EpochFileError::Io { what, path, source }
}

fn encode(history: &EpochHistory) -> Vec<u8> {
    let mut text = format!("{HEADER}\n");
    for entry in history.entries() {
        text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
    }
    let crc = crc32c::crc32c(text.as_bytes());
    text.push_str(&format!("{TRAILER}{crc:08x}\n"));
    text.into_bytes()
}

/// Parses a whole file; an error carries the 1-based line it was found on.
fn decode(bytes: &[u8]) -> Result<EpochHistory, (usize, Damage)> {
    if bytes.is_empty() {
        return Err((1, Damage::Empty));
    }
    let Some(body) = bytes.strip_suffix(b"\n") else {
        let lines = bytes.split(|&b| b == b'\n').count();
        return Err((lines, Damage::Unterminated));
    };
    let mut lines = body
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l));
    let mut checked_len = 0;
    let mut entries = Vec::new();

    let (_, header) = lines.next().unwrap_or((1, &[]));
    if header != HEADER.as_bytes() {
        return Err((
            1,
            Damage::BadHeader {
                found: quote(header),
            },
        ));
    }
    checked_len += header.len() + 1;

    for (line, text) in lines.by_ref() {
        if let Some(hex) = text.strip_prefix(TRAILER.as_bytes()) {
            let stored =
                parse_crc(hex).ok_or_else(|| (line, Damage::BadTrailer { found: quote(text) }))?;
            let computed = crc32c::crc32c(&bytes[..checked_len]);
            if stored != computed {
                return Err((line, Damage::ChecksumMismatch { stored, computed }));
            }
            return match lines.next() {
                Some((line, _)) => Err((line, Damage::AfterTrailer)),
                None => build(entries),
            };
        }
        let entry =
            parse_entry(text).ok_or_else(|| (line, Damage::BadEntry { found: quote(text) }))?;
        entries.push((line, entry));
        checked_len += text.len() + 1;
    }
    let next_line = entries.last().map_or(2, |&(line, _)| line + 1);
    Err((next_line, Damage::MissingTrailer))
}

/// The history of entries whose checksum already matched, naming the line of any disorder.
fn build(entries: Vec<(usize, EpochEntry)>) -> Result<EpochHistory, (usize, Damage)> {
    let mut history = EpochHistory::new();
    for (line, entry) in entries {
        history
            .begin(entry.epoch, entry.start_offset)
            .map_err(|e| (line, Damage::OutOfOrder(e)))?;
    }
    Ok(history)
}

fn parse_entry(text: &[u8]) -> Option<EpochEntry> {
    let space = text.iter().position(|&b| b == b' ')?;
    let (epoch, rest) = text.split_at(space);
    Some(EpochEntry {
        epoch: parse_decimal(epoch)?,
        start_offset: parse_decimal(rest.get(1..)?)?,
    })
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    // u64's own parser also takes a leading `+`; the format has digits only.
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn parse_crc(hex: &[u8]) -> Option<u32> {
    let lowercase_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if hex.len() != 8 || !hex.iter().all(lowercase_hex) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

fn quote(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    match text.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_bytes(dir: &Path) -> Vec<u8> {
        fs::read(dir.join(EpochFile::FILE_NAME)).expect("epoch file exists")
    }

    fn with_trailer(body: &str) -> Vec<u8> {
        format!("{body}crc32c {:08x}\n", crc32c::crc32c(body.as_bytes())).into_bytes()
    }

    #[test]
    fn missing_file_is_an_empty_history() {
        let dir = tempfile::tempdir().unwrap();
        let file = EpochFile::open(dir.path()).unwrap();
        assert_eq!(file.history(), &EpochHistory::new());
        assert_eq!(file.path(), dir.path().join("epochs"));
        assert!(!file.path().exists(), "opening writes nothing");
    }

    #[test]
    fn round_trip_in_the_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = EpochFile::open(dir.path()).unwrap();
        file.begin(1, 0).unwrap();
        file.begin(2, 1_048_576).unwrap();
        file.begin(u64::MAX, u64::MAX).unwrap();
        assert_eq!(
            file_bytes(dir.path()),
            with_trailer(&format!(
                "rocketlog-epochs v1\n1 0\n2 1048576\n{0} {0}\n",
                u64::MAX
            ))
        );
        let reopened = EpochFile::open(dir.path()).unwrap();
        assert_eq!(reopened.history(), file.history());
        assert_eq!(reopened.history().entries().len(), 3);

        file.truncate_to(10).unwrap();
        let reopened = EpochFile::open(dir.path()).unwrap();
        assert_eq!(
            reopened.history().entries(),
            [EpochEntry {
                epoch: 1,
                start_offset: 0
            }]
        );
        assert!(!dir.path().join(TMP_NAME).exists());

        file.truncate_to(0).unwrap();
        file.truncate_to(0).unwrap();
        assert_eq!(
            file_bytes(dir.path()),
            with_trailer("rocketlog-epochs v1\n1 0\n")
        );
    }

    #[test]
    fn empty_history_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("epochs"),
            with_trailer("rocketlog-epochs v1\n"),
        )
        .unwrap();
        assert_eq!(
            EpochFile::open(dir.path()).unwrap().history(),
            &EpochHistory::new()
        );
    }

    #[test]
    fn damaged_files_are_rejected_with_line_and_reason() {
        let good = with_trailer("rocketlog-epochs v1\n1 0\n2 100\n");
        let good_text = String::from_utf8(good.clone()).unwrap();
        let flipped = good_text.replace("2 100", "2 101").into_bytes();
        let cut = good[..good.len() - 4].to_vec();
        let cases: Vec<(&str, Vec<u8>, usize, Damage)> = vec![
            ("empty", vec![], 1, Damage::Empty),
            ("cut inside the trailer", cut, 4, Damage::Unterminated),
            (
                "cut before the trailer",
                b"rocketlog-epochs v1\n1 0\n".to_vec(),
                3,
                Damage::MissingTrailer,
            ),
            (
                "other header",
                with_trailer("rocketlog-epochs v2\n1 0\n"),
                1,
                Damage::BadHeader {
                    found: "rocketlog-epochs v2".into(),
                },
            ),
            (
                "signed number",
                with_trailer("rocketlog-epochs v1\n+1 0\n"),
                2,
                Damage::BadEntry {
                    found: "+1 0".into(),
                },
            ),
            (
                "extra field",
                with_trailer("rocketlog-epochs v1\n1 0 0\n"),
                2,
                Damage::BadEntry {
                    found: "1 0 0".into(),
                },
            ),
            (
                "number too big",
                with_trailer("rocketlog-epochs v1\n18446744073709551616 0\n"),
                2,
                Damage::BadEntry {
                    found: "18446744073709551616 0".into(),
                },
            ),
            (
                "blank line",
                with_trailer("rocketlog-epochs v1\n\n"),
                2,
                Damage::BadEntry {
                    found: String::new(),
                },
            ),
            (
                "bit flip in an entry",
                flipped,
                4,
                Damage::ChecksumMismatch {
                    stored: crc32c::crc32c(b"rocketlog-epochs v1\n1 0\n2 100\n"),
                    computed: crc32c::crc32c(b"rocketlog-epochs v1\n1 0\n2 101\n"),
                },
            ),
            (
                "short checksum",
                b"rocketlog-epochs v1\n1 0\ncrc32c 1234567\n".to_vec(),
                3,
                Damage::BadTrailer {
                    found: "crc32c 1234567".into(),
                },
            ),
            (
                "uppercase checksum",
                b"rocketlog-epochs v1\ncrc32c 0000000A\n".to_vec(),
                2,
                Damage::BadTrailer {
                    found: "crc32c 0000000A".into(),
                },
            ),
            (
                "line after the trailer",
                [good.clone(), b"3 200\n".to_vec()].concat(),
                5,
                Damage::AfterTrailer,
            ),
            (
                "out of order with a good checksum",
                with_trailer("rocketlog-epochs v1\n2 0\n1 100\n"),
                3,
                Damage::OutOfOrder(EpochError::EpochNotNewer { epoch: 1, last: 2 }),
            ),
        ];
        for (name, bytes, want_line, want_problem) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("epochs");
            fs::write(&path, &bytes).unwrap();
            match EpochFile::open(dir.path()) {
                Err(EpochFileError::Damaged {
                    path: p,
                    line,
                    problem,
                }) => {
                    assert_eq!(
                        (p, line, &problem),
                        (path.clone(), want_line, &want_problem),
                        "{name}"
                    );
                }
                other => panic!("{name}: expected a damaged file, got {other:?}"),
            }
            let message = EpochFile::open(dir.path()).unwrap_err().to_string();
            let want_prefix = format!("{} is damaged at line {want_line}: ", path.display());
            assert!(message.starts_with(&want_prefix), "{name}: {message}");
        }
    }

    #[test]
    fn long_damaged_lines_are_quoted_short() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("epochs"), "x".repeat(10_000)).unwrap();
        let message = EpochFile::open(dir.path()).unwrap_err().to_string();
        assert!(message.contains("line 1"), "{message}");
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("epochs"),
            format!("{}\n", "x".repeat(10_000)),
        )
        .unwrap();
        let message = EpochFile::open(dir.path()).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn rejected_begin_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = EpochFile::open(dir.path()).unwrap();
        file.begin(5, 100).unwrap();
        let before = file_bytes(dir.path());
        let err = file.begin(5, 200).unwrap_err();
        assert!(matches!(
            err,
            EpochFileError::Rejected(EpochError::EpochNotNewer { .. })
        ));
        assert!(matches!(
            file.begin(6, 99),
            Err(EpochFileError::Rejected(_))
        ));
        assert_eq!(file_bytes(dir.path()), before);
        assert_eq!(file.history().entries().len(), 1);
    }

    /// A directory in the way of `epochs.tmp` makes the write fail for every user, root too.
    #[test]
    fn failed_write_leaves_the_old_file_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = EpochFile::open(dir.path()).unwrap();
        file.begin(1, 0).unwrap();
        let before = file_bytes(dir.path());
        fs::create_dir(dir.path().join(TMP_NAME)).unwrap();

        let err = file.begin(2, 100).unwrap_err();
        let EpochFileError::Io { what, path, .. } = &err else {
            panic!("expected an I/O error, got {err:?}");
        };
        assert_eq!((*what, path), ("creating", &dir.path().join(TMP_NAME)));
        assert!(err.to_string().starts_with("creating "), "{err}");
        assert_eq!(file.history().entries().len(), 1);
        assert_eq!(file_bytes(dir.path()), before);
        assert_eq!(
            EpochFile::open(dir.path()).unwrap().history(),
            file.history()
        );

        // A truncation that changes nothing does not write, so it cannot fail.
        file.truncate_to(50).unwrap();

        fs::remove_dir(dir.path().join(TMP_NAME)).unwrap();
        file.begin(2, 100).unwrap();
        assert_eq!(
            EpochFile::open(dir.path())
                .unwrap()
                .history()
                .entries()
                .len(),
            2
        );
    }

    #[test]
    fn read_only_directory_leaves_the_old_file_and_history() {
        use std::os::unix::fs::PermissionsExt;
        if rustix::process::geteuid().is_root() {
            eprintln!("skipped: root writes into read-only directories");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut file = EpochFile::open(dir.path()).unwrap();
        file.begin(1, 0).unwrap();
        let before = file_bytes(dir.path());
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o555)).unwrap();
        let result = file.begin(2, 100);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            matches!(result, Err(EpochFileError::Io { .. })),
            "{result:?}"
        );
        assert_eq!(file.history().entries().len(), 1);
        assert_eq!(file_bytes(dir.path()), before);
    }

    #[test]
    fn stale_tmp_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = EpochFile::open(dir.path()).unwrap();
        file.begin(1, 0).unwrap();
        fs::write(dir.path().join(TMP_NAME), "half a file").unwrap();
        let mut file = EpochFile::open(dir.path()).unwrap();
        assert_eq!(file.history().entries().len(), 1);
        file.begin(2, 10).unwrap();
        assert!(!dir.path().join(TMP_NAME).exists());
        assert_eq!(
            EpochFile::open(dir.path()).unwrap().history(),
            file.history()
        );
    }

    #[test]
    fn unreadable_path_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("epochs")).unwrap();
        let err = EpochFile::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                EpochFileError::Io {
                    what: "reading",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
