//! Rebuilding the transaction table at start from the commit log:
//!
//! 1. every half message from the checkpoint's half offset on is open, first checked at its
//!    store time plus its first-check delay;
//! 2. every op record from the checkpoint's op offset on applies: commit and rollback close
//!    the transaction, a check counts and reschedules it (from the op's store time);
//! 3. a transaction still open whose message is already in its real topic (a crash between
//!    the commit's two appends) gets its missing commit op, so it is never delivered twice.

use rocketlog_common::QueueOffset;
use rocketlog_store::{Store, StoredMessage};

use super::error::TransactionError;
use super::half::{self, HALF_TOPIC};
use super::op::{Op, OpKind, OP_TOPIC};
use super::state::{Checkpoint, OpenTx, Resolution, TxTable};
use super::{ms, Transactions, RECENT_RESOLUTIONS};

/// Messages read per queue read.
const BATCH: usize = 256;

/// Calls `f` on every message of queue 0 of `topic` from `from` (clamped to what exists).
fn scan(
    store: &Store,
    topic: &str,
    from: u64,
    f: &mut dyn FnMut(&StoredMessage),
) -> Result<(), TransactionError> {
    let (min, max) = store.queue_range(topic, 0);
    let mut next = from.clamp(min.0, max.0);
    while next < max.0 {
        let read = store.read_queue(topic, 0, QueueOffset(next), BATCH, &|_| true)?;
        for m in &read.messages {
            f(m);
        }
        if read.next_offset.0 <= next {
            break;
        }
        next = read.next_offset.0;
    }
    Ok(())
}

/// Rebuilds `t`'s table from the log, starting at `from`. Runs before the broker serves, so
/// the queues do not move meanwhile.
pub(super) fn rebuild(t: &Transactions, from: Checkpoint) -> Result<(), TransactionError> {
    let inner = &t.inner;
    let store = &inner.store;
    let settings = &inner.settings;
    let interval = ms(settings.check_interval());
    let (op_min, op_end) = store.queue_range(OP_TOPIC, 0);
    let op_from = from.op.max(op_min.0);

    let mut table = inner.table.lock();
    *table = TxTable::new(
        store.queue_range(HALF_TOPIC, 0).1 .0,
        op_end.0,
        RECENT_RESOLUTIONS,
    );
    let mut halves = 0u64;
    scan(store, HALF_TOPIC, from.half, &mut |m| {
        let (topic, first) = match half::half_info(m) {
            Ok(info) => (info.topic, settings.first_check_delay(info.first_check)),
            Err(e) => {
                // Kept open: the checker rolls it back when it cannot read its destination.
                tracing::warn!(error = %e, "malformed half message");
                (String::new(), settings.first_check_delay(None))
            }
        };
        table.open(
            m.physical_offset.0,
            OpenTx {
                half_queue_offset: m.queue_offset.0,
                message_id: m.message_id.clone(),
                topic,
                checks: 0,
                next_check_ms: m.store_timestamp_ms.saturating_add(ms(first)),
                op_mark: op_from,
            },
        );
        halves += 1;
    })?;

    let mut ops = 0u64;
    scan(store, OP_TOPIC, op_from, &mut |m| {
        ops += 1;
        table.note_op(m.queue_offset.0);
        let op = match Op::decode(&m.body) {
            Ok(op) => op,
            Err(e) => {
                tracing::warn!(offset = m.queue_offset.0, error = %e, "skipping a malformed op record");
                return;
            }
        };
        match op.kind {
            OpKind::Commit => {
                table.resolve(op.half_physical, Resolution::Commit);
            }
            OpKind::Rollback => {
                table.resolve(op.half_physical, Resolution::Rollback);
            }
            OpKind::Check => {
                table.checked(op.half_physical, m.store_timestamp_ms, interval);
            }
        }
    })?;

    let mut repaired = 0u64;
    for key in table.open_keys() {
        let Some(tx) = table.get(key).cloned() else {
            continue;
        };
        let delivered = store.lookup_message_id(&tx.message_id)?.iter().any(|m| {
            m.topic == tx.topic && u64::try_from(m.prepared_transaction_offset).ok() == Some(key)
        });
        if delivered {
            t.append_op(&mut table, OpKind::Commit, key, tx.half_queue_offset)?;
            table.resolve(key, Resolution::Commit);
            repaired += 1;
        }
    }
    if halves > 0 || ops > 0 {
        tracing::info!(
            half_messages = halves,
            op_records = ops,
            open = table.len(),
            repaired,
            "rebuilt transactions from the log"
        );
    }
    Ok(())
}
