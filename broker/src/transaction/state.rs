//! The transaction table, a pure state machine: which transactions are open (half message
//! stored, no commit or rollback yet), when each is next checked and how often it was checked,
//! which were resolved lately, and the checkpoint from which the table can be rebuilt from the
//! commit log. It does no I/O; [`super::Transactions`] drives it under one lock together with
//! the appends that make each transition durable.
//!
//! A transaction is keyed by the physical offset of its half message record; the transaction
//! id clients see is that offset in hex ([`transaction_id`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Commit,
    Rollback,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Commit => "committed",
            Resolution::Rollback => "rolled back",
        }
    }
}

/// The transaction id of the transaction keyed `key` (16 upper-case hex digits).
pub fn transaction_id(key: u64) -> String {
    format!("{key:016X}")
}

/// The key of a transaction id, if it is one this broker could have issued.
pub fn parse_transaction_id(id: &str) -> Option<u64> {
    if id.len() != 16 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(id, 16).ok()
}

/// An open transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTx {
    /// Offset of the half message in the half topic's queue.
    pub half_queue_offset: u64,
    pub message_id: String,
    /// The topic the message is for.
    pub topic: String,
    /// Checks sent so far.
    pub checks: u32,
    /// When it is next checked (ms since the epoch).
    pub next_check_ms: i64,
    /// Every op record of this transaction is at or above this op-queue offset.
    pub op_mark: u64,
}

/// What the table knows of a transaction key.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Open(&'a OpenTx),
    /// Resolved lately (the table remembers a bounded number).
    Resolved(Resolution),
    Unknown,
}

/// Where a rebuild of the table starts: every open transaction's half message is at or above
/// `half` in the half queue, and every op record that matters is at or above `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub half: u64,
    pub op: u64,
}

/// The open transactions and their check schedule.
#[derive(Debug)]
pub struct TxTable {
    open: BTreeMap<u64, OpenTx>,
    /// (next check time, key) of every open transaction.
    due: BTreeSet<(i64, u64)>,
    recent: VecDeque<u64>,
    recent_resolutions: HashMap<u64, Resolution>,
    recent_capacity: usize,
    /// Next half-queue offset to be written (as far as the table has seen).
    next_half: u64,
    /// Next op-queue offset to be written (as far as the table has seen).
    next_op: u64,
}

impl TxTable {
    /// An empty table whose queues continue at `next_half` and `next_op`; remembers the last
    /// `recent_capacity` resolutions.
    pub fn new(next_half: u64, next_op: u64, recent_capacity: usize) -> Self {
        TxTable {
            open: BTreeMap::new(),
            due: BTreeSet::new(),
            recent: VecDeque::new(),
            recent_resolutions: HashMap::new(),
            recent_capacity: recent_capacity.max(1),
            next_half,
            next_op,
        }
    }

    /// Records an open transaction (replacing one with the same key).
    pub fn open(&mut self, key: u64, tx: OpenTx) {
        self.next_half = self.next_half.max(tx.half_queue_offset.saturating_add(1));
        self.due.insert((tx.next_check_ms, key));
        if let Some(old) = self.open.insert(key, tx) {
            self.due.remove(&(old.next_check_ms, key));
        }
    }

