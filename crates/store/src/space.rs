//! Room checks before a new preallocated file is created.
//!
//! Every file the store creates (commit-log segments, consume-queue files, index files) is
//! preallocated, so a full disk shows up as ENOSPC at creation, never as SIGBUS on a mapped
//! page. How much room each kind keeps free for the others is decided in `reserve`.

use crate::error::{is_disk_full, StoreError};
use crate::mmap::disk_space;
use std::io;
use std::path::Path;

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
