//! The shared state behind a `Store` handle and the loops of its background threads
//! (allocator, flusher, dispatcher, housekeeper). Threads hold an `Arc<Core>`; the `Store`
//! handles own the thread handles, so dropping the last handle stops and joins them.

use crate::allocator::Allocator;
use crate::checkpoint::{self, Checkpoint};
use crate::commit_log::CommitLog;
use crate::config::{FlushMode, StoreConfig};
use crate::dispatcher::{DispatchState, Dispatcher};
use crate::error::StoreError;
use crate::flush::Flusher;
use crate::index::Index;
use crate::queue_registry::QueueRegistry;
use crate::retention::{self, RetentionReport};
use crate::wake::{Wake, NAP};
use parking_lot::Mutex;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Stop request for the dispatcher and the housekeeper.
pub(crate) const RUNNING: u8 = 0;
/// Finish the work at hand, then exit (shutdown).
pub(crate) const DRAIN: u8 = 1;
/// Exit now (dropped without shutdown).
pub(crate) const ABORT: u8 = 2;

/// Back-off before the dispatcher retries after an error (e.g. no space for a queue file).
const DISPATCH_RETRY: Duration = Duration::from_millis(200);
/// Back-off before a lagging index tries again to catch up after a failure.
const INDEX_RETRY: Duration = Duration::from_secs(1);
/// While dispatching keeps failing the same way, the error is repeated in the log this often.
const DISPATCH_ERROR_REPEAT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Core {
    pub config: StoreConfig,
    pub log: CommitLog,
    pub allocator: std::sync::Arc<Allocator>,
    pub flusher: Flusher,
    pub queues: QueueRegistry,
    pub index: Index,
    pub dispatch: DispatchState,
    pub housekeeping: Wake,
    pub stop: AtomicU8,
    /// Set by shutdown or drop: every public call then fails with `ShutDown`.
    pub closed: AtomicBool,
    /// The store follows another log: [`crate::Store::append`] is refused, replicated bytes
    /// are appended instead.
    pub replica: AtomicBool,
    /// A flush of derived data failed. After a failed msync the kernel may have dropped the
    /// dirty pages and will not report it again, so no later checkpoint may claim them
    /// durable: recovery then replays from the last good checkpoint.
    pub checkpoint_poisoned: AtomicBool,
    pub checkpoint_lock: Mutex<()>,
    /// Holds the data directory's flock while the store is open.
    pub lock_file: Mutex<Option<File>>,
}

pub(crate) use crate::clock::now_ms;

impl Core {
    /// One retention pass over the parts of the store it prunes.
    pub(crate) fn run_retention(&self) -> Result<RetentionReport, StoreError> {
        retention::run(retention::Scope {
            config: &self.config,
            log: &self.log,
            dispatched: self.dispatch.position(),
            queues: &self.queues,
            index: &self.index,
        })
    }

