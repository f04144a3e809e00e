//! Auto-renewal of push-consumer deliveries (`ReceiveMessage{auto_renew: true}`), as the proxy
//! does: such a delivery is invisible for a short period (60 s) and the broker keeps extending
//! it while the client is connected (its Telemetry stream is open), for at most a few hours,
//! until the client acks, nacks or dead-letters it.
//!
//! Each extension replaces the receipt handle, but the client only knows the handle it was
//! given; this table maps that original handle to the current one. Ack, change-invisible and
//! forward-to-DLQ take the entry out of the table and act on the current handle under the
//! entry's lock, so a renewal racing with an ack either finishes first (the ack then uses the
//! new handle) or sees the entry done and does nothing.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::consumption::{ConsumeError, Consumption};

/// Timing of renewals.
#[derive(Debug, Clone, Copy)]
pub struct RenewalConfig {
    /// Invisible duration given by each renewal (and by the first delivery).
    pub invisible: Duration,
    /// Renew when the deadline is closer than this.
    pub ahead: Duration,
    /// Stop renewing this long after the first delivery.
    pub max_age: Duration,
    /// How often the renewal pass runs.
    pub period: Duration,
}

/// One auto-renewed delivery.
#[derive(Debug)]
pub struct Tracked {
    pub client_id: String,
    pub group: String,
    pub topic: String,
    /// The handle valid now.
    pub current: String,
    /// Wall-clock ms when the current handle's invisibility ends.
    pub deadline_ms: i64,
    first_ms: i64,
    /// Acked, changed or dead-lettered by the client: never renew again.
    pub done: bool,
}

/// The table of auto-renewed deliveries, keyed by the handle the client was given.
#[derive(Debug)]
pub struct Renewals {
    entries: DashMap<String, Arc<Mutex<Tracked>>>,
    config: RenewalConfig,
}

impl Renewals {
    pub fn new(config: RenewalConfig) -> Self {
        Renewals {
            entries: DashMap::new(),
            config,
        }
    }

    pub fn config(&self) -> RenewalConfig {
        self.config
    }

    /// Starts renewing a delivery made at `now_ms`.
    pub fn track(
        &self,
        client_id: &str,
        group: &str,
        topic: &str,
        handle: &str,
        deadline_ms: i64,
        now_ms: i64,
    ) {
        self.entries.insert(
            handle.to_owned(),
            Arc::new(Mutex::new(Tracked {
                client_id: client_id.to_owned(),
                group: group.to_owned(),
                topic: topic.to_owned(),
                current: handle.to_owned(),
                deadline_ms,
                first_ms: now_ms,
                done: false,
            })),
        );
    }

    /// Takes the entry of a handle the client gave back (ack, nack, dead-letter), if it is
    /// auto-renewed. The caller locks it, uses `current` and sets `done`.
    pub fn take(&self, group: &str, handle: &str) -> Option<Arc<Mutex<Tracked>>> {
        let (_, entry) = self
            .entries
            .remove_if(handle, |_, e| e.lock().group == group)?;
        Some(entry)
    }

    /// Number of tracked deliveries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One renewal pass at `now_ms`: extends the deliveries of connected clients that are
    /// due, and forgets the ones that expired, got too old, or whose client is gone (those
    /// become visible again when their current deadline passes). Blocking (the engine
    /// fsyncs): run it off the async workers.
    pub fn renew_due(
        &self,
        engine: &Consumption,
        now_ms: i64,
        is_connected: &dyn Fn(&str) -> bool,
    ) -> usize {
        let ahead = duration_ms(self.config.ahead);
        let max_age = duration_ms(self.config.max_age);
        let mut forget = Vec::new();
        let due: Vec<(String, Arc<Mutex<Tracked>>)> = self
            .entries
            .iter()
            .filter(|e| {
                let t = e.value().lock();
                t.deadline_ms.saturating_sub(now_ms) < ahead
            })
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        let mut renewed = 0;
        for (key, entry) in due {
            let mut t = entry.lock();
            if t.done {
                continue;
            }
            let expired = t.deadline_ms <= now_ms;
            let too_old = now_ms.saturating_sub(t.first_ms) >= max_age;
            if expired || too_old || !is_connected(&t.client_id) {
                // Not renewed: the current deadline stands. Keep the entry until it passes so
                // an ack with the original handle still finds the current one.
                if expired {
                    forget.push(key);
                }
                continue;
            }
            match engine.change_invisible_duration(
                &t.group,
                &t.topic,
                &t.current,
                self.config.invisible,
            ) {
                Ok(new_handle) => {
                    t.current = new_handle;
                    t.deadline_ms = now_ms.saturating_add(duration_ms(self.config.invisible));
                    renewed += 1;
                }
                Err(ConsumeError::InvalidReceiptHandle { .. }) => {
                    // Acked or redelivered elsewhere: nothing left to renew.
                    t.done = true;
                    forget.push(key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, group = %t.group, topic = %t.topic,
                        "auto-renewal of an in-flight message failed");
                }
            }
        }
        for key in forget {
            self.entries.remove(&key);
        }
        renewed
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
