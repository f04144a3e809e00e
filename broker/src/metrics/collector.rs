//! What a scrape computes on the spot, from the parts of the broker that already know it:
//! consumer lag and in-flight counts (the same computation as `admin group describe`:
//! [`Consumption::describe_all`]), dead-letter moves, pending delayed messages, open
//! transactions, the store's offsets, size, disk use and fsync durations, replication lag and
//! open client connections. Nothing here runs on the request path.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use rocketlog_store::Store;
use rocketlog_transport::ConnectionCount;

use crate::consumption::Consumption;
use crate::replication::GroupRole;
use crate::timer::Timer;
use crate::transaction::Transactions;

/// The parts of a broker a scrape reads.
#[derive(Debug, Clone)]
pub struct Sources {
    pub store: Store,
    pub consumption: Consumption,
    pub timer: Arc<Timer>,
    pub transactions: Transactions,
    pub role: Arc<GroupRole>,
    /// Open connections of the client port.
    pub connections: ConnectionCount,
    /// The store's directory (its size is `rocketmq_storage_size_bytes`).
    pub store_dir: PathBuf,
}

#[derive(Debug)]
pub(super) struct BrokerCollector {
    storage: Arc<StorageSize>,
    sources: Sources,
}

impl BrokerCollector {
    pub(super) fn new(sources: Sources) -> Self {
        BrokerCollector {
            storage: Arc::new(StorageSize::new(sources.store_dir.clone())),
            sources,
        }
    }
}

/// How old the storage size may be before a scrape starts measuring it again.
const STORAGE_SIZE_MAX_AGE: Duration = Duration::from_secs(30);

/// The store's disk usage, measured by walking its directory: a `stat` per file, about 25 ms
/// per 1,000 files, too slow to repeat on every scrape of a broker with thousands of queues.
/// The first scrape measures it; later ones report the last measurement and, once it is older
/// than `STORAGE_SIZE_MAX_AGE`, have a background thread measure it again.
#[derive(Debug)]
pub struct StorageSize {
    dir: PathBuf,
    last: Mutex<Option<(Instant, u64)>>,
    measuring: AtomicBool,
}

impl StorageSize {
    pub fn new(dir: PathBuf) -> Self {
        StorageSize {
            dir,
            last: Mutex::new(None),
            measuring: AtomicBool::new(false),
        }
    }

    pub fn get(self: &Arc<Self>) -> u64 {
        let last = *self.last.lock();
        let Some((at, bytes)) = last else {
            let bytes = disk_usage(&self.dir);
            *self.last.lock() = Some((Instant::now(), bytes));
            return bytes;
        };
        if at.elapsed() > STORAGE_SIZE_MAX_AGE && !self.measuring.swap(true, Ordering::AcqRel) {
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("rocketlog-metrics-du".into())
                .spawn(move || {
                    let bytes = disk_usage(&me.dir);
                    *me.last.lock() = Some((Instant::now(), bytes));
                    me.measuring.store(false, Ordering::Release);
                });
            if spawned.is_err() {
                self.measuring.store(false, Ordering::Release);
            }
        }
        bytes
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl Into<f64>,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value.into());
    let m = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    g.encode(m)
}

