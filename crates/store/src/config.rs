//! Store configuration. Every field has a documented default; [`StoreConfig::validate`] runs
//! once in `Store::open`.

use crate::error::StoreError;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// When appended bytes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Group commit: `PendingAppend::durable` resolves only after an fsync covering the record;
    /// one flusher thread serves every waiter of a batch with one msync. Consumers never see a
    /// record before it is durable.
    Sync,
    /// Periodic flush every `interval`; `PendingAppend::durable` resolves at once. A crash of
    /// the machine (not of the process) can lose up to one interval of acknowledged appends.
    Async {
        /// Time between two flushes.
        interval: Duration,
    },
}

impl Default for FlushMode {
    fn default() -> Self {
        FlushMode::Async {
            interval: Duration::from_millis(500),
        }
    }
}

/// Configuration of one store (one data directory).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root of all files: `commitlog/`, `consumequeue/`, `index/`, `checkpoint`, `LOCK`.
    pub data_dir: PathBuf,
    /// Size of each preallocated commit-log segment. Default 1 GiB. Must be the same on every
    /// open of a directory.
    pub segment_size: u64,
    /// Default `Async { interval: 500ms }`.
    pub flush_mode: FlushMode,
    /// Limit of body + encoded properties of one message. Default 4 MiB.
    pub max_message_size: usize,
    /// Entries per consume-queue file (20 bytes each). Default 300 000 (6 MB files).
    pub consume_queue_segment_entries: u32,
    /// Commit-log segments whose newest record is older than this are deleted. Default 72 h.
    pub retention: Duration,
    /// When the file system holding the data is fuller than this ratio, the oldest segments are
    /// deleted even if younger than `retention`. Default 0.85.
    pub disk_use_ratio_limit: f64,
    /// How often consume queues and the index are flushed and the checkpoint written; bounds
    /// how much of the log a restart after a crash re-reads. Default 1 s.
    pub checkpoint_interval: Duration,
    /// How often retention runs on its own. Default 10 s.
    pub retention_check_interval: Duration,
    /// Hash slots per new index file (4 bytes each). Default 250 007 (a prime near a quarter
    /// of the entries, so chains average four entries when a file is full).
    pub index_slots: u32,
    /// Entries per new index file (20 bytes each; a message takes one for its id and one per
    /// key). Default 1 000 000, so a file is about 21 MB. Existing files keep their own size.
    pub index_entries_per_file: u32,
    /// Bytes ahead of the write position that the allocator thread keeps pre-faulted, so
    /// appends copy into mapped pages instead of taking page faults (which cost more than the
    /// copy). Bounds the extra dirty memory (pre-faulted pages are dirty zeros until filled);
    /// a burst up to this size runs at memory speed. `Some(0)` turns it off. Default `None`:
    /// [`DEFAULT_ASYNC_PREFAULT_WINDOW`] in Async mode, 0 in Sync mode, where every append
    /// waits for an fsync that costs a thousand page faults and that would otherwise also wait
    /// behind the write-back of pre-faulted zeros.
    pub prefault_window: Option<u64>,
    /// Write each commit-log segment created ahead of the writer with zeros before use. A
    /// `posix_fallocate`d segment holds unwritten extents, and the first write to each block
    /// makes the next fsync also commit the file-system journal, so Sync-mode flushes cost
    /// more (measured on the 2-core dev VM: 64 KiB write + fdatasync 0.30-0.46 ms into an
    /// allocated region, 0.18-0.22 ms into a zero-filled one). The filling runs on the
    /// allocator thread in 256 KiB steps paced by the writer's progress and never delays an
    /// appender that needs the segment (see the `allocator` module). It writes every segment
    /// it fills twice, so it runs only while the log's flushes average more than a page
    /// (group commits of several records): a lone appender of small records gains little from
    /// it and would see each step that meets its fsync as a latency spike (store bench, one
    /// appender: p99 2.5-4.4x a bare fdatasync with the filling always on, 1.4-3.0x with it
    /// paused). Measured with the store bench, alternating runs on that VM: 1 Sync appender
    /// 4,879-6,390 → 6,876-7,691 records/s, 8 appenders 21-27k → 34-37k, 64 tokio tasks
    /// 121-135k → 145-153k (p50 0.45-0.50 → 0.31-0.33 ms; p99 0.69-0.85 → 0.97-1.01 ms).
    /// Default `None`: on in Sync mode, off in Async mode (whose flushes are rare and large,
    /// so the extra writes would only cost bandwidth). The first segment of an empty log is
    /// never zero-filled: the first append waits for it.
    pub zero_fill_segments: Option<bool>,
    /// Bytes of the commit log behind the committed end (and behind the dispatcher, if it
    /// lags) whose mapped pages stay in the process's resident set. Every
    /// `checkpoint_interval` the housekeeper releases the pages below (and those of every
    /// consume-queue file but each queue's newest) with `MADV_DONTNEED`: the data stays in
    /// the page cache and on disk, and reading it again maps it back on demand. Without it the
    /// resident set grows to the whole mapped log. `None` keeps every page mapped. Default
    /// `Some(`[`DEFAULT_RESIDENT_WINDOW`]`)`.
    pub resident_window: Option<u64>,
    /// Test seam: fails chosen I/O operations. Default: no faults.
    pub faults: FaultInjector,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("rocketlog-data/store"),
            segment_size: 1 << 30,
            flush_mode: FlushMode::default(),
            max_message_size: 4 << 20,
            consume_queue_segment_entries: 300_000,
            retention: Duration::from_secs(72 * 3600),
            disk_use_ratio_limit: 0.85,
            checkpoint_interval: Duration::from_secs(1),
            retention_check_interval: Duration::from_secs(10),
            index_slots: 250_007,
            index_entries_per_file: 1_000_000,
            prefault_window: None,
            zero_fill_segments: None,
            resident_window: Some(DEFAULT_RESIDENT_WINDOW),
            faults: FaultInjector::none(),
        }
    }
}

