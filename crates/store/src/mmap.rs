//! The only module with `unsafe`: memory-mapped files, and the four libc calls the store needs
//! (`posix_fallocate`, `sync_file_range`, `statvfs`, `flock`).
//!
//! # Contract of a [`MappedFile`]
//!
//! A `MappedFile` maps one whole file of fixed length, shared and read-write. Its bytes are
//! reached only through raw pointers (memmap2's `MmapRaw`), never through a `&mut [u8]` over the
//! whole map, so a writer and many readers can touch disjoint parts at once. What keeps every
//! slice handed out free of concurrent writes:
//!
//! 1. **Published prefix.** `published` only grows. [`MappedFile::read`] hands out slices of
//!    `[0, published)` only, and no byte below `published` is ever written again: writes go
//!    through [`FileWriter`], which refuses any write starting below `published`.
//! 2. **One writer.** Each mapping has exactly one `FileWriter` (it is not `Clone`). Writing
//!    takes `&mut FileWriter`; [`FileWriter::read`] (which may look past `published`, e.g. for
//!    recovery or the index) borrows it shared, so the borrow checker forbids a write while such
//!    a slice lives.
//! 3. **No truncation while mapped.** Lengths are set before mapping ([`MappedFile::create`],
//!    [`MappedFile::open`]); files are removed only by unlink, which keeps the pages of live
//!    mappings. Touching a mapped page past a shrunk end would raise SIGBUS. No other process
//!    writes the files: the store holds the data directory with [`lock_exclusive`], and no file
//!    is mapped twice.
//! 4. **Lifetime.** The mapping is owned by the `MappedFile`, shared by `Arc`; slices borrow it,
//!    so it is unmapped only after the last reader and the writer are gone.

use memmap2::{Advice, MmapOptions, MmapRaw, UncheckedAdvice};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A fixed-length file mapped into memory; see the module contract.
#[derive(Debug)]
pub(crate) struct MappedFile {
    path: PathBuf,
    map: MmapRaw,
    /// The descriptor, kept only for files written with [`FileWriter::write_through`] (log
    /// segments: few and large); other mappings close it so that thousands of consume-queue
    /// files do not hold thousands of descriptors.
    file: Option<File>,
    /// Invariant: bytes `[0, published)` are never written again and may be read by anyone.
    published: AtomicUsize,
}

/// The single writer of one [`MappedFile`].
#[derive(Debug)]
pub(crate) struct FileWriter {
    file: Arc<MappedFile>,
}

impl MappedFile {
    /// Creates `path` (which must not exist), preallocates `len` bytes on disk (so running out
    /// of space shows up here as ENOSPC, not later as SIGBUS on a page fault) and maps it.
    pub(crate) fn create(
        path: &Path,
        len: u64,
        keep_fd: bool,
    ) -> io::Result<(Arc<MappedFile>, FileWriter)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        if let Err(e) = preallocate(&file, len) {
            drop(file);
            // The half-allocated file would otherwise block the retry (create_new).
            let _ignored_cleanup = std::fs::remove_file(path);
            return Err(e);
        }
        Self::map(path.to_path_buf(), file, len, keep_fd)
    }

    /// Maps an existing file, first growing it to `len` if it is shorter (a torn tail of a
    /// crash-truncated file reads as zeros). A file longer than `len` is an error.
    pub(crate) fn open(
        path: &Path,
        len: u64,
        keep_fd: bool,
    ) -> io::Result<(Arc<MappedFile>, FileWriter)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let actual = file.metadata()?.len();
        if actual > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file is {actual} bytes, expected at most {len}"),
            ));
        }
        if actual < len {
            file.set_len(len)?;
        }
        Self::map(path.to_path_buf(), file, len, keep_fd)
    }

    fn map(
        path: PathBuf,
        file: File,
        len: u64,
        keep_fd: bool,
    ) -> io::Result<(Arc<MappedFile>, FileWriter)> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large to map"))?;
        // The mapping keeps its own reference to the file; the descriptor may close.
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        let mf = Arc::new(MappedFile {
            path,
            map,
            file: keep_fd.then_some(file),
            published: AtomicUsize::new(0),
        });
        let writer = FileWriter { file: mf.clone() };
        Ok((mf, writer))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// End of the immutable, readable prefix.
    pub(crate) fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// `n` bytes at `pos`, if they lie entirely in the published prefix.
    pub(crate) fn read(&self, pos: usize, n: usize) -> Option<&[u8]> {
        let end = pos.checked_add(n)?;
        if end > self.published() {
            return None;
        }
        // SAFETY: `end <= published <= len`, so the range is inside the live mapping (which
        // `self` owns and outlives the returned borrow). Bytes below `published` are never
        // written again (contract rule 1), so no mutable access aliases this slice.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(pos), n) })
    }

    /// Writes `[pos, pos+n)` to disk (msync, MS_SYNC: on Linux an fdatasync of the range).
    pub(crate) fn flush_range(&self, pos: usize, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.map.flush_range(pos, n)
    }

    /// Writes the whole mapping to disk.
    pub(crate) fn flush_all(&self) -> io::Result<()> {
        self.map.flush()
    }

    /// Pre-faults the pages of `[pos, pos+len)` for writing so later writes do not fault. It
    /// changes no byte (the pages are populated from the file), so it is fine on any range.
    /// Only an optimization: kernels without MADV_POPULATE_WRITE answer EINVAL, ignored.
    pub(crate) fn prefault(&self, pos: usize, len: usize) -> io::Result<()> {
        let len = len.min(self.len().saturating_sub(pos));
        if len == 0 {
            return Ok(());
        }
        match self.map.advise_range(Advice::PopulateWrite, pos, len) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
            other => other,
        }
    }
}