    pub fn lookup(&self, key: u64) -> Lookup<'_> {
        if let Some(tx) = self.open.get(&key) {
            return Lookup::Open(tx);
        }
        match self.recent_resolutions.get(&key) {
            Some(r) => Lookup::Resolved(*r),
            None => Lookup::Unknown,
        }
    }

    pub fn get(&self, key: u64) -> Option<&OpenTx> {
        self.open.get(&key)
    }

    /// Ends a transaction: it is no longer open and is remembered as resolved. Returns it if
    /// it was open.
    pub fn resolve(&mut self, key: u64, resolution: Resolution) -> Option<OpenTx> {
        let tx = self.open.remove(&key);
        if let Some(tx) = &tx {
            self.due.remove(&(tx.next_check_ms, key));
        }
        self.remember(key, resolution);
        tx
    }

    fn remember(&mut self, key: u64, resolution: Resolution) {
        if self.recent_resolutions.insert(key, resolution).is_none() {
            self.recent.push_back(key);
        }
        while self.recent.len() > self.recent_capacity {
            if let Some(old) = self.recent.pop_front() {
                self.recent_resolutions.remove(&old);
            }
        }
    }

    /// An op record was written at `op_queue_offset`.
    pub fn note_op(&mut self, op_queue_offset: u64) {
        self.next_op = self.next_op.max(op_queue_offset.saturating_add(1));
    }

    /// The op-queue offset the next op record will get (or a lower one).
    pub fn next_op(&self) -> u64 {
        self.next_op
    }

    /// Keys of open transactions due at `now_ms`, earliest first, at most `max`.
    pub fn due(&self, now_ms: i64, max: usize) -> Vec<u64> {
        self.due
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(max)
            .map(|(_, key)| *key)
            .collect()
    }

    /// A check was sent at `at_ms`: counts it and schedules the next one `interval_ms` later.
    /// Returns the checks so far, or `None` if the transaction is not open.
    pub fn checked(&mut self, key: u64, at_ms: i64, interval_ms: i64) -> Option<u32> {
        let tx = self.open.get_mut(&key)?;
        self.due.remove(&(tx.next_check_ms, key));
        tx.checks = tx.checks.saturating_add(1);
        tx.next_check_ms = at_ms.saturating_add(interval_ms);
        self.due.insert((tx.next_check_ms, key));
        Some(tx.checks)
    }

    /// Moves the next check of an open transaction to `at_ms` without counting a check.
    pub fn reschedule(&mut self, key: u64, at_ms: i64) {
        if let Some(tx) = self.open.get_mut(&key) {
            self.due.remove(&(tx.next_check_ms, key));
            tx.next_check_ms = at_ms;
            self.due.insert((at_ms, key));
        }
    }

    /// Where a rebuild must start to find every open transaction again.
    pub fn checkpoint(&self) -> Checkpoint {
        // Keys grow with half-queue offsets and op marks (both assigned under the caller's
        // lock in append order), so the first open transaction holds both minimums.
        match self.open.values().next() {
            Some(tx) => Checkpoint {
                half: tx.half_queue_offset,
                op: tx.op_mark,
            },
            None => Checkpoint {
                half: self.next_half,
                op: self.next_op,
            },
        }
    }

    /// Keys of every open transaction, in key order.
    pub fn open_keys(&self) -> Vec<u64> {
        self.open.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(half: u64, next_check_ms: i64, op_mark: u64) -> OpenTx {
        OpenTx {
            half_queue_offset: half,
            message_id: format!("M{half}"),
            topic: "t".into(),
            checks: 0,
            next_check_ms,
            op_mark,
        }
    }

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        for key in [0u64, 1, 4096, u64::MAX] {
            assert_eq!(parse_transaction_id(&transaction_id(key)), Some(key));
        }
        assert_eq!(parse_transaction_id("00000000000000ff"), Some(255));
        for bad in [
            "",
            "12",
            "0000000000000000F",
            "000000000000000G",
            "-000000000000001",
        ] {
            assert_eq!(parse_transaction_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn open_then_commit_then_second_end_sees_the_resolution() {
        let mut t = TxTable::new(0, 0, 8);
        t.open(100, tx(0, 6_000, 0));
        assert!(matches!(t.lookup(100), Lookup::Open(o) if o.message_id == "M0"));
        assert_eq!(t.lookup(7), Lookup::Unknown);
        let ended = t.resolve(100, Resolution::Commit).unwrap();
        assert_eq!(ended.half_queue_offset, 0);
        assert_eq!(t.lookup(100), Lookup::Resolved(Resolution::Commit));
        // A second resolution finds nothing open: the caller must not append again.
        assert_eq!(t.resolve(100, Resolution::Rollback), None);
        assert!(t.is_empty());
        assert!(t.due(i64::MAX, 10).is_empty());
    }

    #[test]
    fn checks_are_counted_and_rescheduled_in_due_order() {
        let mut t = TxTable::new(0, 0, 8);
        t.open(10, tx(0, 1_000, 0));
        t.open(20, tx(1, 500, 0));
        t.open(30, tx(2, 9_000, 0));
        assert_eq!(t.due(999, 10), vec![20]);
        assert_eq!(t.due(1_000, 10), vec![20, 10]);
        assert_eq!(t.due(1_000, 1), vec![20]);
        assert_eq!(t.checked(20, 1_000, 30_000), Some(1));
        assert_eq!(t.due(1_000, 10), vec![10]);
        assert_eq!(t.checked(20, 31_000, 30_000), Some(2));
        assert_eq!(t.get(20).unwrap().next_check_ms, 61_000);
        assert_eq!(t.checked(99, 0, 1), None);
        t.reschedule(10, 50_000);
        assert_eq!(t.due(10_000, 10), vec![30]);
        assert_eq!(t.get(10).unwrap().checks, 0);
        t.resolve(30, Resolution::Rollback);
        assert_eq!(t.due(i64::MAX, 10), vec![10, 20]);
    }

    #[test]
    fn checkpoint_follows_the_oldest_open_transaction() {
        let mut t = TxTable::new(5, 3, 8);
        assert_eq!(t.checkpoint(), Checkpoint { half: 5, op: 3 });
        t.open(100, tx(5, 0, 3));
        t.note_op(3);
        t.open(200, tx(6, 0, 4));
        t.note_op(4);
        t.open(300, tx(7, 0, 5));
        assert_eq!(t.checkpoint(), Checkpoint { half: 5, op: 3 });
        // Resolving a younger one does not move it; resolving the oldest does.
        t.resolve(200, Resolution::Commit);
        assert_eq!(t.checkpoint(), Checkpoint { half: 5, op: 3 });
        t.resolve(100, Resolution::Rollback);
        assert_eq!(t.checkpoint(), Checkpoint { half: 7, op: 5 });
        t.resolve(300, Resolution::Commit);
        t.note_op(9);
        assert_eq!(t.checkpoint(), Checkpoint { half: 8, op: 10 });
    }

    #[test]
    fn recent_resolutions_are_bounded() {
        let mut t = TxTable::new(0, 0, 2);
        for key in 1..=3u64 {
            t.open(key, tx(key, 0, 0));
            t.resolve(key, Resolution::Commit);
        }
        assert_eq!(t.lookup(1), Lookup::Unknown);
        assert_eq!(t.lookup(2), Lookup::Resolved(Resolution::Commit));
        assert_eq!(t.lookup(3), Lookup::Resolved(Resolution::Commit));
        // Resolving an unknown key (an op replayed for a half below the checkpoint) is
        // remembered but opens nothing.
        assert_eq!(t.resolve(42, Resolution::Rollback), None);
        assert_eq!(t.lookup(42), Lookup::Resolved(Resolution::Rollback));
        assert!(t.is_empty());
    }

    #[test]
    fn reopening_a_key_replaces_its_schedule() {
        let mut t = TxTable::new(0, 0, 2);
        t.open(1, tx(0, 100, 0));
        t.open(1, tx(0, 200, 0));
        assert_eq!(t.len(), 1);
        assert!(t.due(150, 10).is_empty());
        assert_eq!(t.due(200, 10), vec![1]);
    }
}
