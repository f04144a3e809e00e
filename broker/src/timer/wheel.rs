//! The timer's core, without threads or the store: where an entry goes, which buckets are
//! loaded, what fires next, and the cursor.
//!
//! Invariants:
//! - `cursor`: every entry with `fire_ms <= cursor` that was inserted or loaded has been handed
//!   out by [`Wheel::pop_due`] (or skipped as cancelled);
//! - buckets starting below `loaded_until` are in memory (`due`); entries inserted for them go
//!   to memory directly, and to their file too unless they are already due;
//! - at most `max_loaded` entries are loaded ahead of time: further buckets wait, so memory is
//!   bounded by what fires soon, not by what is pending.

use std::collections::{BTreeMap, HashSet};

use super::bucket::BucketDir;
use super::entry::{Entry, EntryKind};
use super::TimerError;

/// Buckets are loaded this long before their start, so their entries fire on time.
pub const LOOKAHEAD_MS: i64 = 1_000;

#[derive(Debug)]
pub struct Wheel {
    buckets: BucketDir,
    /// Loaded schedule entries by `(fire_ms, phys)` (duplicates from a rescan collapse).
    due: BTreeMap<(i64, u64), Entry>,
    /// Recalled messages `(deliver_ms, origin)` among the loaded buckets.
    cancelled: HashSet<(i64, u64)>,
    loaded_until: i64,
    cursor: i64,
    max_loaded: usize,
}

impl Wheel {
    /// A wheel over `buckets` that has fired everything up to `cursor`.
    pub fn new(buckets: BucketDir, cursor: i64, max_loaded: usize) -> Wheel {
        let loaded_until = buckets.bucket_of(cursor.saturating_add(1));
        Wheel {
            buckets,
            due: BTreeMap::new(),
            cancelled: HashSet::new(),
            loaded_until,
            cursor,
            max_loaded: max_loaded.max(1),
        }
    }

    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Entries in memory.
    pub fn loaded(&self) -> usize {
        self.due.len()
    }

    /// Bucket files on disk.
    pub fn bucket_files(&self) -> usize {
        self.buckets.file_count()
    }

    /// When the next loaded entry fires.
    pub fn next_fire(&self) -> Option<i64> {
        self.due.first_key_value().map(|(k, _)| k.0)
    }

    /// Adds an entry read from the log (again, after a restart: duplicates are harmless).
    pub fn insert(&mut self, e: Entry) {
        if e.fire_ms > self.cursor {
            self.buckets.push(&e);
        }
        if e.fire_ms < self.loaded_until {
            self.admit(e);
        }
    }

    fn admit(&mut self, e: Entry) {
        match e.kind {
            EntryKind::Schedule => {
                self.due.insert((e.fire_ms, e.phys), e);
            }
            EntryKind::Cancel => {
                self.cancelled.insert(e.target());
            }
        }
    }

    /// Loads the buckets that start by `now + LOOKAHEAD_MS`, in order, while fewer than
    /// `max_loaded` entries are in memory.
    pub fn load_until(&mut self, now: i64) -> Result<(), TimerError> {
        let horizon = now.saturating_add(LOOKAHEAD_MS);
        let width = self.buckets.width_ms();
        while self.loaded_until <= horizon && self.due.len() < self.max_loaded {
            match self.buckets.next_file(self.loaded_until) {
                Some(start) if start <= horizon => {
                    for e in self.buckets.load(start)? {
                        // Entries at or before the cursor fired before a restart.
                        if e.fire_ms > self.cursor && e.fire_ms >= start {
                            self.admit(e);
                        }
                    }
                    self.loaded_until = start.saturating_add(width);
                }
                // No file before the horizon: nothing to load up to it.
                _ => {
                    self.loaded_until = self.buckets.bucket_of(horizon).saturating_add(width);
                }
            }
        }
        Ok(())
    }

    /// The next entry due by `now`, in `(fire_ms, phys)` order; recalled messages are skipped.
    pub fn pop_due(&mut self, now: i64) -> Option<Entry> {
        loop {
            let (&(fire, _), _) = self.due.first_key_value()?;
            if fire > now {
                return None;
            }
            let (_, e) = self.due.pop_first()?;
            if !self.cancelled.contains(&e.target()) {
                return Some(e);
            }
        }
    }

    /// Returns an entry that could not be fired; it is the first due again.
    pub fn unpop(&mut self, e: Entry) {
        self.due.insert((e.fire_ms, e.phys), e);
    }

    /// Moves the cursor as far as everything due by `now` has fired.
    pub fn advance(&mut self, now: i64) {
        let mut c = now.min(self.loaded_until.saturating_sub(1));
        if let Some(first) = self.next_fire() {
            c = c.min(first.saturating_sub(1));
        }
        if c > self.cursor {
            self.cursor = c;
            self.cancelled.retain(|&(deliver, _)| deliver > c);
        }
    }

    /// Writes queued entries to their files.
    pub fn write(&mut self) -> Result<(), TimerError> {
        self.buckets.write()
    }

    /// Makes every entry written so far durable.
    pub fn sync(&mut self) -> Result<(), TimerError> {
        self.buckets.sync()
    }

