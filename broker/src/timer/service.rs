//! The timer thread and its handle. One thread indexes new timer records (tailing the timer
//! topic's consume queue), loads the buckets about to fire, fires due entries (re-appending the
//! message to its real topic, or rolling it), and checkpoints. It sleeps until the next entry
//! is due or `poll_interval_ms` passes, whichever comes first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use rocketlog_common::{PhysicalOffset, QueueOffset};
use rocketlog_store::{AppendMessage, PendingAppend, Store, StoreError};

use super::bucket::BucketDir;
use super::checkpoint::Checkpoint;
use super::entry::Entry;
use super::handle::RecallHandle;
use super::record::{self, TIMER_TOPIC};
use super::settings::TimerSettings;
use super::wheel::Wheel;
use super::TimerError;

/// Timer records read from the consume queue per call.
const SCAN_BATCH: usize = 512;
/// Calls per loop turn, so firing is never starved by a burst of new delayed messages.
const SCAN_CALLS_PER_TURN: usize = 16;
/// Bytes per `scan_log` call while learning what fired after the checkpoint.
const RECOVERY_SCAN_BYTES: usize = 8 << 20;
/// Pause after a failed turn (store refusing writes, disk errors).
const ERROR_PAUSE: Duration = Duration::from_millis(500);
/// How long shutdown waits for the log to be flushed past the last firing.
const SHUTDOWN_FLUSH_WAIT: Duration = Duration::from_secs(3);
/// Lateness histogram: one slot per millisecond up to this, then one overflow slot.
const LATENESS_SLOTS: usize = 2_000;
/// How often fire statistics are logged while messages fire.
const STATS_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Why a recall was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecallError {
    #[error("invalid recall handle")]
    BadHandle,
    #[error("the recall handle is for topic {handle_topic:?}, not {topic:?}")]
    WrongTopic { handle_topic: String, topic: String },
    #[error("message {message_id} was already delivered (due at {deliver_ms} ms)")]
    AlreadyDelivered { message_id: String, deliver_ms: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Lateness of delivered messages (time of the re-append minus the delivery time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub delivered: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

#[derive(Debug)]
struct Lateness {
    slots: Vec<u64>,
    count: u64,
    max: u64,
}

impl Lateness {
    fn new() -> Self {
        Lateness {
            slots: vec![0; LATENESS_SLOTS + 1],
            count: 0,
            max: 0,
        }
    }

    fn record(&mut self, ms: i64) {
        let ms = u64::try_from(ms).unwrap_or(0);
        let slot = usize::try_from(ms)
            .unwrap_or(usize::MAX)
            .min(LATENESS_SLOTS);
        self.slots[slot] += 1;
        self.count += 1;
        self.max = self.max.max(ms);
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ms, n) in self.slots.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return if ms == LATENESS_SLOTS {
                    self.max
                } else {
                    ms as u64
                };
            }
        }
        self.max
    }

    fn summary(&self) -> LatencySummary {
        LatencySummary {
            delivered: self.count,
            p50_ms: self.quantile(0.50),
            p99_ms: self.quantile(0.99),
            max_ms: self.max,
        }
    }
}

#[derive(Debug)]
struct Shared {
    store: Store,
    settings: TimerSettings,
    dir: PathBuf,
    stop: AtomicBool,
    /// Stop without the last checkpoint (tests: as if the process died).
    abandon: AtomicBool,
    /// Everything due at or before this has been fired.
    cursor: AtomicI64,
    wake: Mutex<bool>,
    wake_cv: Condvar,
    lateness: Mutex<Lateness>,
    /// Commit-log bytes read at open to learn what fired after the checkpoint.
    rescanned: u64,
    /// Published after every turn: (cursor, scanned): every timer record below the log
    /// offset `scanned` that is due at or before `cursor` has been fired (its delivery is in
    /// the log) or recalled. A master sends it to its slaves.
    progress: Mutex<Progress>,
    /// On a slave: the master's latest progress, whose firings are in this log too.
    master_progress: Mutex<Option<Progress>>,
}

/// How far a timer has fired: see [`Timer::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub cursor_ms: i64,
    pub scanned_offset: u64,
    /// Messages fired (delivered or rolled) since this timer started: changes exactly when
    /// there is something new for a slave to drop.
    pub fired: u64,
}

impl Shared {
    /// Sleeps up to `d`, or until woken.
    fn sleep(&self, d: Duration) {
        let mut woken = self.wake.lock();
        if !*woken {
            self.wake_cv.wait_for(&mut woken, d);
        }
        *woken = false;
    }
}

