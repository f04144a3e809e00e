//! Opening a data directory: lock it, recover the log, reopen and repair the derived data
//! (consume queues, index), replay the log past the checkpoint, and write a fresh checkpoint.

use crate::allocator::Allocator;
use crate::checkpoint;
use crate::commit_log::{offsets_from, CommitLog, QueueOffsets};
use crate::config::{FlushMode, StoreConfig};
use crate::consume_queue::CqEntry;
use crate::core::{Core, RUNNING};
use crate::dispatcher::{DispatchState, Dispatcher, Snapshot};
use crate::error::StoreError;
use crate::flush::Flusher;
use crate::index::{Index, IndexConfig};
use crate::mmap::lock_exclusive;
use crate::queue_registry::QueueRegistry;
use crate::record::{self, Record};
use crate::recovery::recover_log;
use crate::segment::sync_dir;
use crate::wake::Wake;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::Arc;

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))
}

/// Takes the data directory's `LOCK` (held until the file is dropped): `Locked` if another
/// store holds it.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    match lock_exclusive(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(StoreError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Does the consume-queue entry `queue_offset` of (topic, queue) point at its record?
fn entry_matches(
    log: &CommitLog,
    topic: &str,
    queue_id: u32,
    e: &CqEntry,
    queue_offset: u64,
) -> bool {
    if e.physical_offset < log.min_offset() {
        return true; // deleted by retention: cannot check, and never read
    }
    log.with_record(e.physical_offset, |bytes, _| {
        match record::decode_trusted(bytes) {
            Ok(Record::Message(v)) => {
                v.topic == topic
                    && v.queue_id == queue_id
                    && v.queue_offset == queue_offset
                    && v.size == e.size
            }
            _ => false,
        }
    })
    .unwrap_or(false)
}

/// Builds the shared state of an open store (threads are started by the caller).
pub(crate) fn open_core(config: StoreConfig) -> Result<Core, StoreError> {
    config.validate()?;
    let data_dir = config.data_dir.clone();
    let log_dir = data_dir.join("commitlog");
    create_dir(&log_dir)?;
    sync_dir(&data_dir)?;
    let lock_file = lock_dir(&data_dir)?;
    let cp = checkpoint::read(&data_dir)
        .map_err(|e| StoreError::io(&data_dir.join(checkpoint::FILE_NAME), e))?;

    let rec = recover_log(&log_dir, config.segment_size, cp.as_ref())?;
    let end = rec.end;
    let log_min = rec.segments.first().map_or(end, |s| s.base);
    let replay_start = cp.map_or(log_min, |c| c.dispatched).clamp(log_min, end);
    // Below `replay_start` only if the index lagged behind the queues (no room for it).
    let index_start = cp
        .map_or(log_min, |c| c.indexed)
        .clamp(log_min, replay_start);
    let allocator = Arc::new(Allocator::new(
        log_dir,
        config.segment_size,
        config.derived_reserve(),
        config.effective_prefault_window(),
        config.effective_zero_fill(),
        config.faults.clone(),
    ));
    let log = CommitLog::new(
        config.segment_size,
        config.flush_mode == FlushMode::Sync,
        allocator.clone(),
        rec,
        QueueOffsets::new(),
    );

    let valid = |t: &str, q: u32, e: &CqEntry, i: u64| entry_matches(&log, t, q, e, i);
    let queues = QueueRegistry::open(
        &data_dir,
        u64::from(config.consume_queue_segment_entries),
        replay_start,
        &valid,
    )?;
    queues.truncate_below(log_min)?;
    let index = Index::open(
        data_dir.join("index"),
        IndexConfig {
            slots: config.index_slots,
            capacity: config.index_entries_per_file,
            keep_free: config.index_keep_free(),
            faults: config.faults.clone(),
        },
        cp.as_ref(),
        index_start,
    )?;

    // Everything recovered is on disk before anyone may read it (Sync mode promises that).
    let flushed_before = cp.map_or(log_min, |c| c.flushed).clamp(log_min, end);
    log.flush(flushed_before, end)?;
    let flusher = Flusher::new(config.flush_mode, config.faults.clone(), end);

    let (index_file, index_entries) = index.batch().snapshot();
    let dispatch = DispatchState::new(Snapshot {
        dispatched: replay_start,
        indexed: index_start,
        index_file,
        index_entries,
    });
    let mut d = Dispatcher::new(&log, &queues, &index);
    let mut pos = replay_start;
    while pos < end {
        pos = d.step(&dispatch, pos, end)?;
    }
    drop(d);
    log.with_append_lock(|offsets, _| *offsets = offsets_from(queues.next_offsets()));
    if replay_start < end {
        tracing::info!(
            from = replay_start,
            to = end,
            "replayed the log into consume queues and index"
        );
    }
    if index_start < replay_start {
        // The background dispatcher indexes the rest; lookups scan it meanwhile.
        tracing::info!(
            from = index_start,
            to = replay_start,
            "the index lags behind the consume queues; it catches up in the background"
        );
    }

    let core = Core {
        config,
        log,
        allocator,
        flusher,
        queues,
        index,
        dispatch,
        housekeeping: Wake::default(),
        stop: AtomicU8::new(RUNNING),
        closed: AtomicBool::new(false),
        replica: AtomicBool::new(false),
        checkpoint_poisoned: AtomicBool::new(false),
        checkpoint_lock: Mutex::new(()),
        lock_file: Mutex::new(Some(lock_file)),
    };
    // From now on a crash is recovered from here, and is recognised as a crash.
    core.checkpoint(false)?;
    Ok(core)
}
