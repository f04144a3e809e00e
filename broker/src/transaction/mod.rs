//! Transactional messages with check-back.
//!
//! - `SendMessage` of a TRANSACTION message appends a **half message** to queue 0 of the system
//!   topic [`HALF_TOPIC`] (its real topic and queue in broker properties), so no consumer sees
//!   it, and answers with a transaction id.
//! - `EndTransaction` COMMIT appends the message to its real topic (same message id) and an op
//!   record; ROLLBACK appends only the op record. Op records go to queue 0 of [`OP_TOPIC`], so
//!   the state of every transaction (open, committed, rolled back, checks sent) is in the
//!   commit log.
//! - Half messages left open are **checked back**: after the first-check delay (6 s by
//!   default) and then every check interval (30 s), the [`checker`] sends a
//!   `RecoverOrphanedTransactionCommand` over the Telemetry stream of a producer of the topic,
//!   which answers with `EndTransaction` (source `SOURCE_SERVER_CHECK`). After `max_checks`
//!   checks (15) the transaction is resolved by policy (rolled back by default) and logged.
//! - The in-memory [`state::TxTable`] holds only open transactions (plus a bounded memory of
//!   recent resolutions); it is rebuilt at start by scanning the half and op queues from a
//!   checkpoint (the `recovery` module), which only moves past transactions whose resolution is flushed.
//!
//! Every transition appends under one lock, so the table, the op queue and the checkpoint
//! agree; the appends are cheap (a copy into the mapped log) and durability is awaited after
//! the lock is released.

pub mod checker;
mod checkpoint;
mod end;
mod error;
mod half;
mod op;
mod recovery;
mod settings;
pub mod state;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rocketlog_common::PhysicalOffset;
use rocketlog_store::{AppendMessage, PendingAppend, Store, StoredMessage};

use checkpoint::CheckpointFile;
use op::{Op, OpKind};
use state::{Checkpoint, Lookup, OpenTx, Resolution, TxTable};

pub use end::handle as end_transaction;
pub use error::TransactionError;
pub use half::{HALF_TOPIC, REAL_TOPIC_PROPERTY as HALF_REAL_TOPIC_PROPERTY};
pub use op::OP_TOPIC;
pub use settings::{OnMaxChecks, TransactionSettings};

/// Resolutions remembered after they happened, so a repeated `EndTransaction` is answered
/// precisely (older ones are "unknown").
const RECENT_RESOLUTIONS: usize = 65_536;
/// Most transactions handled by one checker pass.
const MAX_CHECKS_PER_PASS: usize = 1_024;

/// What an `EndTransaction` did.
#[derive(Debug)]
pub enum EndOutcome {
    /// Resolved now; the appends to wait for before answering.
    Applied(Vec<PendingAppend>),
    /// It had been resolved the same way before: nothing appended.
    Repeated,
}

/// A check to send: the half message as its producer sent it.
#[derive(Debug)]
pub struct DueCheck {
    pub transaction_id: String,
    pub message: StoredMessage,
    /// Checks sent so far, this one included.
    pub checks: u32,
}

/// The broker's transactions: the table behind one lock, and the store it appends to.
#[derive(Debug, Clone)]
pub struct Transactions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    settings: TransactionSettings,
    store_host: String,
    table: Mutex<TxTable>,
    checkpoint: CheckpointFile,
    saving: Mutex<Saving>,
}

