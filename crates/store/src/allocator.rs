//! Creates, preallocates, maps (and pre-faults) the next commit-log segment on its own thread,
//! so that rolling to a new segment under the append lock is only a pointer swap.
//!
//! A Sync-mode segment asked for ahead is also zero-filled before it is handed over (see
//! `StoreConfig::zero_fill_segments`), in steps paced by the writer: the zeroed share of the
//! new segment is kept ahead of twice the written share of the active one, each step is
//! followed by a pause as long as the step took (the log's group commits share the disk),
//! and an appender that needs the segment stops the filling at the next step boundary (the
//! rest stays merely allocated: correct, only slower to flush).
//!
//! The filling runs only while it pays: while the log's flushes carry more than a page on
//! average (several appenders share each group commit, or records are large), where a flush
//! into zero-filled space saves the most. A lone appender of small records flushes one page
//! at a time, gains little from the zeros and would see every step that lands during its
//! fsync as a latency spike; the filling then pauses, and if the writer gets half-way through
//! its segment meanwhile, the new segment is handed over as it is.
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
use crate::error::StoreError;
use crate::mmap::{FileWriter, MappedFile};
use crate::segment::{file_name, Segment};
use crate::space::create_with_room;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Zero-fill in steps of this size: one step delays a concurrent group commit by at most its
/// own write-back (about 1 ms at 256 MB/s).
const ZERO_STEP: usize = 256 << 10;

/// Waits of a zero-fill that is far enough ahead of the writer: from the first to the last,
/// doubling while the writer stays put (an idle store checks rarely).
const ZERO_IDLE_FIRST: Duration = Duration::from_millis(5);
const ZERO_IDLE_MAX: Duration = Duration::from_millis(100);

/// Zero-fill only while the log's flushes average more than this many bytes (one page: below
/// it every flush writes a single page whatever the space, see the module doc).
const FILL_MIN_FLUSH_BYTES: u64 = 4096;

#[derive(Debug, Default)]
struct State {
    want: Option<u64>,
    /// The wanted segment is needed only later (asked for ahead), so it may take the time to
    /// be zero-filled.
    want_ahead: bool,
    busy: Option<u64>,
    /// An appender waits for the segment being prepared: stop zero-filling it.
    urgent: Option<u64>,
    /// Bytes of the segment being prepared already zero-filled (read by the tests).
    zeroed: u64,
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
    /// Bytes a new segment must leave available for consume-queue and index files.
    keep_free: u64,
    prefault_window: u64,
    zero_fill: bool,
    /// Moving average of the bytes per log flush (weight 1/8 for the newest); written only
    /// by the flusher thread.
    flush_bytes: AtomicU64,
    faults: FaultInjector,
    state: Mutex<State>,
    cv: Condvar,
}

