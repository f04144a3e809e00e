//! Consumer lag over time, for the console's charts: every `lag_sample_interval_ms` the broker
//! samples the lag of every (group, topic, queue) into an in-memory ring covering
//! `lag_history_ms`. Nothing is written to disk; a restart starts an empty history.
//!
//! Memory: one `i64` per sample for the shared sample times, and one `u64` per sample per
//! queue a group has state on (about 1.9 KiB per queue for an hour at 15 s).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;

use crate::consumption::QueueLag;

/// A series' value at a sample time when the queue was not sampled then.
const ABSENT: u64 = u64::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    group: String,
    topic: String,
    queue_id: u32,
}

#[derive(Debug, Default)]
struct Rings {
    /// Sample times, ms since the Unix epoch, oldest first.
    times: VecDeque<i64>,
    /// Per series its lags, aligned with the newest `len()` entries of `times`.
    series: HashMap<SeriesKey, VecDeque<u64>>,
}

/// The lag history of one broker.
#[derive(Debug)]
pub struct LagHistory {
    interval: Duration,
    capacity: usize,
    rings: Mutex<Rings>,
}

/// One queue's lag samples, oldest first: `(time_ms, lag)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub topic: String,
    pub queue_id: u32,
    pub points: Vec<(i64, u64)>,
}

impl LagHistory {
    /// A history sampled every `interval` keeping `window` of samples (at least two).
    pub fn new(interval: Duration, window: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let capacity = usize::try_from(window.as_millis() / interval.as_millis())
            .unwrap_or(usize::MAX)
            .clamp(2, 100_000);
        LagHistory {
            interval,
            capacity,
            rings: Mutex::new(Rings::default()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Records one sample taken at `now_ms`: `(group, lag)` of every queue with state.
    pub fn record(&self, now_ms: i64, lags: &[(String, QueueLag)]) {
        let mut r = self.rings.lock();
        r.times.push_back(now_ms);
        if r.times.len() > self.capacity {
            r.times.pop_front();
        }
        let capacity = self.capacity;
        let mut seen = std::collections::HashSet::with_capacity(lags.len());
        for (group, q) in lags {
            let key = SeriesKey {
                group: group.clone(),
                topic: q.topic.clone(),
                queue_id: q.queue_id,
            };
            let ring = r.series.entry(key.clone()).or_default();
            ring.push_back(q.lag.min(ABSENT - 1));
            if ring.len() > capacity {
                ring.pop_front();
            }
            seen.insert(key);
        }
        // Queues no longer reported keep their past samples until those age out.
        r.series.retain(|key, ring| {
            if !seen.contains(key) {
                ring.push_back(ABSENT);
                if ring.len() > capacity {
                    ring.pop_front();
                }
            }
            ring.iter().any(|&v| v != ABSENT)
        });
    }

    /// The samples of every queue of `group`, ordered by topic and queue.
    pub fn group(&self, group: &str) -> Vec<Series> {
        let r = self.rings.lock();
        let mut keys: Vec<&SeriesKey> = r.series.keys().filter(|k| k.group == group).collect();
        keys.sort();
        keys.into_iter()
            .map(|key| {
                let ring = &r.series[key];
                let skip = r.times.len().saturating_sub(ring.len());
                let points = r
                    .times
                    .iter()
                    .skip(skip)
                    .zip(ring.iter())
                    .filter(|(_, &lag)| lag != ABSENT)
                    .map(|(&t, &lag)| (t, lag))
                    .collect();
                Series {
                    topic: key.topic.clone(),
                    queue_id: key.queue_id,
                    points,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocketlog_common::QueueOffset;

    fn lag(topic: &str, queue_id: u32, lag: u64) -> QueueLag {
        QueueLag {
            topic: topic.into(),
            queue_id,
            max_offset: QueueOffset(lag),
            committed_offset: QueueOffset(0),
            lag,
            in_flight: 0,
        }
    }

    #[test]
    fn keeps_the_window_and_aligns_late_and_vanished_queues() {
        let h = LagHistory::new(Duration::from_secs(1), Duration::from_secs(3));
        h.record(1_000, &[("g".into(), lag("T", 0, 5))]);
        h.record(
            2_000,
            &[("g".into(), lag("T", 0, 4)), ("g".into(), lag("T", 1, 9))],
        );
        h.record(
            3_000,
            &[
                ("g".into(), lag("T", 1, 8)),
                ("other".into(), lag("T", 0, 1)),
            ],
        );
        h.record(4_000, &[("g".into(), lag("T", 1, 7))]);
        let s = h.group("g");
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].topic.as_str(), s[0].queue_id), ("T", 0));
        // Window of 3 samples: 2 000, 3 000, 4 000; queue 0 was seen only at 2 000.
        assert_eq!(s[0].points, vec![(2_000, 4)]);
        assert_eq!(s[1].points, vec![(2_000, 9), (3_000, 8), (4_000, 7)]);
        assert_eq!(h.group("other")[0].points, vec![(3_000, 1)]);
        assert!(h.group("nobody").is_empty());
        // Once every sample of a series has aged out, the series goes.
        for t in 5..9 {
            h.record(t * 1_000, &[]);
        }
        assert!(h.group("g").is_empty());
    }
}
