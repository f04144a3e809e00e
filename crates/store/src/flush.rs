//! Flushing the commit log: group commit for `FlushMode::Sync`, a periodic flush for `Async`,
//! and the [`PendingAppend`] handle through which an appender learns its record is durable.
//!
//! Group commit: each Sync appender registers `(end offset, oneshot sender)` after its append.
//! The flusher thread takes the whole list, flushes the log up to the current committed end
//! (which covers every registered end) with one msync per touched segment, then answers the
//! batch. Appenders that arrive during the msync form the next batch.
//!
//! The flusher does not start a flush for the first waiter of a round when the last round
//! served many: the appenders it just answered are coming back, and an fsync started for the
//! first of them would make the rest wait a whole extra fsync. It waits until as many waiters
//! as last time have registered, at most as long as the last flush took (so a drop in load
//! costs one short wait, and a lone appender never waits).
//!
//! A failed flush is final: every waiter gets `FlushFailed`, the write gate turns read-only,
//! `flushed` stops advancing (so Sync-mode consumers never see the unflushed records), and
//! every later flush attempt fails at once. Only a restart (recovery) clears it.

use crate::commit_log::CommitLog;
use crate::config::{FaultInjector, FlushMode, IoPoint};
use crate::error::StoreError;
use crate::flush_stats::{FsyncSnapshot, FsyncStats};
use crate::message::AppendResult;
use parking_lot::{Condvar, Mutex};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake as TaskWake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// How the flusher thread should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// Flush everything committed, answer every waiter, then exit (shutdown).
    Drain,
    /// Exit at once; waiters learn `ShutDown` (drop without shutdown: like a crash).
    Abort,
}

#[derive(Debug)]
struct Waiters {
    list: Vec<(u64, Reply)>,
    stop: Stop,
    failed: Option<String>,
    /// Waiters the last round answered: the size of the group expected back.
    expect: usize,
    /// How long the last flush took: the longest wait for the group to gather.
    linger: Duration,
    /// Non-zero while the flusher waits for this many waiters (the appender that completes
    /// the group wakes it).
    want: usize,
}

/// Upper bound of the wait for a group to gather, whatever the last flush took.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// Flush state shared by the flusher thread, the checkpoint and shutdown.
#[derive(Debug)]
pub(crate) struct Flusher {
    mode: FlushMode,
    faults: FaultInjector,
    /// Invariant: log bytes below `flushed` are on disk. Only grows; a record boundary.
    flushed: AtomicU64,
    /// Serializes flush rounds so `flushed` moves in order.
    round: Mutex<()>,
    waiters: Mutex<Waiters>,
    cv: Condvar,
    /// Durations of the log flushes made (for monitoring).
    stats: FsyncStats,
}

impl Flusher {
    pub(crate) fn new(mode: FlushMode, faults: FaultInjector, flushed: u64) -> Self {
        Flusher {
            mode,
            faults,
            flushed: AtomicU64::new(flushed),
            round: Mutex::new(()),
            waiters: Mutex::new(Waiters {
                list: Vec::new(),
                stop: Stop::Running,
                failed: None,
                expect: 0,
                linger: Duration::ZERO,
                want: 0,
            }),
            cv: Condvar::new(),
            stats: FsyncStats::default(),
        }
    }

    /// Durations of the log flushes made so far.
    pub(crate) fn fsync_stats(&self) -> FsyncSnapshot {
        self.stats.snapshot()
    }

    pub(crate) fn flushed(&self) -> u64 {
        self.flushed.load(Ordering::SeqCst)
    }

    /// Flushes the log at least up to `target` (a record boundary at or below committed), and
    /// in Sync mode everything appended so far (its write buffer is written out first).
    pub(crate) fn flush_to(&self, log: &CommitLog, target: u64) -> Result<u64, StoreError> {
        let _round = self.round.lock();
        if let Some(reason) = &self.waiters.lock().failed {
            return Err(StoreError::FlushFailed {
                reason: reason.clone(),
            });
        }
        let from = self.flushed();
        // Sync mode: records still in the log's write buffer reach the file first.
        let res = log
            .write_pending()
            .map(|written| written.map_or(target, |end| end.max(target)));
        let res = match res {
            Ok(target) if target <= from => return Ok(from),
            Ok(target) => self
                .faults
                .check(IoPoint::FlushLog)
                .map_err(|e| StoreError::Io {
                    path: "commitlog".into(),
                    source: e,
                })
                .and_then(|()| {
                    let started = Instant::now();
                    let flushed = log.flush(from, target);
                    self.stats.record(started.elapsed());
                    flushed
                })
                .map(|()| target),
            Err(e) => Err(e),
        };
        match res {
            Ok(target) => {
                self.flushed.store(target, Ordering::SeqCst);
                Ok(target)
            }
            Err(e) => {
                let reason = format!("flush of the log from {from} failed: {e}");
                tracing::error!("{reason}; the store is read-only until restarted");
                log.gate.set_read_only(reason.clone());
                let mut w = self.waiters.lock();
                w.failed = Some(reason.clone());
                for (_, tx) in w.list.drain(..) {
                    let _receiver_gone = tx.send(Err(StoreError::FlushFailed {
                        reason: reason.clone(),
                    }));
                }
                Err(StoreError::FlushFailed { reason })
            }
        }
    }