impl MappedFile {
    /// Drops this process's page-table entries for `[pos, pos+len)` (`MADV_DONTNEED`), so the
    /// pages stop counting in its resident set. No byte changes: the mapping is a shared file
    /// mapping, so the pages stay in the page cache (dirty ones still dirty, written back by
    /// the next flush or the kernel) and the next access, read or write, maps them again.
    /// Only a memory optimization; any range inside the mapping is fine, at any time.
    pub(crate) fn release(&self, pos: usize, len: usize) -> io::Result<()> {
        let len = len.min(self.len().saturating_sub(pos));
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the range is inside the mapping (clamped above). On a MAP_SHARED file
        // mapping MADV_DONTNEED only removes page-table entries: the kernel moves each entry's
        // dirty bit to the page-cache page before dropping it, and a later access faults the
        // same page back in, so every byte a reader or the writer sees is unchanged, including
        // bytes written concurrently (a store either lands before the entry is cleared or
        // faults after). Slices handed out by `read` stay valid: their addresses stay mapped.
        unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, pos, len)
        }
    }
}

impl FileWriter {
    pub(crate) fn file(&self) -> &Arc<MappedFile> {
        &self.file
    }

    fn check_writable(&self, pos: usize, n: usize) -> io::Result<()> {
        let end = pos.checked_add(n);
        if pos < self.file.published() || end.is_none_or(|e| e > self.file.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "write of {n} bytes at {pos} outside [{}, {}) of {}",
                    self.file.published(),
                    self.file.len(),
                    self.file.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Copies `data` to `pos`, which must be at or above the published prefix.
    pub(crate) fn write(&mut self, pos: usize, data: &[u8]) -> io::Result<()> {
        self.check_writable(pos, data.len())?;
        // SAFETY: the range is inside the mapping and at or above `published`, so no reader
        // holds a slice of it (rule 1); `&mut self` on the only writer excludes every other
        // write and every writer-issued slice (rule 2). `data` cannot overlap the mapping's
        // unpublished part because nothing hands out slices of it except `FileWriter::read`,
        // whose borrow of `self` cannot coexist with this `&mut self`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.file.map.as_mut_ptr().add(pos),
                data.len(),
            );
        }
        Ok(())
    }

    /// Copies `data` to `pos` with `pwrite` instead of a store into the map. Same rules as
    /// [`FileWriter::write`] (the page cache behind the map is the same, so readers of the map
    /// see the bytes once published). Pages written this way are never dirtied through the
    /// mapping, so flushing them needs no write-protect and TLB shootdown per page: the
    /// cheaper path when every append is followed by a flush (Sync mode).
    pub(crate) fn write_through(&mut self, pos: usize, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.check_writable(pos, data.len())?;
        match &self.file.file {
            Some(f) => f.write_all_at(data, pos as u64),
            None => self.write(pos, data),
        }
    }