/// The persistent timer of one broker: schedules delayed messages, recalls them and fires them
/// at their time. Cheap to share behind an `Arc`; [`Timer::shutdown`] stops it.
#[derive(Debug)]
pub struct Timer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Timer {
    /// Opens the timer state in `dir` over `store` (recovering after a crash from the
    /// checkpoint and the log) and starts its thread. Blocking: call off async workers.
    pub fn open(store: Store, dir: &Path, settings: TimerSettings) -> Result<Timer, TimerError> {
        let worker = Worker::recover(store.clone(), dir, &settings)?;
        let shared = Arc::new(Shared {
            store,
            settings,
            dir: dir.to_path_buf(),
            stop: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
            cursor: AtomicI64::new(worker.wheel.cursor()),
            wake: Mutex::new(false),
            wake_cv: Condvar::new(),
            lateness: Mutex::new(Lateness::new()),
            rescanned: worker.rescanned,
            progress: Mutex::new(Progress::default()),
            master_progress: Mutex::new(None),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("rocketlog-timer".into())
                .spawn(move || worker.run(&shared))
                .map_err(TimerError::Thread)?
        };
        Ok(Timer {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stores `msg` (addressed to its real topic and queue) for delivery at `deliver_ms`.
    /// Returns the pending append and the recall handle (empty when the time has already
    /// passed and the message was stored for immediate delivery).
    pub fn schedule(
        &self,
        msg: AppendMessage,
        deliver_ms: i64,
    ) -> Result<(PendingAppend, String), StoreError> {
        let store = &self.shared.store;
        if deliver_ms <= now_ms() {
            return Ok((
                store.append(record::immediate(msg, deliver_ms))?,
                String::new(),
            ));
        }
        let (topic, message_id) = (msg.topic.clone(), msg.message_id.clone());
        let pending = store.append(record::timer_record(msg, deliver_ms))?;
        let handle = RecallHandle {
            topic,
            message_id,
            deliver_ms,
            origin: pending.result.physical_offset.0,
        };
        Ok((pending, handle.encode()))
    }

    /// Recalls the pending message `handle` names on `topic`: appends a tombstone (await the
    /// returned append for durability) and returns the message id.
    pub fn recall(
        &self,
        topic: &str,
        handle: &str,
        store_host: String,
    ) -> Result<(String, PendingAppend), RecallError> {
        let h = RecallHandle::decode(handle).ok_or(RecallError::BadHandle)?;
        if h.topic != topic {
            return Err(RecallError::WrongTopic {
                handle_topic: h.topic,
                topic: topic.to_owned(),
            });
        }
        let now = now_ms();
        if h.deliver_ms <= now || h.deliver_ms <= self.shared.cursor.load(Ordering::Acquire) {
            return Err(RecallError::AlreadyDelivered {
                message_id: h.message_id,
                deliver_ms: h.deliver_ms,
            });
        }
        let store = &self.shared.store;
        match store.read_at(PhysicalOffset(h.origin)) {
            Ok(m) => {
                let matches = m.topic == TIMER_TOPIC
                    && m.message_id == h.message_id
                    && record::deliver_ms(&m) == Some(h.deliver_ms)
                    && record::real_topic(&m) == Some(topic);
                if !matches {
                    return Err(RecallError::BadHandle);
                }
            }
            // The first record may be gone after rolls; the handle's fields still identify it.
            Err(StoreError::OffsetOutOfRange { .. }) if h.origin < store.log_range().0 .0 => {}
            Err(StoreError::OffsetOutOfRange { .. } | StoreError::Corrupt { .. }) => {
                return Err(RecallError::BadHandle)
            }
            Err(e) => return Err(e.into()),
        }
        let pending = store.append(record::tombstone(&h, store_host, now))?;
        Ok((h.message_id, pending))
    }

    /// Every message due at or before this time has been delivered (or recalled).
    pub fn cursor(&self) -> i64 {
        self.shared.cursor.load(Ordering::Acquire)
    }

    /// How far this timer has fired, as of its last turn: every timer record below
    /// `scanned_offset` that is due at or before `cursor_ms` has been delivered or recalled,
    /// and its delivery is in the log.
    pub fn progress(&self) -> Progress {
        *self.shared.progress.lock()
    }

    /// On a slave: the master's timer has got this far, and the log holds its firings. The
    /// slave drops those entries instead of firing them again after a promotion (it never
    /// fires while it is a replica).
    pub fn follow_master(&self, progress: Progress) {
        *self.shared.master_progress.lock() = Some(progress);
        *self.shared.wake.lock() = true;
        self.shared.wake_cv.notify_all();
    }

    /// Stops the thread without its last checkpoint, as a crash would.
    #[cfg(test)]
    pub(crate) fn abandon(&self) {
        self.shared.abandon.store(true, Ordering::Release);
        self.shutdown();
    }

    /// Delayed messages not yet delivered, estimated from the sizes of the bucket files: a
    /// recall counts until its time, and appends of the last batch may not be written yet.
    pub fn pending_estimate(&self) -> u64 {
        super::bucket::pending_estimate(
            &self.shared.dir.join("buckets"),
            ms(self.shared.settings.bucket_ms),
            self.cursor(),
        )
    }

    /// Commit-log bytes this timer read at open, past its checkpoint: none after a clean
    /// shutdown, the tail written after the last checkpoint after a crash.
    pub fn rescanned_bytes(&self) -> u64 {
        self.shared.rescanned
    }

    /// Lateness of the messages delivered since start.
    pub fn lateness(&self) -> LatencySummary {
        self.shared.lateness.lock().summary()
    }

    /// Stops the thread after a last checkpoint. Idempotent. Blocking.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        *self.shared.wake.lock() = true;
        self.shared.wake_cv.notify_all();
        if let Some(t) = self.thread.lock().take() {
            if t.join().is_err() {
                tracing::error!("the timer thread panicked");
            }
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The thread's state.
struct Worker {
    store: Store,
    wheel: Wheel,
    /// Next timer-topic queue offset to index.
    scan_offset: u64,
    /// Every timer record below this log offset has been indexed.
    scanned_phys: u64,
    /// Timer records that fired after the last checkpoint, before a restart: not again.
    fired_before_restart: HashSet<u64>,
    /// Log bytes read at open (see [`Timer::rescanned_bytes`]).
    rescanned: u64,
    started_ms: i64,
    roll_horizon_ms: i64,
    /// Made at the last interval; written once the log is flushed past its `log_offset`.
    candidate: Option<Checkpoint>,
    written: Option<Checkpoint>,
    last_candidate: Instant,
    last_stats: Instant,
    fired_since_stats: u64,
    /// Something was indexed or fired since the last candidate.
    changed: bool,
    /// Entries fired since start (see [`Progress::fired`]).
    fired_total: u64,
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Worker {
    /// The state after the last checkpoint, plus what the log says fired after it.
    fn recover(store: Store, dir: &Path, settings: &TimerSettings) -> Result<Worker, TimerError> {
        std::fs::create_dir_all(dir).map_err(|source| TimerError::Io {
            what: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        let saved = Checkpoint::load(dir)?;
        let (queue_min, _) = store.queue_range(TIMER_TOPIC, 0);
        let (log_min, log_end) = store.log_range();
        let ckpt = saved.unwrap_or(Checkpoint {
            scan_offset: queue_min.0,
            cursor_ms: 0,
            log_offset: log_min.0,
        });
        let mut from = ckpt.log_offset;
        if from < log_min.0 {
            from = log_min.0;
        }
        let mut fired_before_restart = HashSet::new();
        let mut scanned = 0u64;
        while from < log_end.0 {
            let scan = store.scan_log(PhysicalOffset(from), RECOVERY_SCAN_BYTES)?;
            for m in &scan.messages {
                if let Some(source) = record::source_of(m) {
                    fired_before_restart.insert(source);
                }
            }
            scanned += scan.next.0 - from;
            if scan.next.0 <= from {
                break;
            }
            from = scan.next.0;
        }
        let buckets = BucketDir::open(&dir.join("buckets"), ms(settings.bucket_ms))?;
        let wheel = Wheel::new(buckets, ckpt.cursor_ms, settings.max_loaded_entries);
        tracing::info!(
            checkpoint = saved.is_some(),
            scan_offset = ckpt.scan_offset,
            cursor_ms = ckpt.cursor_ms,
            log_bytes_rescanned = scanned,
            fired_after_checkpoint = fired_before_restart.len(),
            bucket_files = wheel.bucket_files(),
            "timer recovered"
        );
        Ok(Worker {
            store,
            wheel,
            scan_offset: ckpt.scan_offset,
            scanned_phys: 0,
            fired_before_restart,
            rescanned: scanned,
            started_ms: now_ms(),
            roll_horizon_ms: ms(settings.roll_horizon_ms),
            candidate: None,
            written: saved,
            last_candidate: Instant::now(),
            last_stats: Instant::now(),
            fired_since_stats: 0,
            changed: false,
            fired_total: 0,
        })
    }

    fn run(mut self, shared: &Shared) {
        let poll = Duration::from_millis(shared.settings.poll_interval_ms);
        let interval = Duration::from_millis(shared.settings.checkpoint_interval_ms);
        while !shared.stop.load(Ordering::Acquire) {
            let more = match self.turn(shared, interval) {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(error = %e, "timer turn failed; retrying");
                    shared.sleep(ERROR_PAUSE);
                    continue;
                }
            };
            shared.cursor.store(self.wheel.cursor(), Ordering::Release);
            *shared.progress.lock() = Progress {
                cursor_ms: self.wheel.cursor(),
                scanned_offset: self.scanned_phys,
                fired: self.fired_total,
            };
            if more {
                continue;
            }
            let wait = match self.wheel.next_fire() {
                Some(fire) => {
                    let until = u64::try_from(fire.saturating_sub(now_ms())).unwrap_or(0);
                    poll.min(Duration::from_millis(until))
                }
                None => poll,
            };
            if !wait.is_zero() {
                shared.sleep(wait);
            }
        }
        if shared.abandon.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self.finish(shared) {
            tracing::warn!(error = %e, "timer could not write its last checkpoint; the next start rescans from the previous one");
        }
    }

    /// One turn: index, load, fire, checkpoint. `Ok(true)` if more records wait to be indexed.
    fn turn(&mut self, shared: &Shared, interval: Duration) -> Result<bool, TimerError> {
        let more = self.scan()?;
        let now = now_ms();
        self.wheel.load_until(now)?;
        // A slave's log is its master's: the master fires, and its deliveries arrive here
        // replicated.
        if !self.store.is_replica() {
            self.fire(shared, now)?;
            self.wheel.advance(now);
        } else if let Some(master) = *shared.master_progress.lock() {
            self.drop_fired_by_master(master);
        }
        self.write_candidate(shared)?;
        if self.candidate.is_none() && self.last_candidate.elapsed() >= interval {
            self.make_candidate()?;
        }
        if self.fired_since_stats > 0 && self.last_stats.elapsed() >= STATS_LOG_INTERVAL {
            let s = shared.lateness.lock().summary();
            tracing::info!(
                fired = self.fired_since_stats,
                delivered_total = s.delivered,
                p50_ms = s.p50_ms,
                p99_ms = s.p99_ms,
                max_ms = s.max_ms,
                loaded = self.wheel.loaded(),
                bucket_files = self.wheel.bucket_files(),
                "timer fired"
            );
            self.fired_since_stats = 0;
            self.last_stats = Instant::now();
        }
        Ok(more)
    }

    /// Indexes new timer records; `Ok(true)` if there are more.
    fn scan(&mut self) -> Result<bool, TimerError> {
        for _ in 0..SCAN_CALLS_PER_TURN {
            let (min, max) = self.store.queue_range(TIMER_TOPIC, 0);
            if self.scan_offset < min.0 {
                tracing::error!(
                    from = self.scan_offset,
                    to = min.0,
                    "timer records were deleted by retention before they were indexed"
                );
                self.scan_offset = min.0;
            }
            if self.scan_offset >= max.0 {
                self.wheel.write()?;
                return Ok(false);
            }
            let read = self.store.read_queue(
                TIMER_TOPIC,
                0,
                QueueOffset(self.scan_offset),
                SCAN_BATCH,
                &|_| true,
            )?;
            for m in &read.messages {
                if let Some(e) = record::entry(m, self.roll_horizon_ms) {
                    self.wheel.insert(e);
                }
                self.scanned_phys = self.scanned_phys.max(m.physical_offset.0.saturating_add(1));
            }
            if read.next_offset.0 <= self.scan_offset {
                break;
            }
            self.scan_offset = read.next_offset.0;
            self.changed = true;
        }
        self.wheel.write()?;
        Ok(self.scan_offset < self.store.queue_range(TIMER_TOPIC, 0).1 .0)
    }

    /// A slave's share of the master's firing: entries the master has fired are dropped, the
    /// rest stay for a promotion.
    fn drop_fired_by_master(&mut self, master: Progress) {
        let mut keep = Vec::new();
        while let Some(e) = self.wheel.pop_due(master.cursor_ms) {
            if e.phys < master.scanned_offset {
                self.changed = true;
            } else {
                keep.push(e);
            }
        }
        for e in keep {
            self.wheel.unpop(e);
        }
        self.wheel.advance(master.cursor_ms);
    }

    fn fire(&mut self, shared: &Shared, now: i64) -> Result<(), TimerError> {
        while let Some(e) = self.wheel.pop_due(now) {
            self.changed = true;
            if self.fired_before_restart.contains(&e.phys) {
                continue;
            }
            if let Err(err) = self.fire_one(shared, &e) {
                self.wheel.unpop(e);
                return Err(err);
            }
            self.fired_total += 1;
        }
        Ok(())
    }

    fn fire_one(&mut self, shared: &Shared, e: &Entry) -> Result<(), TimerError> {
        let m = match self.store.read_at(PhysicalOffset(e.phys)) {
            Ok(m) => m,
            Err(StoreError::OffsetOutOfRange { .. }) if e.phys < self.store.log_range().0 .0 => {
                tracing::error!(
                    phys = e.phys,
                    deliver_ms = e.deliver_ms,
                    "a delayed message was deleted by retention before its time"
                );
                return Ok(());
            }
            Err(err @ (StoreError::OffsetOutOfRange { .. } | StoreError::Corrupt { .. })) => {
                tracing::error!(phys = e.phys, error = %err, "timer entry points at no timer record; skipped");
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        };
        if m.topic != TIMER_TOPIC {
            tracing::error!(phys = e.phys, topic = %m.topic, "timer entry points at another topic; skipped");
            return Ok(());
        }
        if e.fire_ms < e.deliver_ms {
            self.store.append(record::rolled(m, e.origin))?;
            return Ok(());
        }
        let Some(msg) = record::delivered(m) else {
            tracing::error!(
                phys = e.phys,
                "timer record without its real topic; skipped"
            );
            return Ok(());
        };
        self.store.append(msg)?;
        shared.lateness.lock().record(now_ms() - e.deliver_ms);
        self.fired_since_stats += 1;
        Ok(())
    }

    /// Makes the bucket files durable and remembers the state to checkpoint once the log is
    /// flushed past everything fired so far.
    fn make_candidate(&mut self) -> Result<(), TimerError> {
        let c = Checkpoint {
            scan_offset: self.scan_offset,
            cursor_ms: self.wheel.cursor(),
            log_offset: self.store.log_range().1 .0,
        };
        self.last_candidate = Instant::now();
        // The log offset moves with every append, delayed or not, so a restart only reads
        // what came after the last checkpoint. A timer that neither indexed nor fired and
        // saw no append writes nothing: the saved checkpoint says the same.
        let idle = |w: Checkpoint| !self.changed && w.log_offset == c.log_offset;
        if self.written == Some(c) || self.written.is_some_and(idle) {
            return Ok(());
        }
        self.wheel.sync()?;
        self.candidate = Some(c);
        self.changed = false;
        Ok(())
    }

    fn write_candidate(&mut self, shared: &Shared) -> Result<(), TimerError> {
        let Some(c) = self.candidate else {
            return Ok(());
        };
        if self.store.flushed_offset().0 < c.log_offset {
            return Ok(());
        }
        c.store(&shared.dir)?;
        self.candidate = None;
        self.written = Some(c);
        self.wheel.release(c.cursor_ms)?;
        if c.cursor_ms >= self.started_ms && !self.fired_before_restart.is_empty() {
            self.fired_before_restart = HashSet::new();
        }
        Ok(())
    }

    fn finish(&mut self, shared: &Shared) -> Result<(), TimerError> {
        // A newer candidate replaces a pending one (it covers at least as much).
        if self.candidate.take().is_some() {
            self.changed = true;
        }
        self.make_candidate()?;
        let deadline = Instant::now() + SHUTDOWN_FLUSH_WAIT;
        while self.candidate.is_some() {
            self.write_candidate(shared)?;
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_quantiles() {
        let mut l = Lateness::new();
        assert_eq!(l.summary(), LatencySummary::default());
        for ms in 0..100 {
            l.record(ms);
        }
        l.record(5_000);
        let s = l.summary();
        assert_eq!(s.delivered, 101);
        assert_eq!(s.p50_ms, 50);
        assert_eq!(s.p99_ms, 99);
        assert_eq!(s.max_ms, 5_000);
        l.record(-3);
        assert_eq!(l.summary().delivered, 102);
    }
}