    /// The durability handle for an append ending at `end`.
    pub(crate) fn pending(&self, result: AppendResult, end: u64) -> PendingAppend {
        if matches!(self.mode, FlushMode::Async { .. }) || end <= self.flushed() {
            return PendingAppend {
                result,
                durable: None,
            };
        }
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiters.lock();
        if end <= self.flushed() {
            let _receiver_kept = tx.send(Ok(()));
        } else if let Some(reason) = &w.failed {
            let _receiver_kept = tx.send(Err(StoreError::FlushFailed {
                reason: reason.clone(),
            }));
        } else if w.stop != Stop::Running {
            // The flusher is gone or going: nobody would answer.
            let _receiver_kept = tx.send(Err(StoreError::ShutDown));
        } else {
            w.list.push((end, tx));
            if w.list.len() == 1 || w.list.len() == w.want {
                self.cv.notify_one();
            }
        }
        PendingAppend {
            result,
            durable: Some(rx),
        }
    }

    pub(crate) fn stop(&self, how: Stop) {
        self.waiters.lock().stop = how;
        self.cv.notify_all();
    }

    /// The flusher thread. `on_flushed` runs after each round with the bytes it made durable
    /// (wakes the dispatcher, feeds the allocator's zero-fill decision).
    pub(crate) fn run(&self, log: &CommitLog, on_flushed: &dyn Fn(u64)) {
        let interval = match self.mode {
            FlushMode::Sync => None,
            FlushMode::Async { interval } => Some(interval),
        };
        loop {
            let (batch, stop) = self.next_batch(interval);
            if stop == Stop::Abort {
                Self::answer(batch, &Err(StoreError::ShutDown));
                self.fail_all(|| StoreError::ShutDown);
                return;
            }
            let (started, before) = (Instant::now(), self.flushed());
            let res = self.flush_to(log, log.committed());
            let took = started.elapsed();
            on_flushed(res.as_ref().map_or(0, |end| end.saturating_sub(before)));
            let answered = batch.len();
            Self::answer(batch, &res);
            let covered = self.answer_covered();
            if interval.is_none() {
                let mut w = self.waiters.lock();
                w.expect = answered + covered;
                w.linger = took.min(MAX_LINGER);
            }
            if stop == Stop::Drain {
                self.fail_all(|| StoreError::ShutDown);
                return;
            }
        }
    }

    /// Waits for work: a waiter (Sync), the interval (Async) or a stop.
    fn next_batch(&self, interval: Option<std::time::Duration>) -> (Vec<(u64, Reply)>, Stop) {
        let mut w = self.waiters.lock();
        match interval {
            None => {
                while w.list.is_empty() && w.stop == Stop::Running {
                    self.cv.wait(&mut w);
                }
                if w.stop == Stop::Running && w.list.len() < w.expect {
                    // Let the group that the last round answered gather (module doc).
                    let deadline = Instant::now() + w.linger;
                    w.want = w.expect;
                    while w.list.len() < w.want && w.stop == Stop::Running {
                        if self.cv.wait_until(&mut w, deadline).timed_out() {
                            break;
                        }
                    }
                    w.want = 0;
                }
            }
            Some(t) => {
                if w.stop == Stop::Running {
                    // A periodic timer, not synchronization: stop() cuts it short.
                    self.cv.wait_for(&mut w, t);
                }
            }
        }
        (std::mem::take(&mut w.list), w.stop)
    }

    fn answer(batch: Vec<(u64, Reply)>, res: &Result<u64, StoreError>) {
        for (_, tx) in batch {
            let reply = match res {
                Ok(_) => Ok(()),
                Err(e) => Err(e.duplicate()),
            };
            let _receiver_gone = tx.send(reply);
        }
    }

    /// Answers waiters that registered during the last round but are already covered;
    /// returns how many.
    fn answer_covered(&self) -> usize {
        let flushed = self.flushed();
        let mut w = self.waiters.lock();
        let mut i = 0;
        let mut n = 0;
        while i < w.list.len() {
            if w.list[i].0 <= flushed {
                let (_, tx) = w.list.swap_remove(i);
                let _receiver_gone = tx.send(Ok(()));
                n += 1;
            } else {
                i += 1;
            }
        }
        n
    }

    fn fail_all(&self, err: impl Fn() -> StoreError) {
        let flushed = self.flushed();
        for (end, tx) in self.waiters.lock().list.drain(..) {
            let reply = if end <= flushed { Ok(()) } else { Err(err()) };
            let _receiver_gone = tx.send(reply);
        }
    }
}

/// An append that has been written to the log; await it to know it is durable.
#[derive(Debug)]
pub struct PendingAppend {
    /// Where the record landed; valid whatever durability brings.
    pub result: AppendResult,
    /// `None`: already durable enough for the flush mode.
    durable: Option<oneshot::Receiver<Result<(), StoreError>>>,
}

impl PendingAppend {
    /// Sync mode: resolves after the flush that covers the record (or its failure);
    /// Async mode: at once.
    pub async fn durable(self) -> Result<AppendResult, StoreError> {
        match self.durable {
            None => Ok(self.result),
            Some(rx) => match rx.await {
                Ok(Ok(())) => Ok(self.result),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(StoreError::ShutDown),
            },
        }
    }

    /// Blocking twin of [`PendingAppend::durable`], for threads outside async code (it would
    /// block an executor thread, but does not panic there).
    pub fn wait_durable(self) -> Result<AppendResult, StoreError> {
        block_on(self.durable())
    }
}

struct ThreadWaker(Thread);

impl TaskWake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Minimal executor for one future on the current thread (park until woken).
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_waits_for_another_thread() {
        let (tx, rx) = oneshot::channel::<u32>();
        let t = std::thread::spawn(move || tx.send(7));
        assert_eq!(block_on(rx).unwrap(), 7);
        t.join().unwrap().unwrap();
    }
}
