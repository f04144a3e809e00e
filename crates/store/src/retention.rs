//! Retention: deletes the oldest commit-log segments, then the consume-queue entries, index
//! files and tombstones below the log's new minimum.
//!
//! A segment may go when every record in it is older than `retention` or when the file system
//! is fuller than `disk_use_ratio_limit`. Its age is bounded by the store timestamp of the
//! first record of the *next* segment (store timestamps never decrease along the log), which
//! is exact enough and needs no per-segment bookkeeping. Never deleted: the last segment, and
//! any segment the dispatcher has not finished with.

use crate::clock::now_ms;
use crate::commit_log::CommitLog;
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::index::Index;
use crate::mmap::disk_space;
use crate::queue_registry::QueueRegistry;
use crate::record::{self, HEADER_LEN};
use crate::segment::Segment;
use rocketlog_common::PhysicalOffset;

/// What retention prunes, lent by the store for one pass.
pub(crate) struct Scope<'a> {
    pub config: &'a StoreConfig,
    pub log: &'a CommitLog,
    /// Segments ending at or below this position are done with by the dispatcher.
    pub dispatched: u64,
    pub queues: &'a QueueRegistry,
    pub index: &'a Index,
}

/// What one retention run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    /// Commit-log segments deleted.
    pub segments_deleted: usize,
    /// First byte of the log still on disk afterwards.
    pub log_min: PhysicalOffset,
}

fn first_store_ts(seg: &Segment) -> Option<i64> {
    record::peek_store_timestamp(seg.file.read(0, HEADER_LEN)?).ok()
}

/// Bytes to free so the file system drops to the configured use ratio.
fn bytes_over_limit(config: &StoreConfig) -> u64 {
    match disk_space(&config.data_dir) {
        Ok(s) => {
            // Deleting moves bytes from used to available: the capacity stays.
            let capacity = s.used.saturating_add(s.available);
            let limit = (capacity as f64 * config.disk_use_ratio_limit) as u64;
            let over = s.used.saturating_sub(limit);
            if over > 0 {
                tracing::warn!(
                    use_ratio = s.use_ratio(),
                    limit = config.disk_use_ratio_limit,
                    "disk use above the limit: deleting the oldest commit-log segments"
                );
            }
            over
        }
        Err(e) => {
            tracing::warn!(error = %e, "statvfs failed; retention by disk use skipped");
            0
        }
    }
}

/// One retention pass.
pub(crate) fn run(core: Scope<'_>) -> Result<RetentionReport, StoreError> {
    let retention_ms = i64::try_from(core.config.retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms().saturating_sub(retention_ms);
    let mut to_free = bytes_over_limit(core.config);
    let dispatched = core.dispatched;
    let mut deleted = 0;
    while let Some(seg) = core.log.remove_oldest_if(|old, next| {
        let expired = first_store_ts(next).is_some_and(|ts| ts < cutoff);
        old.end() <= dispatched && (expired || to_free > 0)
    }) {
        to_free = to_free.saturating_sub(seg.file.len() as u64);
        let path = seg.file.path().to_path_buf();
        // Readers that still hold the segment keep their mapping; unlink frees the space when
        // the last one drops it.
        drop(seg);
        std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        tracing::info!(path = %path.display(), "retention deleted commit-log segment");
        deleted += 1;
    }
    let log_min = core.log.min_offset();
    if deleted > 0 {
        core.queues.truncate_below(log_min)?;
        core.index.delete_below(log_min)?;
    }
    Ok(RetentionReport {
        segments_deleted: deleted,
        log_min: PhysicalOffset(log_min),
    })
}