    pub(crate) fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        Ok(())
    }

    fn stop_state(&self) -> u8 {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn request_stop(&self, how: u8) {
        self.stop.store(how, Ordering::SeqCst);
        self.dispatch.wake.notify_always();
        self.housekeeping.notify_always();
    }

    /// How far the dispatcher may go: the flushed end in Sync mode (consumers never see a
    /// record a crash could take back), the committed end in Async mode.
    pub(crate) fn readable_limit(&self) -> u64 {
        match self.config.flush_mode {
            FlushMode::Sync => self.flusher.flushed(),
            FlushMode::Async { .. } => self.log.committed(),
        }
    }

    /// Flushes the consume queues and the index up to the dispatcher's position (and the log at
    /// least that far), then writes the checkpoint.
    pub(crate) fn checkpoint(&self, clean: bool) -> Result<Checkpoint, StoreError> {
        let _one_at_a_time = self.checkpoint_lock.lock();
        let snap = self.dispatch.snapshot();
        if self.flusher.flushed() < snap.dispatched {
            self.flusher.flush_to(&self.log, snap.dispatched)?;
        }
        if self.checkpoint_poisoned.load(Ordering::Acquire) {
            return Err(StoreError::ReadOnly {
                reason: "an earlier flush of consume queues or index failed; no more checkpoints until restart".into(),
            });
        }
        if let Err(e) = self.queues.flush_all().and_then(|()| self.index.flush()) {
            self.checkpoint_poisoned.store(true, Ordering::Release);
            return Err(e);
        }
        let cp = Checkpoint {
            clean,
            flushed: self.flusher.flushed(),
            dispatched: snap.dispatched,
            indexed: snap.indexed,
            index_file: snap.index_file,
            index_entries: snap.index_entries,
            log_end: self.log.committed(),
            last_store_timestamp_ms: self.log.last_store_timestamp(),
        };
        checkpoint::write(&self.config.data_dir, &cp)
            .map_err(|e| StoreError::io(&self.config.data_dir.join(checkpoint::FILE_NAME), e))?;
        Ok(cp)
    }

    /// The dispatcher thread: consume queues first, then (while it lags) the index.
    pub(crate) fn run_dispatcher(&self) {
        let mut d = Dispatcher::new(&self.log, &self.queues, &self.index);
        let mut failing = DispatchFailure::default();
        let mut next_index_try = Instant::now();
        let mut streaming = false;
        loop {
            let stop = self.stop_state();
            if stop == ABORT {
                return;
            }
            let limit = self.readable_limit();
            let pos = self.dispatch.position();
            if pos < limit {
                match d.step(&self.dispatch, pos, limit) {
                    Ok(_) => {
                        failing.recovered(pos);
                        streaming = true;
                    }
                    Err(e) => {
                        failing.failed(pos, &e);
                        self.dispatch
                            .wake
                            .wait(|| self.stop_state() != RUNNING, Some(DISPATCH_RETRY));
                        continue;
                    }
                }
            }
            let lagging = self.dispatch.index_lags();
            if lagging && Instant::now() >= next_index_try {
                if d.catch_up_index(&self.dispatch).is_err() {
                    next_index_try = Instant::now() + INDEX_RETRY;
                }
                continue;
            }
            if pos < limit {
                continue;
            }
            if stop == DRAIN {
                return;
            }
            // Caught up. In Async mode, while appends stream in, nap briefly and take what
            // came meanwhile as one batch: a wake-up per append would cost each appender a
            // futex call and this thread a context switch (spinning instead would take a
            // core from the appenders and the network on a small machine). A nap that
            // brings nothing ends the stream: then sleep until the next append wakes us.
            // Sync work comes once per fsync, which wakes us anyway.
            if streaming && matches!(self.config.flush_mode, FlushMode::Async { .. }) {
                streaming = false;
                self.dispatch.wake.nap(NAP);
                continue;
            }
            streaming = false;
            // A lagging index retries on a timer: no append signals that space came back.
            let retry = lagging.then(|| next_index_try.saturating_duration_since(Instant::now()));
            self.dispatch.wake.wait(
                || self.readable_limit() > self.dispatch.position() || self.stop_state() != RUNNING,
                retry,
            );
        }
    }

    /// Releases from this process's resident set the mapped pages it no longer needs at hand
    /// (the `resident_window` setting): the commit log below the last `window` bytes before
    /// both the committed end and the dispatcher, and every consume-queue file but the
    /// newest. Nothing changes on disk or for readers (see `MappedFile::release`); returns
    /// how many log bytes were below the cutoff.
    pub(crate) fn release_resident(&self) -> std::io::Result<u64> {
        let Some(window) = self.config.resident_window else {
            return Ok(0);
        };
        let cutoff = self
            .log
            .committed()
            .min(self.dispatch.position())
            .saturating_sub(window);
        let mut below = 0;
        for seg in self.log.segments() {
            if seg.base >= cutoff {
                break;
            }
            let n = (cutoff - seg.base).min(seg.file.len() as u64);
            seg.file.release(0, n as usize)?;
            below += n;
        }
        self.queues.release_resident()?;
        Ok(below)
    }

    /// The housekeeper thread: periodic checkpoint, retention and release of resident pages.
    pub(crate) fn run_housekeeper(&self) {
        let mut next_checkpoint = Instant::now() + self.config.checkpoint_interval;
        let mut next_retention = Instant::now() + self.config.retention_check_interval;
        let mut release_failed = false;
        loop {
            let due = next_checkpoint.min(next_retention);
            let now = Instant::now();
            if due > now {
                // A timer, not synchronization: request_stop wakes it at once.
                self.housekeeping
                    .wait(|| self.stop_state() != RUNNING, Some(due - now));
            }
            if self.stop_state() != RUNNING {
                return;
            }
            let now = Instant::now();
            if now >= next_checkpoint {
                if let Err(e) = self.checkpoint(false) {
                    tracing::error!(error = %e, "periodic checkpoint failed");
                }
                // Only memory: a failure leaves the pages resident, nothing else.
                match self.release_resident() {
                    Err(e) if !release_failed => {
                        tracing::warn!(error = %e, "releasing mapped pages failed; they stay resident");
                        release_failed = true;
                    }
                    Err(_) => {}
                    Ok(_) => release_failed = false,
                }
                next_checkpoint = now + self.config.checkpoint_interval;
            }
            if now >= next_retention {
                if let Err(e) = self.run_retention() {
                    tracing::error!(error = %e, "retention failed");
                }
                next_retention = now + self.config.retention_check_interval;
            }
        }
    }
}

/// Logs a failing dispatcher once per kind of failure (and again every
/// [`DISPATCH_ERROR_REPEAT`] while it lasts), not once per retry.
#[derive(Debug, Default)]
struct DispatchFailure {
    /// The last error and when it was logged.
    last: Option<(std::mem::Discriminant<StoreError>, Instant)>,
    retries: u64,
}

impl DispatchFailure {
    fn failed(&mut self, position: u64, e: &StoreError) {
        let kind = std::mem::discriminant(e);
        self.retries += 1;
        let repeat = match self.last {
            Some((k, at)) => k != kind || at.elapsed() >= DISPATCH_ERROR_REPEAT,
            None => true,
        };
        if repeat {
            tracing::error!(error = %e, position, retries = self.retries, "dispatch failed; retrying");
            self.last = Some((kind, Instant::now()));
        }
    }

    fn recovered(&mut self, position: u64) {
        if self.last.take().is_some() {
            tracing::info!(position, retries = self.retries, "dispatch resumed");
        }
        self.retries = 0;
    }
}

/// Undispatched bytes that end a dispatcher nap early (an appender outrunning it).
pub(crate) const DISPATCH_HURRY: u64 = 256 << 10;