    /// Writes zeros over `[pos, pos+n)` of the (still unpublished) file through the descriptor
    /// and waits until they are on disk (`sync_file_range`: write-back of that range only, no
    /// journal commit and no device cache flush, so a concurrent fsync of another file waits
    /// behind at most this range). Afterwards the range's blocks are written extents, not
    /// merely allocated ones: a later fdatasync of data written there commits no journal.
    pub(crate) fn zero_durably(&mut self, pos: usize, n: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.check_writable(pos, n)?;
        let Some(f) = &self.file.file else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "zero-filling needs the file's descriptor",
            ));
        };
        f.write_all_at(&vec![0u8; n], pos as u64)?;
        let (off, len) = (off_t(pos as u64)?, off_t(n as u64)?);
        let how = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: plain syscall wrapper on a valid open descriptor; no memory is passed.
        let rc = unsafe { libc::sync_file_range(f.as_raw_fd(), off, len, how) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// fdatasync of the whole file (after [`FileWriter::zero_durably`]: commits the extent
    /// conversions, so the first flush of appended data does not have to).
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        match &self.file.file {
            Some(f) => f.sync_data(),
            None => self.file.flush_all(),
        }
    }

    /// The unpublished bytes `[pos, pos+n)` to fill in place (the append path encodes records
    /// straight into the map). Nobody else can see them until [`FileWriter::publish`].
    pub(crate) fn region_mut(&mut self, pos: usize, n: usize) -> io::Result<&mut [u8]> {
        self.check_writable(pos, n)?;
        // SAFETY: in bounds and at or above `published`, so no reader holds a slice of it
        // (rule 1); the returned borrow keeps `self` mutably borrowed, so no other write or
        // writer-issued slice can coexist with it (rule 2).
        Ok(unsafe { std::slice::from_raw_parts_mut(self.file.map.as_mut_ptr().add(pos), n) })
    }

    /// Zeroes `[from, to)`, which must be at or above the published prefix.
    pub(crate) fn zero(&mut self, from: usize, to: usize) -> io::Result<()> {
        let n = to.saturating_sub(from);
        self.check_writable(from, n)?;
        // SAFETY: same argument as `write`: in bounds, unpublished, exclusive writer.
        unsafe { std::ptr::write_bytes(self.file.map.as_mut_ptr().add(from), 0, n) };
        Ok(())
    }

    /// `n` bytes at `pos` anywhere in the file, published or not.
    pub(crate) fn read(&self, pos: usize, n: usize) -> Option<&[u8]> {
        let end = pos.checked_add(n)?;
        if end > self.file.len() {
            return None;
        }
        // SAFETY: in bounds of the live mapping (owned through `self.file`). Writes need
        // `&mut self` (rule 2), so none can happen while this shared borrow lives; bytes below
        // `published` are never written at all.
        Some(unsafe { std::slice::from_raw_parts(self.file.map.as_ptr().add(pos), n) })
    }

    /// Makes `[0, upto)` readable by everyone and immutable. Never moves backwards.
    pub(crate) fn publish(&self, upto: usize) {
        let upto = upto.min(self.file.len());
        if upto > self.file.published.load(Ordering::Relaxed) {
            // Release pairs with the Acquire in `published()`: the bytes written before are
            // visible to a reader that sees the new value.
            self.file.published.store(upto, Ordering::Release);
        }
    }
}

