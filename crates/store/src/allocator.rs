//! Creates, preallocates, maps (and pre-faults) the next commit-log segment on its own thread,
//! so that rolling to a new segment under the append lock is only a pointer swap.
//!
//! The same thread keeps a window of the log ahead of the write position pre-faulted for
//! writing (MADV_POPULATE_WRITE), so appends copy into pages that are already mapped: a
//! first-touch page fault on a shared file mapping costs microseconds, several times the cost
//! of the copy. Only a window is touched, not whole segments: pre-faulted pages are dirty
//! zeros, and a window that the writer fills soon is written to disk once, with the data. The
//! window is a range of physical offsets, so near a segment's end it runs on into the next
//! (already created) segment.
//!
//! Protocol: the appender asks for the segment at `base` ([`Allocator::request`]) as soon as it
//! starts writing the previous one. When it needs it, it takes it without blocking
//! ([`Allocator::take_ready`]); only if it is not ready yet does it release the append lock and
//! block in [`Allocator::wait_ready`]. Failures (disk full) are handed to the appender that
//! needs the segment and never cached: each new need triggers a fresh attempt.

use crate::config::{FaultInjector, IoPoint};
use crate::error::{is_disk_full, StoreError};
use crate::mmap::{FileWriter, MappedFile};
use crate::segment::{file_name, Segment};
use parking_lot::{Condvar, Mutex};
use std::path::PathBuf;
use std::sync::Arc;

/// A freshly created segment and its only writer.
#[derive(Debug)]
pub(crate) struct NewSegment {
    pub segment: Arc<Segment>,
    pub writer: FileWriter,
}

#[derive(Debug)]
struct Attempt {
    base: u64,
    /// Value of `completed` when this attempt finished.
    number: u64,
    result: Result<NewSegment, StoreError>,
}

/// Pre-fault in steps of this size, so a segment request never waits long behind it.
const PREFAULT_STEP: u64 = 4 << 20;

#[derive(Debug, Default)]
struct State {
    want: Option<u64>,
    /// The wanted segment is needed only later (asked for ahead), so it may take the time to
    /// be zero-filled.
    want_ahead: bool,
    busy: Option<u64>,
    ready: Option<Attempt>,
    completed: u64,
    /// Highest base handed to the appender by `take_ready`: never created again.
    taken: Option<u64>,
    /// The segment being written.
    active: Option<Arc<Segment>>,
    /// Physical offsets `[prefaulted, prefault_target)` still to pre-fault.
    prefaulted: u64,
    prefault_target: u64,
    stop: bool,
}

impl State {
    /// The mapped segment holding physical offset `pos`, if it exists yet.
    fn segment_at(&self, pos: u64) -> Option<Arc<Segment>> {
        let ready = match &self.ready {
            Some(Attempt { result: Ok(n), .. }) => Some(&n.segment),
            _ => None,
        };
        self.active
            .iter()
            .chain(ready)
            .find(|s| s.base <= pos && pos < s.end())
            .cloned()
    }

    /// Another appender already took the segment at `base` (or a later one).
    fn was_taken(&self, base: u64) -> bool {
        self.taken.is_some_and(|t| t >= base)
    }

    fn has_prefault_work(&self) -> bool {
        self.prefaulted < self.prefault_target && self.segment_at(self.prefaulted).is_some()
    }
}

/// The background segment allocator.
#[derive(Debug)]
pub(crate) struct Allocator {
    dir: PathBuf,
    segment_size: u64,
    prefault_window: u64,
    zero_fill: bool,
    faults: FaultInjector,
    state: Mutex<State>,
    cv: Condvar,
}

impl Allocator {
    pub(crate) fn new(
        dir: PathBuf,
        segment_size: u64,
        prefault_window: u64,
        zero_fill: bool,
        faults: FaultInjector,
    ) -> Self {
        Allocator {
            dir,
            segment_size,
            prefault_window,
            zero_fill,
            faults,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        }
    }

    /// Asks for the segment at `base` to be prepared; never blocks on I/O.
    /// `ahead`: the appender is still writing an earlier segment (so this one may be
    /// zero-filled first).
    pub(crate) fn request(&self, base: u64, ahead: bool) {
        let mut st = self.state.lock();
        Self::want(&mut st, base);
        st.want_ahead = ahead;
        self.cv.notify_all();
    }

