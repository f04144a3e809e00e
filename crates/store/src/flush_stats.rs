//! How long the commit log's flushes (msync, on Linux an fdatasync of the range) take: a
//! fixed-bucket histogram of atomics that the flusher thread records into and monitoring reads
//! at any time. It costs the flusher a few relaxed atomic adds per round and keeps the store
//! free of any metrics library.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (an implicit `+Inf` bucket follows): 50 µs to 10 s.
pub const FSYNC_BUCKETS_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

const BUCKETS: usize = FSYNC_BUCKETS_SECONDS.len() + 1;

/// Flush durations recorded so far (since the store opened).
#[derive(Debug, Default)]
pub(crate) struct FsyncStats {
    /// Per bucket, not cumulative; the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl FsyncStats {
    /// Records one flush that took `took`.
    pub(crate) fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = FSYNC_BUCKETS_SECONDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts so far. Taken bucket by bucket while the flusher may record: a snapshot can
    /// miss a flush that lands while it is read, never count one twice.
    pub(crate) fn snapshot(&self) -> FsyncSnapshot {
        let mut count = 0u64;
        let mut buckets = Vec::with_capacity(BUCKETS);
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            count = count.saturating_add(n);
            let bound = FSYNC_BUCKETS_SECONDS
                .get(i)
                .copied()
                .unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        FsyncSnapshot {
            count,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

/// A histogram of commit-log flush durations, in the shape Prometheus exposes.
#[derive(Debug, Clone, PartialEq)]
pub struct FsyncSnapshot {
    /// Flushes recorded.
    pub count: u64,
    /// Their total duration, seconds.
    pub sum_seconds: f64,
    /// `(upper bound in seconds, flushes in this bucket)`: per bucket, not cumulative (as
    /// Prometheus clients take them; they add them up when exposing), ending with `+Inf`.
    /// The counts add up to `count`.
    pub buckets: Vec<(f64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_each_flush_once() {
        let s = FsyncStats::default();
        s.record(Duration::from_micros(10));
        s.record(Duration::from_micros(100));
        s.record(Duration::from_millis(3));
        s.record(Duration::from_secs(60));
        let snap = s.snapshot();
        assert_eq!(snap.count, 4);
        assert_eq!(snap.buckets.len(), FSYNC_BUCKETS_SECONDS.len() + 1);
        assert_eq!(snap.buckets[0], (0.000_05, 1));
        // 100 µs is at the 100 µs bound (bounds are inclusive, as Prometheus' `le`).
        assert_eq!(snap.buckets[1], (0.000_1, 1));
        assert_eq!(snap.buckets[5].1, 0);
        assert_eq!(snap.buckets[6], (0.005, 1));
        assert_eq!(snap.buckets[15], (10.0, 0));
        let last = snap.buckets.last().copied().unwrap();
        assert!(last.0.is_infinite());
        assert_eq!(last.1, 1);
        assert_eq!(snap.buckets.iter().map(|b| b.1).sum::<u64>(), snap.count);
        assert!((snap.sum_seconds - 60.00311).abs() < 1e-9);
    }

    #[test]
    fn bounds_increase() {
        assert!(FSYNC_BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }
}