fn off_t(n: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(n)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Reserves `len` bytes of disk for `file` (posix_fallocate). File systems that cannot
/// preallocate fall back to a sparse `set_len`.
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let off_len = off_t(len)?;
    // SAFETY: plain syscall wrapper on a valid open descriptor; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off_len) };
    match rc {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Use of the file system holding a path, as `df` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskSpace {
    /// Bytes in use (`f_blocks - f_bfree`).
    pub used: u64,
    /// Bytes this process may still write (`f_bavail`).
    pub available: u64,
}

impl DiskSpace {
    /// `used / (used + available)`, df's "Use%". Blocks reserved for root or held back by
    /// the file system are neither: counting them as used would call a half-empty disk full
    /// (seen on the dev VM: 86 % by `1 - f_bavail/f_blocks`, 61 % by df).
    pub(crate) fn use_ratio(&self) -> f64 {
        let capacity = self.used.saturating_add(self.available);
        if capacity == 0 {
            return 0.0;
        }
        self.used as f64 / capacity as f64
    }
}

/// statvfs of the file system holding `path`.
pub(crate) fn disk_space(path: &Path) -> io::Result<DiskSpace> {
    let c = cstring(path)?;
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated string and `st` points to writable memory of the
    // right type; statvfs fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: rc == 0, so the struct was initialized by the kernel.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize;
    Ok(DiskSpace {
        used: st
            .f_blocks
            .saturating_sub(st.f_bfree)
            .saturating_mul(frsize),
        available: st.f_bavail.saturating_mul(frsize),
    })
}

/// Takes an exclusive advisory lock on `file` without blocking. `Ok(false)` if another open
/// file description (another process or another `Store`) holds it. Released on close.
pub(crate) fn lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: plain syscall wrapper on a valid open descriptor; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_use_ratio_is_dfs_use_percent() {
        // Reserved blocks are neither used nor available.
        let s = DiskSpace {
            used: 55,
            available: 37,
        };
        assert!((s.use_ratio() - 55.0 / 92.0).abs() < 1e-9);
        let empty = DiskSpace {
            used: 0,
            available: 0,
        };
        assert_eq!(empty.use_ratio(), 0.0);
        let here = disk_space(Path::new(".")).unwrap();
        assert!((0.0..=1.0).contains(&here.use_ratio()));
    }

    #[test]
    fn reads_stop_at_published_and_writes_start_there() {
        let dir = tempfile::tempdir().unwrap();
        let (f, mut w) = MappedFile::create(&dir.path().join("a"), 8192, true).unwrap();
        assert_eq!(f.len(), 8192);
        w.write(0, b"hello").unwrap();
        assert!(f.read(0, 5).is_none(), "unpublished bytes are not readable");
        w.publish(5);
        assert_eq!(f.read(0, 5).unwrap(), b"hello");
        assert!(w.write(4, b"x").is_err(), "published bytes are immutable");
        assert!(w.write(8190, b"xyz").is_err(), "past the end");
        w.write_through(5, b"!").unwrap();
        assert_eq!(
            w.read(0, 6).unwrap(),
            b"hello!",
            "pwrite shows through the map"
        );
        assert!(
            w.write_through(2, b"x").is_err(),
            "published bytes are immutable"
        );
        w.publish(3); // never moves backwards
        assert_eq!(f.published(), 5);
        f.flush_range(0, 6).unwrap();
        drop((f, w));
        let (f, w) = MappedFile::open(&dir.path().join("a"), 8192, false).unwrap();
        assert_eq!(w.read(0, 6).unwrap(), b"hello!");
        assert_eq!(f.published(), 0);
    }

    /// Resident pages of this process in `[ptr, ptr+len)`, from `/proc/self/smaps`'s `Rss:`
    /// of the mapping containing `ptr` (the whole mapping: the test maps one file).
    fn mapping_rss_kb(ptr: *const u8) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let addr = ptr as usize;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = lo <= addr && addr < hi;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix("Rss:") {
                    return v.trim().trim_end_matches("kB").trim().parse().unwrap();
                }
            }
        }
        panic!("no mapping at {addr:#x} in /proc/self/smaps");
    }

    #[test]
    fn release_drops_resident_pages_and_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let len: usize = 4 << 20;
        let (f, mut w) = MappedFile::create(&dir.path().join("r"), len as u64, true).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        w.write(0, &data[..len / 2]).unwrap();
        w.publish(len / 2);
        let ptr = f.read(0, 1).unwrap().as_ptr();
        assert!(mapping_rss_kb(ptr) >= 2048, "written pages are resident");
        // Dirty, never flushed pages too: released, then read back and flushed.
        f.release(0, len).unwrap();
        assert!(
            mapping_rss_kb(ptr) < 64,
            "released: {} kB resident",
            mapping_rss_kb(ptr)
        );
        assert_eq!(f.read(0, len / 2).unwrap(), &data[..len / 2]);
        // Writing after a release maps the pages again; a release in the middle of the
        // unpublished part and past the end changes nothing either.
        w.write(len / 2, &data[len / 2..]).unwrap();
        f.release(len / 2 + 1, 10).unwrap();
        f.release(len, 4096).unwrap();
        w.publish(len);
        assert_eq!(f.read(0, len).unwrap(), &data[..]);
        f.flush_range(0, len).unwrap();
        drop((f, w));
        assert_eq!(std::fs::read(dir.path().join("r")).unwrap(), data);
    }

    #[test]
    fn open_grows_short_files_and_refuses_long_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        std::fs::write(&p, b"abc").unwrap();
        let (f, w) = MappedFile::open(&p, 4096, false).unwrap();
        assert_eq!(w.read(0, 4).unwrap(), b"abc\0");
        drop((f, w));
        assert!(MappedFile::open(&p, 1024, false).is_err());
        assert!(
            MappedFile::create(&p, 4096, false).is_err(),
            "create never reuses a file"
        );
    }

    #[test]
    fn disk_space_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let s = disk_space(dir.path()).unwrap();
        assert!(s.used.saturating_add(s.available) > 0);
        let p = dir.path().join("LOCK");
        let a = File::create(&p).unwrap();
        let b = File::open(&p).unwrap();
        assert!(lock_exclusive(&a).unwrap());
        assert!(!lock_exclusive(&b).unwrap());
        drop(a);
        assert!(lock_exclusive(&b).unwrap());
    }
}