    /// Deletes the bucket files whose entries all fire at or before `cursor` (call once a
    /// checkpoint with that cursor is durable).
    pub fn release(&mut self, cursor: i64) -> Result<usize, TimerError> {
        self.buckets.remove_before(cursor.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 1_000;

    fn sched(fire: i64, phys: u64) -> Entry {
        Entry {
            fire_ms: fire,
            deliver_ms: fire,
            phys,
            origin: phys,
            size: 1,
            kind: EntryKind::Schedule,
        }
    }

    fn cancel(deliver: i64, origin: u64, phys: u64) -> Entry {
        Entry {
            fire_ms: deliver,
            deliver_ms: deliver,
            phys,
            origin,
            size: 1,
            kind: EntryKind::Cancel,
        }
    }

    fn wheel(dir: &std::path::Path, cursor: i64, max: usize) -> Wheel {
        Wheel::new(BucketDir::open(dir, W).unwrap(), cursor, max)
    }

    /// Runs the wheel from `from` to `to` in steps, returning what fired with the time.
    fn run(w: &mut Wheel, from: i64, to: i64, step: i64) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        let mut now = from;
        while now <= to {
            w.load_until(now).unwrap();
            while let Some(e) = w.pop_due(now) {
                assert!(e.fire_ms <= now, "fired early");
                out.push((now, e.phys));
            }
            w.advance(now);
            now += step;
        }
        out
    }

    #[test]
    fn fires_in_time_order_at_or_after_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = wheel(dir.path(), 0, 1_000);
        // Out of order, across buckets, some far ahead.
        for (fire, phys) in [(5_500, 1), (1_200, 2), (9_999, 3), (1_200, 4), (3_000, 5)] {
            w.insert(sched(fire, phys));
        }
        w.write().unwrap();
        let fired = run(&mut w, 0, 12_000, 10);
        let order: Vec<u64> = fired.iter().map(|f| f.1).collect();
        assert_eq!(order, [2, 4, 5, 1, 3]);
        for (at, phys) in fired {
            let want = [(1, 5_500), (2, 1_200), (3, 9_999), (4, 1_200), (5, 3_000)]
                .iter()
                .find(|x| x.0 == phys)
                .unwrap()
                .1;
            assert!(
                at >= want && at < want + 10,
                "{phys} fired at {at}, due {want}"
            );
        }
        assert_eq!(w.cursor(), 12_000);
    }

    #[test]
    fn only_buckets_about_to_fire_are_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = wheel(dir.path(), 0, 1_000_000);
        for i in 0..10_000u64 {
            // Spread over 100 s, ten buckets per 10 s.
            w.insert(sched(5_000 + (i as i64 * 10), i));
        }
        w.write().unwrap();
        w.load_until(0).unwrap();
        assert_eq!(w.loaded(), 0, "nothing is due within the lookahead");
        w.load_until(4_500).unwrap();
        assert_eq!(w.loaded(), 100, "one bucket of 100 entries");
        assert!(w.bucket_files() >= 100);
    }

    #[test]
    fn max_loaded_bounds_memory_and_everything_still_fires() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = wheel(dir.path(), 0, 50);
        for i in 0..500u64 {
            w.insert(sched(1_000 + (i as i64 % 5) * W + i as i64 % 7, i));
        }
        w.write().unwrap();
        // A long pause: everything is due at once; it loads bucket by bucket.
        w.load_until(60_000).unwrap();
        assert!(w.loaded() <= 150, "{} loaded", w.loaded());
        let mut fired = 0;
        for _ in 0..20 {
            w.load_until(60_000).unwrap();
            while w.pop_due(60_000).is_some() {
                fired += 1;
            }
            w.advance(60_000);
        }
        assert_eq!(fired, 500);
    }

    #[test]
    fn restart_from_cursor_reloads_pending_and_skips_fired() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = wheel(dir.path(), 0, 1_000);
        for (fire, phys) in [(1_100, 1), (1_500, 2), (1_900, 3), (7_000, 4)] {
            w.insert(sched(fire, phys));
        }
        w.sync().unwrap();
        let fired = run(&mut w, 0, 1_600, 100);
        assert_eq!(fired.iter().map(|f| f.1).collect::<Vec<_>>(), [1, 2]);
        let cursor = w.cursor();
        assert_eq!(cursor, 1_600);
        drop(w);
        // As after a restart: same files, checkpointed cursor; the rescan inserts again.
        let mut w = wheel(dir.path(), cursor, 1_000);
        w.insert(sched(1_900, 3));
        w.insert(sched(1_500, 2)); // at or before the cursor: fired already, not in a file
        let fired = run(&mut w, 1_700, 8_000, 100);
        assert_eq!(fired.iter().map(|f| f.1).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn recalled_messages_never_fire_even_across_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = wheel(dir.path(), 0, 1_000);
        w.insert(sched(3_000, 10));
        w.insert(sched(3_000, 11));
        w.insert(cancel(3_000, 10, 99));
        w.sync().unwrap();
        drop(w);
        let mut w = wheel(dir.path(), 0, 1_000);
        let fired = run(&mut w, 0, 4_000, 50);
        assert_eq!(fired.iter().map(|f| f.1).collect::<Vec<_>>(), [11]);
        // A recall that arrives while the bucket is loaded still wins.
        w.insert(sched(4_500, 12));
        w.load_until(4_000).unwrap();
        w.insert(cancel(4_500, 12, 100));
        assert!(run(&mut w, 4_100, 5_000, 50).is_empty());
    }

    #[test]
    fn late_entries_fire_at_once_and_released_files_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = wheel(dir.path(), 0, 1_000);
        run(&mut w, 0, 5_000, 100);
        w.insert(sched(4_000, 1)); // already due when seen
        assert_eq!(w.pop_due(5_000).map(|e| e.phys), Some(1));
        w.insert(sched(5_200, 2));
        w.insert(sched(9_200, 3));
        w.sync().unwrap();
        run(&mut w, 5_100, 6_000, 100);
        assert_eq!(w.release(w.cursor()).unwrap(), 1);
        assert_eq!(w.bucket_files(), 1);
    }
}