    fn want(st: &mut State, base: u64) {
        let ready_ok = matches!(&st.ready, Some(a) if a.base == base && a.result.is_ok());
        if !ready_ok && st.busy != Some(base) && !st.was_taken(base) {
            st.want = Some(base);
            st.want_ahead = false;
        }
    }

    /// The prepared segment at `base`, if it is ready.
    pub(crate) fn take_ready(&self, base: u64) -> Option<NewSegment> {
        let mut st = self.state.lock();
        match st.ready.take() {
            Some(Attempt {
                base: b,
                result: Ok(seg),
                ..
            }) if b == base => {
                st.taken = Some(base);
                Some(seg)
            }
            other => {
                st.ready = other;
                None
            }
        }
    }

    /// Blocks until an attempt for `base` that finished after this call started succeeded
    /// (the segment is then left for [`Allocator::take_ready`]), failed (its error), or
    /// another appender already took the segment (the caller re-checks the active one).
    pub(crate) fn wait_ready(&self, base: u64) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        let since = st.completed;
        loop {
            if st.stop {
                return Err(StoreError::ShutDown);
            }
            if st.was_taken(base) {
                return Ok(());
            }
            match &st.ready {
                Some(a) if a.base == base && a.result.is_ok() => return Ok(()),
                Some(a) if a.base == base && a.number > since => {
                    if let Some(Attempt { result: Err(e), .. }) = st.ready.take() {
                        return Err(e);
                    }
                }
                Some(a) if a.base == base => st.ready = None, // stale failure: try again
                _ => {}
            }
            Self::want(&mut st, base);
            self.cv.notify_all();
            self.cv.wait(&mut st);
        }
    }

    /// Bytes ahead of the write position kept pre-faulted (0 = off).
    pub(crate) fn prefault_window(&self) -> u64 {
        self.prefault_window
    }

    /// The appender moved to `segment`.
    pub(crate) fn set_active(&self, segment: Arc<Segment>) {
        let mut st = self.state.lock();
        st.prefaulted = st.prefaulted.max(segment.base);
        st.active = Some(segment);
    }

    /// Asks for the log to be pre-faulted from the write position `written` up to physical
    /// offset `target` (the appender calls this every half window, not per append).
    pub(crate) fn prefault_to(&self, written: u64, target: u64) {
        let mut st = self.state.lock();
        st.prefaulted = st.prefaulted.max(written);
        if target > st.prefault_target {
            st.prefault_target = target;
            self.cv.notify_all();
        }
    }

    /// Ends [`Allocator::run`] and fails every waiter with `ShutDown`.
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.cv.notify_all();
    }

    /// The allocator thread's loop.
    pub(crate) fn run(&self) {
        let mut st = self.state.lock();
        loop {
            while !st.stop && st.want.is_none() && !st.has_prefault_work() {
                self.cv.wait(&mut st);
            }
            if st.stop {
                return;
            }
            let ahead = std::mem::take(&mut st.want_ahead);
            let Some(base) = st.want.take() else {
                st = self.prefault_step(st);
                continue;
            };
            st.busy = Some(base);
            if let Some(old) = st.ready.take() {
                discard(old);
            }
            drop(st);
            let result = self.create(base, ahead && self.zero_fill);
            st = self.state.lock();
            st.busy = None;
            st.completed += 1;
            st.ready = Some(Attempt {
                base,
                number: st.completed,
                result,
            });
            self.cv.notify_all();
        }
    }

    /// Pre-faults one step of the window, without holding the lock during the work.
    fn prefault_step<'a>(
        &'a self,
        st: parking_lot::MutexGuard<'a, State>,
    ) -> parking_lot::MutexGuard<'a, State> {
        let from = st.prefaulted;
        let Some(seg) = st.segment_at(from) else {
            return st;
        };
        let to = st.prefault_target.min(seg.end()).min(from + PREFAULT_STEP);
        drop(st);
        let local = (from - seg.base) as usize;
        if let Err(e) = seg.file.prefault(local, (to - from) as usize) {
            // Only an optimization: appends still work, they just take the page faults.
            tracing::warn!(path = %seg.file.path().display(), error = %e, "pre-faulting failed");
        }
        let mut st = self.state.lock();
        st.prefaulted = st.prefaulted.max(to);
        st
    }

    /// Creates the segment at `base`; `zero_fill`: also writes it with zeros (see
    /// `StoreConfig::zero_fill_segments`).
    fn create(&self, base: u64, zero_fill: bool) -> Result<NewSegment, StoreError> {
        let path = self.dir.join(file_name(base));
        let fail = |e: std::io::Error| {
            if is_disk_full(&e) {
                StoreError::DiskFull {
                    path: path.clone(),
                    needed: self.segment_size,
                }
            } else {
                StoreError::io(&path, e)
            }
        };
        self.faults
            .check(IoPoint::PreallocateSegment { base })
            .map_err(fail)?;
        let (file, mut writer) =
            MappedFile::create(&path, self.segment_size, true).map_err(fail)?;
        if zero_fill {
            if let Err(e) = writer.zero_fill_durably() {
                drop((file, writer));
                // A half-filled file would block the retry (segments are created, never reused).
                let _ignored_cleanup = std::fs::remove_file(&path);
                return Err(fail(e));
            }
        }
        Ok(NewSegment {
            segment: Arc::new(Segment { base, file }),
            writer,
        })
    }
}

