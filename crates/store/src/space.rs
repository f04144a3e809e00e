//! Room checks before a new preallocated file is created.
//!
//! Every file the store creates (commit-log segments, consume-queue files, index files) is
//! preallocated, so a full disk shows up as ENOSPC at creation, never as SIGBUS on a mapped
//! page. That alone would let whichever file asks first take the last free bytes. The files
//! do not matter equally: the commit log holds acknowledged messages, the consume queues make
//! them readable, the index only speeds up lookups. So each creation also keeps some room
//! free for the kinds that matter more than the ones after it:
//!
//! - a commit-log segment keeps [`StoreConfig::derived_reserve`] free (an index file and a
//!   few consume-queue files), so the messages it accepts can still be made readable;
//! - an index file keeps room for two consume-queue files;
//! - a consume-queue file keeps nothing back.

use crate::config::StoreConfig;
use crate::error::{is_disk_full, StoreError};
use crate::mmap::disk_space;
use std::io;
use std::path::Path;

/// Consume-queue files' worth of room an index file leaves for the consume queues.
const QUEUE_FILES_KEPT_BY_INDEX: u64 = 2;
/// Consume-queue files' worth of room a commit-log segment leaves (with one index file).
const QUEUE_FILES_KEPT_BY_LOG: u64 = 4;

impl StoreConfig {
    /// Bytes of one consume-queue file.
    pub fn consume_queue_file_len(&self) -> u64 {
        u64::from(self.consume_queue_segment_entries) * crate::consume_queue::ENTRY_LEN as u64
    }

    /// Bytes of one index file.
    pub fn index_file_len(&self) -> u64 {
        crate::index::file_len(self.index_slots, self.index_entries_per_file)
    }

    /// Room a new commit-log segment leaves free for consume-queue and index files.
    pub fn derived_reserve(&self) -> u64 {
        self.index_file_len() + QUEUE_FILES_KEPT_BY_LOG * self.consume_queue_file_len()
    }

    /// Room a new index file leaves free for consume-queue files.
    pub(crate) fn index_keep_free(&self) -> u64 {
        QUEUE_FILES_KEPT_BY_INDEX * self.consume_queue_file_len()
    }
}

/// Runs `create`, which makes a new preallocated file of `len` bytes at `path`, if the file
/// system will still have `keep_free` bytes available afterwards. A failed check and ENOSPC
/// become [`StoreError::DiskFull`]; other errors [`StoreError::Io`].
pub(crate) fn create_with_room<T>(
    path: &Path,
    len: u64,
    keep_free: u64,
    create: impl FnOnce() -> io::Result<T>,
) -> Result<T, StoreError> {
    let dir = path.parent().unwrap_or(path);
    let full = |available: u64| StoreError::DiskFull {
        path: path.to_path_buf(),
        needed: len,
        keep_free,
        available,
    };
    // A failing statvfs is no reason to refuse: the preallocation still reports ENOSPC.
    if let Ok(space) = disk_space(dir) {
        if space.available < len.saturating_add(keep_free) {
            return Err(full(space.available));
        }
    }
    create().map_err(|e| {
        if is_disk_full(&e) {
            full(disk_space(dir).map_or(0, |s| s.available))
        } else {
            StoreError::io(path, e)
        }
    })
}
