//! Delayed messages: a message whose `delivery_timestamp` is in the future is appended to the
//! commit log under the system topic [`TIMER_TOPIC`] (its real topic, queue and delivery time in
//! reserved properties) and becomes visible when a persistent timer re-appends it to its real
//! topic at that time.
//!
//! The timer is derived data, rebuilt from the log like the consume queues:
//!
//! - `entry.rs`: fixed 48-byte entries pointing at timer records;
//! - `bucket.rs`: append-only bucket files under `<data_dir>/timer/buckets/`, one per
//!   `bucket_ms` of fire time; only buckets about to fire are loaded, so memory does not grow
//!   with the number of pending messages;
//! - `wheel.rs`: the pure core: placement, loading, firing order, cancellation, the cursor;
//! - `checkpoint.rs`: what is indexed, fired and durable, so a restart neither loses nor
//!   repeats a message;
//! - `record.rs`: the reserved properties and the records the timer appends;
//! - `service.rs`: the timer thread and the [`Timer`] handle;
//! - `handle.rs` + `recall.rs`: recall handles and the RecallMessage RPC.
//!
//! Messages due further out than `roll_horizon_ms` are re-appended ("rolled") to the timer topic
//! when the horizon comes round, so commit-log retention never deletes a pending message.

mod bucket;
mod checkpoint;
mod entry;
mod handle;
pub mod recall;
mod record;
pub mod send;
mod service;
mod settings;
#[cfg(test)]
mod tests;
mod wheel;

use std::path::PathBuf;

pub use handle::RecallHandle;
pub use record::{real_topic, CANCEL as RECALL_PROPERTY, DELIVER_MS_PROPERTY, TIMER_TOPIC};
pub use service::{LatencySummary, Progress, RecallError, Timer};
pub use settings::TimerSettings;

/// Why the timer could not open, index or persist its state.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timer checkpoint {path} is damaged")]
    BadCheckpoint { path: PathBuf },
    #[error(transparent)]
    Store(#[from] rocketlog_store::StoreError),
    #[error("starting the timer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Whether `topic` is the timer's own (clients may not send to it).
pub fn is_timer_topic(topic: &str) -> bool {
    topic == TIMER_TOPIC
}