/// Removes a prepared segment nobody will use (only when the wanted base changed).
fn discard(a: Attempt) {
    if let Ok(seg) = a.result {
        let path = seg.segment.file.path().to_path_buf();
        drop(seg);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove unused segment");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn prepares_ahead_and_retries_after_disk_full() {
        let dir = tempfile::tempdir().unwrap();
        let full = Arc::new(AtomicBool::new(true));
        let f2 = full.clone();
        let faults = FaultInjector::new(move |_| {
            f2.load(Ordering::SeqCst)
                .then(|| io::Error::from(io::ErrorKind::StorageFull))
        });
        let alloc = Arc::new(Allocator::new(dir.path().into(), 8192, 4096, false, faults));
        alloc.prefault_to(0, 4096); // nothing mapped yet: no work, no spin
        let a2 = alloc.clone();
        let t = std::thread::spawn(move || a2.run());
        alloc.request(0, false);
        assert!(matches!(
            alloc.wait_ready(0),
            Err(StoreError::DiskFull { needed: 8192, .. })
        ));
        assert!(alloc.take_ready(0).is_none());
        full.store(false, Ordering::SeqCst);
        alloc.wait_ready(0).unwrap();
        let seg = alloc.take_ready(0).unwrap();
        assert_eq!((seg.segment.base, seg.segment.end()), (0, 8192));
        assert!(dir.path().join(file_name(0)).exists());
        alloc.stop();
        t.join().unwrap();
        assert!(matches!(alloc.wait_ready(8192), Err(StoreError::ShutDown)));
    }

    #[test]
    fn a_late_waiter_does_not_recreate_a_taken_segment() {
        let dir = tempfile::tempdir().unwrap();
        let alloc = Arc::new(Allocator::new(
            dir.path().into(),
            8192,
            0,
            true,
            FaultInjector::none(),
        ));
        let a2 = alloc.clone();
        let t = std::thread::spawn(move || a2.run());
        alloc.request(0, false);
        alloc.wait_ready(0).unwrap();
        let seg = alloc.take_ready(0).unwrap();
        // Asked for ahead: zero-filled before it is handed over.
        alloc.request(8192, true);
        alloc.wait_ready(8192).unwrap();
        let next = alloc.take_ready(8192).unwrap();
        assert_eq!(next.writer.read(0, 8192).unwrap(), &[0u8; 8192][..]);
        // A second appender that lost the race must be told to re-check, not re-create
        // (creating the same file again fails with "File exists").
        alloc.wait_ready(0).unwrap();
        assert!(alloc.take_ready(0).is_none());
        assert_eq!(alloc.state.lock().completed, 2);
        drop((seg, next));
        alloc.stop();
        t.join().unwrap();
    }
}
