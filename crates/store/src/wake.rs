//! A wake-up signal for a background thread that sleeps when it has no work.
//!
//! Notifying costs one atomic load unless the thread is actually asleep, so the appender can
//! call [`Wake::notify`] after every append.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct Wake {
    lock: Mutex<()>,
    cv: Condvar,
    /// In a wait that only a notification ends: every notifier must wake it.
    sleeping: AtomicBool,
    /// In a short timed nap: only a notifier with a reason to hurry wakes it.
    napping: AtomicBool,
    /// A wake-up is on its way: later notifiers need not take the lock (one syscall per
    /// sleep, not one per append).
    signaled: AtomicBool,
}

impl Wake {
    /// Wakes the thread if it sleeps. The caller must have published the new work with a
    /// SeqCst store before calling, so that either the sleeper's re-check sees the work or
    /// this load sees `sleeping` (both SeqCst: a Dekker-style handshake).
    pub(crate) fn notify(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.notify_always();
        }
    }

    /// [`Wake::notify`], and also ends a nap when `hurry()` says the work cannot wait for
    /// the nap to end (e.g. a large backlog). `hurry` runs only while the thread naps.
    pub(crate) fn notify_or_hurry(&self, hurry: impl FnOnce() -> bool) {
        if self.sleeping.load(Ordering::SeqCst) || (self.napping.load(Ordering::Relaxed) && hurry())
        {
            self.notify_always();
        }
    }

    /// Wakes the thread whether or not it sleeps now (for rare events such as stop).
    pub(crate) fn notify_always(&self) {
        if !self.signaled.swap(true, Ordering::SeqCst) {
            // Taking the lock orders this after the sleeper's check of `signaled`: it is then
            // either not yet checking (and will see the flag) or already waiting.
            let _ordered = self.lock.lock();
            self.cv.notify_all();
        }
    }

    /// Sleeps until notified, unless `has_work()` is already true; at most `timeout` if given.
    pub(crate) fn wait(&self, has_work: impl Fn() -> bool, timeout: Option<Duration>) {
        let mut guard = self.lock.lock();
        self.sleeping.store(true, Ordering::SeqCst);
        if !self.signaled.load(Ordering::SeqCst) && !has_work() {
            match timeout {
                Some(t) => {
                    self.cv.wait_for(&mut guard, t);
                }
                None => self.cv.wait(&mut guard),
            }
        }
        self.signaled.store(false, Ordering::SeqCst);
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Sleeps for `d` while ordinary notifications pass it by: work that streams in meanwhile
    /// is picked up as one batch when the nap ends, instead of costing the notifiers a futex
    /// wake and this thread a context switch per item. Only [`Wake::notify_or_hurry`] with
    /// a reason, or [`Wake::notify_always`], cuts it short. The caller must check for work
    /// afterwards and [`Wake::wait`] if there is none (nothing is lost: `wait` re-checks).
    pub(crate) fn nap(&self, d: Duration) {
        let mut guard = self.lock.lock();
        self.napping.store(true, Ordering::SeqCst);
        if !self.signaled.load(Ordering::SeqCst) {
            self.cv.wait_for(&mut guard, d);
        }
        self.signaled.store(false, Ordering::SeqCst);
        self.napping.store(false, Ordering::SeqCst);
    }
}

/// How long the dispatcher naps after a batch while appends stream in (Async mode): the
/// next batch collects meanwhile. Bounds how much later a consumer can see a message
/// (Apache RocketMQ's dispatcher polls every millisecond).
pub(crate) const NAP: Duration = Duration::from_micros(200);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn no_lost_wakeups() {
        let wake = Arc::new(Wake::default());
        let work = Arc::new(AtomicU64::new(0));
        let (w2, k2) = (wake.clone(), work.clone());
        let consumer = std::thread::spawn(move || {
            let mut seen = 0;
            while seen < 10_000 {
                let now = k2.load(Ordering::SeqCst);
                if now > seen {
                    seen = now;
                } else {
                    w2.wait(|| k2.load(Ordering::SeqCst) > seen, None);
                }
            }
        });
        for _ in 0..10_000 {
            work.fetch_add(1, Ordering::SeqCst);
            wake.notify();
        }
        consumer.join().unwrap();
    }

    #[test]
    fn napping_thread_ignores_plain_notifies_but_not_a_hurry() {
        let wake = Wake::default();
        // Not asleep: plain notifies do nothing and leave no pending signal.
        wake.notify();
        assert!(!wake.signaled.load(Ordering::SeqCst));
        // A hurried notify while nobody naps is a no-op too.
        wake.notify_or_hurry(|| true);
        assert!(!wake.signaled.load(Ordering::SeqCst));
        // A signal pending before the nap ends it at once (the nap would otherwise last a minute).
        wake.notify_always();
        let t = std::time::Instant::now();
        wake.nap(Duration::from_secs(60));
        assert!(t.elapsed() < Duration::from_secs(30));
        assert!(!wake.signaled.load(Ordering::SeqCst));
    }

    #[test]
    fn hurry_cuts_a_nap_short() {
        let wake = Arc::new(Wake::default());
        let w2 = wake.clone();
        let napper = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            w2.nap(Duration::from_secs(60));
            t.elapsed()
        });
        // Keep asking for a hurry until the napper is inside its nap and wakes.
        while !napper.is_finished() {
            wake.notify_or_hurry(|| true);
            std::thread::yield_now();
        }
        assert!(napper.join().unwrap() < Duration::from_secs(30));
    }
}