/// Progress of checkpoint saving.
#[derive(Debug, Default)]
struct Saving {
    /// A checkpoint waiting for the log to be flushed up to the offset beside it.
    pending: Option<(Checkpoint, u64)>,
    /// The last one written.
    written: Option<Checkpoint>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Transactions {
    /// Rebuilds the table from the commit log (half and op queues from the checkpoint in
    /// `dir`). Blocking: call it off the async workers.
    pub fn open(
        store: Store,
        dir: &Path,
        settings: TransactionSettings,
        store_host: String,
    ) -> Result<Transactions, TransactionError> {
        let checkpoint = CheckpointFile::new(dir)?;
        let saved = match checkpoint.read() {
            Ok(c) => c,
            Err(e) => {
                // Only costs a longer scan: every decision is in the log.
                tracing::warn!(error = %e, "ignoring the transaction checkpoint; scanning from the start");
                None
            }
        };
        let transactions = Transactions {
            inner: Arc::new(Inner {
                store,
                settings,
                store_host,
                table: Mutex::new(TxTable::new(0, 0, RECENT_RESOLUTIONS)),
                checkpoint,
                saving: Mutex::new(Saving {
                    pending: None,
                    written: saved,
                }),
            }),
        };
        recovery::rebuild(&transactions, saved.unwrap_or_default())?;
        Ok(transactions)
    }

    pub fn settings(&self) -> &TransactionSettings {
        &self.inner.settings
    }

    /// Whether the transaction whose half message is at `half_offset` in the commit log is
    /// still open (neither committed nor rolled back).
    pub fn is_open(&self, half_offset: u64) -> bool {
        self.inner.table.lock().get(half_offset).is_some()
    }

    /// Open transactions.
    pub fn open_count(&self) -> usize {
        self.inner.table.lock().len()
    }

    /// Appends `msg` (addressed to its real topic and queue) as a half message, first checked
    /// after `first_check` (capped) or the default delay; returns the pending append and the
    /// transaction id.
    pub fn prepare(
        &self,
        msg: AppendMessage,
        first_check: Option<&prost_types::Duration>,
    ) -> Result<(PendingAppend, String), TransactionError> {
        // The producer's orphaned_transaction_recovery_duration, if it set one.
        let asked = first_check.and_then(|d| Duration::try_from(*d).ok());
        let first_check = self.inner.settings.first_check_delay(asked);
        let topic = msg.topic.clone();
        let message_id = msg.message_id.clone();
        let half = half::to_half(msg, asked.map(|_| first_check));
        let mut table = self.inner.table.lock();
        // Read before the append: every op of this transaction comes after it.
        let op_mark = table.next_op();
        let pending = self.inner.store.append(half)?;
        let r = pending.result;
        table.open(
            r.physical_offset.0,
            OpenTx {
                half_queue_offset: r.queue_offset.0,
                message_id,
                topic,
                checks: 0,
                next_check_ms: r.store_timestamp_ms.saturating_add(ms(first_check)),
                op_mark,
            },
        );
        Ok((pending, state::transaction_id(r.physical_offset.0)))
    }

    /// Ends transaction `transaction_id` of message `message_id` on `topic`.
    pub fn end(
        &self,
        transaction_id: &str,
        message_id: &str,
        topic: &str,
        resolution: Resolution,
    ) -> Result<EndOutcome, TransactionError> {
        let unknown = || TransactionError::Unknown {
            id: transaction_id.to_owned(),
        };
        let key = state::parse_transaction_id(transaction_id).ok_or_else(unknown)?;
        let mut table = self.inner.table.lock();
        match table.lookup(key) {
            Lookup::Unknown => return Err(unknown()),
            Lookup::Resolved(was) if was == resolution => return Ok(EndOutcome::Repeated),
            Lookup::Resolved(was) => {
                return Err(TransactionError::AlreadyResolved {
                    id: transaction_id.to_owned(),
                    was,
                })
            }
            Lookup::Open(tx) if tx.message_id != message_id || tx.topic != topic => {
                return Err(TransactionError::WrongMessage {
                    id: transaction_id.to_owned(),
                    expected: tx.message_id.clone(),
                    topic: tx.topic.clone(),
                    given: format!("{message_id} of topic {topic:?}"),
                })
            }
            Lookup::Open(_) => {}
        }
        let appended = self.apply(&mut table, key, resolution)?;
        Ok(EndOutcome::Applied(appended))
    }

    /// Appends what resolves open transaction `key` and drops it from the table.
    fn apply(
        &self,
        table: &mut TxTable,
        key: u64,
        resolution: Resolution,
    ) -> Result<Vec<PendingAppend>, TransactionError> {
        let Some(half_queue_offset) = table.get(key).map(|tx| tx.half_queue_offset) else {
            return Ok(Vec::new());
        };
        let store = &self.inner.store;
        let mut appended = Vec::with_capacity(2);
        if resolution == Resolution::Commit {
            let half = store.read_at(PhysicalOffset(key))?;
            let info = half::half_info(&half)?;
            // The message first: a crash before the op record leaves the transaction open
            // with its message delivered, which the rebuild recognizes (see `recovery`).
            appended.push(store.append(half::committed(&half, &info))?);
        }
        let kind = match resolution {
            Resolution::Commit => OpKind::Commit,
            Resolution::Rollback => OpKind::Rollback,
        };
        appended.push(self.append_op(table, kind, key, half_queue_offset)?);
        table.resolve(key, resolution);
        Ok(appended)
    }

    fn append_op(
        &self,
        table: &mut TxTable,
        kind: OpKind,
        key: u64,
        half_queue_offset: u64,
    ) -> Result<PendingAppend, TransactionError> {
        let op = Op {
            kind,
            half_physical: key,
            half_queue_offset,
        };
        let pending = self
            .inner
            .store
            .append(op.message(&self.inner.store_host, now_ms()))?;
        table.note_op(pending.result.queue_offset.0);
        Ok(pending)
    }

    /// Takes the transactions due for a check at `now_ms`: records each check in the op queue
    /// and returns what to send; transactions out of checks are resolved by policy, and ones
    /// whose half message can no longer be read are rolled back. Blocking (reads the log).
    pub fn due_checks(&self, now_ms: i64) -> Vec<DueCheck> {
        let settings = &self.inner.settings;
        let interval = ms(settings.check_interval());
        let mut table = self.inner.table.lock();
        let mut out = Vec::new();
        for key in table.due(now_ms, MAX_CHECKS_PER_PASS) {
            let Some(tx) = table.get(key).cloned() else {
                continue;
            };
            if tx.checks >= settings.max_checks {
                let resolution = match settings.on_max_checks {
                    OnMaxChecks::Rollback => Resolution::Rollback,
                    OnMaxChecks::Commit => Resolution::Commit,
                };
                tracing::warn!(
                    transaction_id = %state::transaction_id(key),
                    message_id = %tx.message_id,
                    topic = %tx.topic,
                    checks = tx.checks,
                    "transaction still open after its last check: {}",
                    resolution.as_str()
                );
                self.resolve_or_retry(&mut table, key, resolution, now_ms, interval);
                continue;
            }
            let half = match self.inner.store.read_at(PhysicalOffset(key)) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(
                        transaction_id = %state::transaction_id(key),
                        error = %e,
                        "half message unreadable; rolling the transaction back"
                    );
                    self.resolve_or_retry(&mut table, key, Resolution::Rollback, now_ms, interval);
                    continue;
                }
            };
            let info = match half::half_info(&half) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, "rolling back a malformed half message");
                    self.resolve_or_retry(&mut table, key, Resolution::Rollback, now_ms, interval);
                    continue;
                }
            };
            if let Err(e) = self.append_op(&mut table, OpKind::Check, key, tx.half_queue_offset) {
                tracing::warn!(error = %e, "cannot record a transaction check; retrying later");
                table.reschedule(key, now_ms.saturating_add(interval));
                continue;
            }
            let checks = table.checked(key, now_ms, interval).unwrap_or(tx.checks);
            out.push(DueCheck {
                transaction_id: state::transaction_id(key),
                message: half::as_sent(&half, &info),
                checks,
            });
        }
        out
    }

    fn resolve_or_retry(
        &self,
        table: &mut TxTable,
        key: u64,
        resolution: Resolution,
        now_ms: i64,
        interval: i64,
    ) {
        if let Err(e) = self.apply(table, key, resolution) {
            tracing::warn!(error = %e, "cannot resolve a transaction; retrying later");
            table.reschedule(key, now_ms.saturating_add(interval));
        }
    }

    /// Saves the checkpoint once the log is flushed past every record it accounts for:
    /// a checkpoint is noted with the log's end, and written when a later call finds the log
    /// flushed that far. Blocking (fsync).
    pub fn save_checkpoint(&self) -> Result<(), TransactionError> {
        let store = &self.inner.store;
        let current = {
            let table = self.inner.table.lock();
            (table.checkpoint(), store.log_range().1 .0)
        };
        let mut saving = self.inner.saving.lock();
        let flushed = store.flushed_offset().0;
        if let Some((c, end)) = saving.pending {
            if flushed >= end {
                self.inner.checkpoint.write(c)?;
                saving.pending = None;
                saving.written = Some(c);
            }
        }
        if saving.pending.is_none() && saving.written != Some(current.0) {
            if flushed >= current.1 {
                self.inner.checkpoint.write(current.0)?;
                saving.written = Some(current.0);
            } else {
                saving.pending = Some(current);
            }
        }
        Ok(())
    }

    /// Saves the checkpoint after the store shut down cleanly (everything is flushed).
    pub fn save_final_checkpoint(&self) -> Result<(), TransactionError> {
        let c = self.inner.table.lock().checkpoint();
        self.inner.checkpoint.write(c)
    }
}

#[cfg(test)]
mod tests;