impl Allocator {
    pub(crate) fn new(
        dir: PathBuf,
        segment_size: u64,
        keep_free: u64,
        prefault_window: u64,
        zero_fill: bool,
        faults: FaultInjector,
    ) -> Self {
        Allocator {
            dir,
            segment_size,
            keep_free,
            prefault_window,
            zero_fill,
            flush_bytes: AtomicU64::new(0),
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
            if st.busy == Some(base) {
                st.urgent = Some(base);
            }
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

    /// The log flushed `bytes` in one round (called by the flusher thread only): feeds the
    /// average that decides whether zero-filling pays.
    pub(crate) fn note_flush(&self, bytes: u64) {
        let avg = self.flush_bytes.load(Ordering::Relaxed);
        let avg = (avg.saturating_mul(7)).saturating_add(bytes) / 8;
        self.flush_bytes.store(avg, Ordering::Relaxed);
    }

    /// Whether zero-filling pays now (module doc).
    fn fill_pays(&self) -> bool {
        self.flush_bytes.load(Ordering::Relaxed) > FILL_MIN_FLUSH_BYTES
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
            let mut result = self.create(base);
            st = self.state.lock();
            if let (Ok(new), true) = (&mut result, ahead && self.zero_fill) {
                st = self.zero_fill(st, new);
            }
            st.busy = None;
            st.urgent = None;
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

    /// Creates (preallocates and maps) the segment at `base`, if it leaves `keep_free` bytes
    /// for the derived files (see `space`).
    fn create(&self, base: u64) -> Result<NewSegment, StoreError> {
        let path = self.dir.join(file_name(base));
        let (file, writer) = create_with_room(&path, self.segment_size, self.keep_free, || {
            self.faults.check(IoPoint::PreallocateSegment { base })?;
            MappedFile::create(&path, self.segment_size, true)
        })?;
        Ok(NewSegment {
            segment: Arc::new(Segment { base, file }),
            writer,
        })
    }

    /// Zero-fills `new` (not yet handed over, so nothing else writes it) in paced steps, see
    /// the module doc; returns when it is filled, an appender needs it, or the store stops.
    /// The lock is held only between steps. Only an optimization: a failed step is logged
    /// and ends the filling (the bytes are zeros either way).
    fn zero_fill<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        new: &mut NewSegment,
    ) -> MutexGuard<'a, State> {
        let (base, len) = (new.segment.base, new.segment.file.len());
        let mut done = 0usize;
        let mut idle = ZERO_IDLE_FIRST;
        st.zeroed = 0;
        while done < len {
            if st.stop || st.urgent == Some(base) || st.want.is_some() {
                return st;
            }
            if st.has_prefault_work() {
                st = self.prefault_step(st);
                continue;
            }
            let pays = self.fill_pays();
            if !pays && written_share(&st) >= 0.5 {
                break; // hand it over as it is (module doc)
            }
            if !pays || done >= zero_target(&st, len) {
                // A timer, not synchronization: re-reads the writer's progress and load.
                self.cv.wait_for(&mut st, idle);
                idle = (idle * 2).min(ZERO_IDLE_MAX);
                continue;
            }
            idle = ZERO_IDLE_FIRST;
            let n = ZERO_STEP.min(len - done);
            drop(st);
            let started = Instant::now();
            let res = new.writer.zero_durably(done, n);
            let took = started.elapsed();
            st = self.state.lock();
            if let Err(e) = res {
                let path = new.segment.file.path().display();
                tracing::warn!(path = %path, error = %e, "zero-filling a segment failed");
                return st;
            }
            done += n;
            st.zeroed = done as u64;
            // Leave the disk to the log's flushes for as long as the step took.
            let until = Instant::now() + took;
            while !(st.stop || st.urgent == Some(base)) {
                if self.cv.wait_until(&mut st, until).timed_out() {
                    break;
                }
            }
        }
        drop(st);
        if let Err(e) = new.writer.sync_data() {
            let path = new.segment.file.path().display();
            tracing::warn!(path = %path, error = %e, "syncing a zero-filled segment failed");
        }
        self.state.lock()
    }
}

/// How much of a `len`-byte segment being prepared should be zero-filled by now: twice the
/// written share of the active segment plus a sixteenth (all of it when nothing is active),
/// so the filling ends when the writer is about half-way and runs no faster than needed.
fn zero_target(st: &State, len: usize) -> usize {
    let share = (2.0 * written_share(st) + 1.0 / 16.0).min(1.0);
    (share * len as f64) as usize
}

/// Written share of the active segment (1 when nothing is active).
fn written_share(st: &State) -> f64 {
    match &st.active {
        Some(active) => active.file.published() as f64 / active.file.len().max(1) as f64,
        None => 1.0,
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
        let alloc = Arc::new(Allocator::new(
            dir.path().into(),
            8192,
            0,
            4096,
            false,
            faults,
        ));
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

    /// A zero-filling allocator for `seg`-byte segments running on its own thread, and the
    /// first segment, taken.
    fn started_zero_filling(
        seg: u64,
    ) -> (
        tempfile::TempDir,
        Arc<Allocator>,
        std::thread::JoinHandle<()>,
        NewSegment,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let alloc = Arc::new(Allocator::new(
            dir.path().into(),
            seg,
            0,
            0,
            true,
            FaultInjector::none(),
        ));
        // Flushes of several pages: the filling pays.
        alloc.note_flush(64 << 10);
        let a2 = alloc.clone();
        let t = std::thread::spawn(move || a2.run());
        alloc.request(0, false);
        alloc.wait_ready(0).unwrap();
        let first = alloc.take_ready(0).unwrap();
        (dir, alloc, t, first)
    }

    /// Polls `f` until it holds (deadline: a hung zero-fill fails the test, it does not hang).
    fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn zero_fill_follows_the_writer_and_yields_to_an_appender() {
        const SEG: u64 = 8 << 20;
        let (_dir, alloc, t, first) = started_zero_filling(SEG);
        alloc.set_active(first.segment.clone());
        // Nothing written yet: only the first sixteenth of the next segment is filled.
        alloc.request(SEG, true);
        eventually("the first sixteenth", || {
            alloc.state.lock().zeroed == SEG / 16
        });
        assert!(alloc.take_ready(SEG).is_none(), "handed over half-prepared");
        // The writer is half-way: the rest is filled and the segment handed over.
        first.writer.publish((SEG / 2) as usize);
        eventually("the whole segment", || {
            let st = alloc.state.lock();
            st.zeroed == SEG && st.ready.is_some()
        });
        let second = alloc.take_ready(SEG).unwrap();
        alloc.set_active(second.segment.clone());
        // An appender that needs the next one now does not wait for the filling.
        alloc.request(2 * SEG, true);
        eventually("a started fill", || alloc.state.lock().zeroed == SEG / 16);
        alloc.wait_ready(2 * SEG).unwrap();
        let third = alloc.take_ready(2 * SEG).unwrap();
        assert_eq!(alloc.state.lock().zeroed, SEG / 16);
        assert_eq!(third.writer.read(0, 4096).unwrap(), &[0u8; 4096][..]);
        drop((first, second, third));
        alloc.stop();
        t.join().unwrap();
    }

    #[test]
    fn zero_fill_pauses_while_flushes_are_small_and_resumes_under_load() {
        const SEG: u64 = 8 << 20;
        let (_dir, alloc, t, first) = started_zero_filling(SEG);
        alloc.set_active(first.segment.clone());
        // One-page flushes (a lone appender of small records): the average falls below a page.
        for _ in 0..64 {
            alloc.note_flush(1200);
        }
        assert!(!alloc.fill_pays());
        alloc.request(SEG, true);
        eventually("the filler to pick the request up", || {
            alloc.state.lock().busy == Some(SEG)
        });
        // It stays paused (it would have filled the first sixteenth at once otherwise); the
        // wait is bounded by the allocator's own idle timer, a few of its rounds.
        let deadline = Instant::now() + 3 * ZERO_IDLE_MAX;
        while Instant::now() < deadline {
            assert_eq!(
                alloc.state.lock().zeroed,
                0,
                "filled while flushes were small"
            );
            std::thread::yield_now();
        }
        // Load arrives (group commits of many records): the filling resumes.
        for _ in 0..64 {
            alloc.note_flush(64 << 10);
        }
        eventually("the first sixteenth", || {
            alloc.state.lock().zeroed == SEG / 16
        });
        // Load leaves again and the writer passes half-way: handed over without more zeros.
        for _ in 0..64 {
            alloc.note_flush(1200);
        }
        first.writer.publish((SEG / 2) as usize);
        eventually("the hand-over", || alloc.state.lock().ready.is_some());
        assert_eq!(alloc.state.lock().zeroed, SEG / 16);
        let second = alloc.take_ready(SEG).unwrap();
        assert_eq!(second.segment.base, SEG);
        drop((first, second));
        alloc.stop();
        t.join().unwrap();
    }

    #[test]
    fn a_late_waiter_does_not_recreate_a_taken_segment() {
        let (_dir, alloc, t, seg) = started_zero_filling(8192);
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