fn to_i64(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.sources;
        self.encode_consumption(&mut encoder)?;

        let delayed = ConstGauge::new(to_i64(s.timer.pending_estimate()));
        delayed.encode(encoder.encode_descriptor(
            "rocketlog_delayed_messages",
            "Delayed messages not yet due (estimated from the timer's bucket files)",
            None,
            MetricType::Gauge,
        )?)?;
        let open = ConstGauge::new(to_i64(s.transactions.open_count()));
        open.encode(encoder.encode_descriptor(
            "rocketlog_transactions_open",
            "Transactional half messages awaiting commit or rollback",
            None,
            MetricType::Gauge,
        )?)?;

        self.encode_store(&mut encoder)?;
        self.encode_replication(&mut encoder)?;

        let conns = ConstGauge::new(to_i64(s.connections.get()));
        conns.encode(encoder.encode_descriptor(
            "rocketlog_client_connections",
            "Open connections on the client port",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

impl BrokerCollector {
    fn encode_consumption(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let progress = self.sources.consumption.describe_all();
        {
            let mut lag = encoder.encode_descriptor(
                "rocketmq_consumer_lag_messages",
                "Queue end offset minus the consumer group's committed offset",
                None,
                MetricType::Gauge,
            )?;
            for (group, q) in &progress {
                let queue_id = q.queue_id.to_string();
                let labels = [
                    ("topic", q.topic.as_str()),
                    ("consumer_group", group.as_str()),
                    ("queue_id", queue_id.as_str()),
                ];
                ConstGauge::new(to_i64(q.lag)).encode(lag.encode_family(&labels)?)?;
            }
        }
        {
            let mut in_flight: BTreeMap<(&str, &str), usize> = BTreeMap::new();
            for (group, q) in &progress {
                *in_flight
                    .entry((q.topic.as_str(), group.as_str()))
                    .or_default() += q.in_flight;
            }
            let mut m = encoder.encode_descriptor(
                "rocketmq_consumer_inflight_messages",
                "Messages delivered and invisible, not yet acknowledged",
                None,
                MetricType::Gauge,
            )?;
            for ((topic, group), n) in in_flight {
                let labels = [("topic", topic), ("consumer_group", group)];
                ConstGauge::new(to_i64(n)).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut dlq = encoder.encode_descriptor(
            "rocketmq_send_to_dlq_messages",
            "Messages moved to a consumer group's dead-letter topic",
            None,
            MetricType::Counter,
        )?;
        for (group, n) in self.sources.consumption.dead_lettered() {
            let labels = [("consumer_group", group.as_str())];
            ConstCounter::new(n).encode(dlq.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn encode_store(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let store = &self.sources.store;
        let (min, max) = store.log_range();
        let flushed = store.flushed_offset().0;
        let dispatched = store.index_status().dispatched.0;
        let bytes = Unit::Bytes;
        for (name, help, v) in [
            (
                "rocketlog_commitlog_min_offset",
                "First commit-log byte still on disk",
                min.0,
            ),
            (
                "rocketlog_commitlog_max_offset",
                "End of the written commit log",
                max.0,
            ),
            (
                "rocketlog_commitlog_flushed_offset",
                "Commit-log bytes below this are on disk",
                flushed,
            ),
            (
                "rocketlog_commitlog_dispatched_offset",
                "Commit-log bytes below this are in the consume queues",
                dispatched,
            ),
        ] {
            let g = ConstGauge::new(to_i64(v));
            g.encode(encoder.encode_descriptor(name, help, Some(&bytes), MetricType::Gauge)?)?;
        }
        let size = ConstGauge::new(to_i64(self.storage.get()));
        size.encode(encoder.encode_descriptor(
            "rocketmq_storage_size",
            "Disk space taken by the store's files (measured at most every 30 s)",
            Some(&bytes),
            MetricType::Gauge,
        )?)?;
        let behind = ConstGauge::new(to_i64(max.0.saturating_sub(flushed)));
        behind.encode(encoder.encode_descriptor(
            "rocketmq_storage_flush_behind",
            "Commit-log bytes written but not yet flushed",
            Some(&bytes),
            MetricType::Gauge,
        )?)?;
        if let Some(ratio) = store.disk_used_ratio() {
            gauge(
                encoder,
                "rocketlog_disk_used_ratio",
                "Share of the store's file system in use (as df's Use%)",
                None,
                ratio,
            )?;
        }
        let fsync = store.fsync_stats();
        let mut m = encoder.encode_descriptor(
            "rocketlog_fsync_duration",
            "Duration of each commit-log flush (msync / fdatasync)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        m.encode_histogram::<NoLabelSet>(
            fsync.sum_seconds,
            fsync.count,
            &fsync.buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn encode_replication(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let role = &self.sources.role;
        let mut lags: Vec<(u64, u64)> = role
            .slaves()
            .into_iter()
            .map(|s| (s.broker_id, s.lag_bytes))
            .collect();
        if let Some((f, _)) = role.follower_status() {
            lags.push((
                role.broker_id(),
                f.master_end_offset.saturating_sub(f.durable_offset),
            ));
        }
        let mut m = encoder.encode_descriptor(
            "rocketlog_replication_lag",
            "On a master: bytes each connected slave does not hold durably yet; on a slave: \
             its own distance behind the master's log end",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        for (id, lag) in lags {
            let id = id.to_string();
            let labels = [("broker_id", id.as_str())];
            ConstGauge::new(to_i64(lag)).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Bytes of disk the files under `dir` take (allocated blocks), walked without following
/// symbolic links. Unreadable entries count as nothing.
pub(super) fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(items) = std::fs::read_dir(&d) else {
            continue;
        };
        for item in items.flatten() {
            let Ok(meta) = item.metadata() else { continue };
            if meta.is_dir() {
                pending.push(item.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.blocks().saturating_mul(512));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_counts_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(disk_usage(dir.path()), 0);
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), vec![1u8; 10_000]).unwrap();
        std::fs::write(dir.path().join("g"), vec![1u8; 5_000]).unwrap();
        let used = disk_usage(dir.path());
        assert!(used >= 15_000, "{used}");
        assert_eq!(disk_usage(&dir.path().join("missing")), 0);
    }
}
