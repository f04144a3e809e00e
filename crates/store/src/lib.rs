//! rocketlog's storage engine: one commit log shared by every topic and queue, a consume queue
//! per (topic, queue id) and a message-id/key index derived from it, group-commit flushing, and
//! crash recovery. It knows bytes and offsets only: nothing here speaks gRPC, protobuf or
//! networks, and nothing knows about consumer groups or broker roles.
//!
//! Layering: depends on `rocketlog-common` only; it must not depend on the protocol, transport,
//! broker or any networking crate.
//!
//! Files under `data_dir`:
//!
//! | path | what | module |
//! |---|---|---|
//! | `commitlog/<20-digit offset>` | preallocated, memory-mapped log segments | [`record`], `commit_log` |
//! | `consumequeue/<topic>/<queue>/<20-digit entry>` | 20-byte entries locating each queue's messages | [`consume_queue`] |
//! | `index/<20-digit offset>` | hash-slot index: message id and keys → offsets | [`index`] |
//! | `checkpoint` | flushed/dispatched/indexed positions, clean-shutdown flag | [`checkpoint`] |
//! | `deleted_topics` | tombstones of deleted topics | `queue_registry` |
//! | `LOCK` | flock held while open | `mmap` |
//!
//! Threads per open store: the segment allocator, the flusher, the dispatcher (log → consume
//! queues + index) and the housekeeper (checkpoint, retention). The appender never calls the
//! derived structures; they are rebuilt from the log after a crash. When the disk is too full
//! for a new index file the consume queues go on without the index, which catches up from the
//! log once there is room (`space` says which files keep room for which).
//!
//! A former master that rejoins its group as a slave first cuts the tail of its log that the
//! new master never had, on the closed directory, with [`truncate_log`]; the next open repairs
//! the derived data.
//!
//! All `unsafe` lives in `mmap.rs`, under the contract written there.

mod allocator;
pub mod checkpoint;
mod clock;
mod commit_log;
mod config;
pub mod consume_queue;
mod core;
mod dispatcher;
mod error;
mod flush;
mod flush_stats;
pub mod index;
mod message;
mod mmap;
mod open;
mod queue_registry;
pub mod record;
mod recovery;
mod reserve;
mod retention;
pub mod segment;
mod space;
mod store;
mod truncate;
mod wake;

pub use config::{
    FaultInjector, FlushMode, IoPoint, StoreConfig, DEFAULT_ASYNC_PREFAULT_WINDOW,
    DEFAULT_RESIDENT_WINDOW, MIN_SEGMENT_SIZE,
};
pub use error::{StoreError, TruncateRefusal};
pub use flush::PendingAppend;
pub use flush_stats::{FsyncSnapshot, FSYNC_BUCKETS_SECONDS};
pub use message::{AppendMessage, AppendResult, LogScan, QueueRead, StoredMessage};
pub use retention::RetentionReport;
pub use rocketlog_common::{PhysicalOffset, QueueOffset};
pub use store::{IndexStatus, Store};
pub use truncate::{truncate_log, Truncated};
