//! A wake-up signal for a background thread that sleeps when it has no work.
//!
//! Notifying costs one atomic load unless the thread is actually asleep, so the appender can
//! call [`Wake::notify`] after every append.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct Wake {
    lock: Mutex<()>,
    cv: Condvar,
    sleeping: AtomicBool,
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
        self.spin_then_wait(has_work, timeout, Duration::ZERO);
    }

    /// [`Wake::wait`] that first spins for up to `spin` re-checking `has_work`. Worth it only
    /// where new work arrives within microseconds (a steady stream of Async appends), where it
    /// saves both threads a futex round trip per batch. Where work comes at most once per
    /// fsync (Sync mode) spinning only takes a core from the threads doing the work.
    /// Returns true if the spin caught new work (so spinning paid this time).
    pub(crate) fn spin_then_wait(
        &self,
        has_work: impl Fn() -> bool,
        timeout: Option<Duration>,
        spin: Duration,
    ) -> bool {
        if !spin.is_zero() && self.spin(&has_work, spin) {
            return true;
        }
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
        false
    }

    fn spin(&self, has_work: &impl Fn() -> bool, spin: Duration) -> bool {
        let deadline = Instant::now() + spin;
        loop {
            for _ in 0..64 {
                if has_work() || self.signaled.load(Ordering::Relaxed) {
                    return true;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }
}

/// How long the dispatcher spins before it parks when appends stream in (Async mode).
pub(crate) const SPIN: Duration = Duration::from_micros(50);

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
}