/// Pre-fault window of Async mode when `prefault_window` is `None`.
pub const DEFAULT_ASYNC_PREFAULT_WINDOW: u64 = 64 << 20;

/// Default `resident_window`: the recent log that the dispatcher and up-to-date consumers
/// read stays mapped.
pub const DEFAULT_RESIDENT_WINDOW: u64 = 64 << 20;

/// Smallest accepted segment size; anything smaller cannot hold a useful record.
pub const MIN_SEGMENT_SIZE: u64 = 4096;

impl StoreConfig {
    /// A config with defaults and the given directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            ..StoreConfig::default()
        }
    }

    /// The pre-fault window in effect (see `prefault_window`).
    pub fn effective_prefault_window(&self) -> u64 {
        match (self.prefault_window, self.flush_mode) {
            (Some(w), _) => w,
            (None, FlushMode::Sync) => 0,
            (None, FlushMode::Async { .. }) => DEFAULT_ASYNC_PREFAULT_WINDOW,
        }
    }

    /// Whether segments created ahead are zero-filled (see `zero_fill_segments`).
    pub fn effective_zero_fill(&self) -> bool {
        self.zero_fill_segments
            .unwrap_or(matches!(self.flush_mode, FlushMode::Sync))
    }

    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |reason: String| Err(StoreError::Config { reason });
        if self.segment_size < MIN_SEGMENT_SIZE || self.segment_size > (1 << 40) {
            return bad(format!(
                "segment_size {} must be in [{MIN_SEGMENT_SIZE}, 2^40]",
                self.segment_size
            ));
        }
        if usize::try_from(self.segment_size).is_err() {
            return bad("segment_size does not fit in memory addresses".into());
        }
        if self.consume_queue_segment_entries == 0 {
            return bad("consume_queue_segment_entries must be > 0".into());
        }
        if self.index_slots == 0 || self.index_entries_per_file == 0 {
            return bad("index_slots and index_entries_per_file must be > 0".into());
        }
        if !(0.0..=1.0).contains(&self.disk_use_ratio_limit) {
            return bad(format!(
                "disk_use_ratio_limit {} must be in [0, 1]",
                self.disk_use_ratio_limit
            ));
        }
        if let FlushMode::Async { interval } = self.flush_mode {
            if interval.is_zero() {
                return bad("async flush interval must be > 0".into());
            }
        }
        if self.checkpoint_interval.is_zero() || self.retention_check_interval.is_zero() {
            return bad("checkpoint and retention intervals must be > 0".into());
        }
        Ok(())
    }
}

/// A place where the store does I/O that a test may want to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoPoint {
    /// Creating and preallocating the commit-log segment starting at `base`.
    PreallocateSegment {
        /// Physical offset of the segment's first byte.
        base: u64,
    },
    /// Flushing (msync) a range of the commit log.
    FlushLog,
    /// Creating the index file whose first record is at physical offset `begin`.
    CreateIndexFile {
        /// Physical offset of the first record the file indexes.
        begin: u64,
    },
}

type FaultFn = dyn Fn(IoPoint) -> Option<io::Error> + Send + Sync;

/// Test seam for I/O failures: a function asked before each [`IoPoint`]; returning an error
/// makes that operation fail with it. The default injects nothing.
#[derive(Clone, Default)]
pub struct FaultInjector(Option<Arc<FaultFn>>);

impl FaultInjector {
    /// Injects no faults.
    pub fn none() -> Self {
        FaultInjector(None)
    }

    /// Asks `f` before every [`IoPoint`].
    pub fn new(f: impl Fn(IoPoint) -> Option<io::Error> + Send + Sync + 'static) -> Self {
        FaultInjector(Some(Arc::new(f)))
    }

    pub(crate) fn check(&self, point: IoPoint) -> io::Result<()> {
        match self.0.as_ref().and_then(|f| f(point)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "FaultInjector(active)"
        } else {
            "FaultInjector(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = StoreConfig::default();
        assert_eq!(c.segment_size, 1 << 30);
        assert_eq!(c.max_message_size, 4 << 20);
        assert_eq!(c.consume_queue_segment_entries, 300_000);
        assert_eq!(c.retention, Duration::from_secs(72 * 3600));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn rejects_impossible_values() {
        let mut c = StoreConfig::new("x");
        c.segment_size = 100;
        assert!(matches!(c.validate(), Err(StoreError::Config { .. })));
        let mut c = StoreConfig::new("x");
        c.disk_use_ratio_limit = 1.5;
        assert!(matches!(c.validate(), Err(StoreError::Config { .. })));
    }
}
