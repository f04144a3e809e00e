//! Small files that must survive a crash whole or not at all (`vote.json`, `purged.json`,
//! `committed.json`, `snapshot.json`): written to a temporary file, fsynced, renamed over the
//! old one, and the directory fsynced so the rename itself is durable. A reader therefore sees
//! either the previous content or the new one, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ControllerError;

/// Adds the path to an I/O error so the operator learns which file failed.
pub(crate) fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Replaces `dir/name` with `bytes`, durably.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(|e| with_path(&tmp, e))?;
    file.write_all(bytes).map_err(|e| with_path(&tmp, e))?;
    file.sync_all().map_err(|e| with_path(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| with_path(&path, e))?;
    sync_dir(dir)
}

/// Serializes `value` as JSON and replaces `dir/name` with it, durably.
pub(crate) fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| io::Error::other(format!("encoding {name}: {e}")))?;
    write_atomic(dir, name, &bytes)
}

/// Makes renames, creations and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(dir, e))
}

/// Reads `dir/name` as JSON; `None` when the file does not exist. A file that exists but does
/// not parse is an error: it was written atomically, so garbage means corruption, not a crash.
pub(crate) fn read_json<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, ControllerError> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ControllerError::Io { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ControllerError::CorruptFile {
            path,
            reason: e.to_string(),
        })
}

/// Removes a leftover temporary file from a write interrupted by a crash.
pub(crate) fn remove_stale_tmp(dir: &Path, name: &str) -> Result<(), ControllerError> {
    let path: PathBuf = dir.join(format!("{name}.tmp"));
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ControllerError::Io { path, source }),
    }
}
