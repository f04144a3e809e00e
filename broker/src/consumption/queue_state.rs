//! The consumption state of one consumer group on one (topic, queue): a pure state machine
//! with no I/O and no clock of its own (callers pass "now").
//!
//! Invariants:
//! - every offset below `committed` is finished (acked, skipped by the filter, dead-lettered or
//!   aged out of the store);
//! - offsets at or above `committed` are each in at most one of: `in_flight` (delivered, not yet
//!   finished), `done` (finished out of order), `held` (read, but held back because an earlier
//!   message of its FIFO message group is in flight); anything else is unread;
//! - `committed` is the lowest offset that is not finished, so it only ever moves past a
//!   contiguous run of finished offsets;
//! - `next` (the read cursor) is at least `committed`; offsets between them may be unread only
//!   after a restart, when the cursor starts again from `committed` and skips known offsets.

use std::collections::{BTreeMap, HashMap};

use super::ranges::OffsetRanges;

/// A delivered, not yet finished message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Sequence number of the current delivery; only a receipt handle carrying it is valid.
    pub seq: u64,
    /// Deliveries so far (1 = first delivery).
    pub attempt: u32,
    /// Wall-clock ms after which the message may be delivered again.
    pub deadline_ms: i64,
    /// FIFO message group, if the message has one.
    pub message_group: Option<String>,
    /// A move to the dead-letter queue is under way (memory only: after a restart the entry is
    /// simply expired again and the move retried).
    pub dead_lettering: bool,
}

/// Why a receipt handle does not match the in-flight state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Nothing is in flight at that offset (finished, never delivered, or unknown).
    NotInFlight,
    /// In flight under a newer delivery.
    OldDelivery,
}

/// State of one group on one (topic, queue); see the module docs for the invariants.
#[derive(Debug, Default, Clone)]
pub struct QueueState {
    committed: u64,
    next: u64,
    in_flight: BTreeMap<u64, InFlight>,
    done: OffsetRanges,
    held: BTreeMap<u64, String>,
    in_flight_groups: HashMap<String, usize>,
    held_groups: HashMap<String, usize>,
}

fn inc(map: &mut HashMap<String, usize>, key: &str) {
    *map.entry(key.to_owned()).or_insert(0) += 1;
}

fn dec(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl QueueState {
    /// A queue whose offsets below `committed` are all finished.
    pub fn new(committed: u64) -> Self {
        QueueState {
            committed,
            next: committed,
            ..Self::default()
        }
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The read cursor: where the next scan of new messages starts.
    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn set_next(&mut self, next: u64) {
        self.next = next.max(self.committed);
    }

    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    pub fn in_flight(&self, offset: u64) -> Option<&InFlight> {
        self.in_flight.get(&offset)
    }

    pub fn in_flight_entries(&self) -> impl Iterator<Item = (u64, &InFlight)> + '_ {
        self.in_flight.iter().map(|(o, f)| (*o, f))
    }

    pub fn done_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.done.iter()
    }

    /// Held-back FIFO messages in offset order.
    pub fn held(&self) -> Vec<(u64, String)> {
        self.held.iter().map(|(o, g)| (*o, g.clone())).collect()
    }

    pub fn is_finished(&self, offset: u64) -> bool {
        offset < self.committed || self.done.contains(offset)
    }

    /// Finished, in flight or held: anything but unread.
    pub fn is_known(&self, offset: u64) -> bool {
        self.is_finished(offset)
            || self.in_flight.contains_key(&offset)
            || self.held.contains_key(&offset)
    }

    /// Whether a message of FIFO group `group` is in flight.
    pub fn group_in_flight(&self, group: &str) -> bool {
        self.in_flight_groups.contains_key(group)
    }

    /// Whether a newly read message of `group` must be held back: an earlier message of the
    /// group is in flight or itself held.
    pub fn group_blocked(&self, group: &str) -> bool {
        self.in_flight_groups.contains_key(group) || self.held_groups.contains_key(group)
    }

    /// Checks that `seq` is the current delivery of `offset`.
    pub fn check(&self, offset: u64, seq: u64) -> Result<&InFlight, Stale> {
        match self.in_flight.get(&offset) {
            None => Err(Stale::NotInFlight),
            Some(f) if f.seq != seq => Err(Stale::OldDelivery),
            Some(f) => Ok(f),
        }
    }

    /// Puts `offset` in flight (a delivery, a redelivery, a new deadline, or a replayed record).
    /// Ignored, returning false, when the offset is already finished.
    pub fn set_in_flight(&mut self, offset: u64, entry: InFlight) -> bool {
        if self.is_finished(offset) {
            return false;
        }
        if let Some(group) = self.held.remove(&offset) {
            dec(&mut self.held_groups, &group);
        }
        if let Some(g) = &entry.message_group {
            inc(&mut self.in_flight_groups, g);
        }
        if let Some(old) = self.in_flight.insert(offset, entry) {
            if let Some(g) = &old.message_group {
                dec(&mut self.in_flight_groups, g);
            }
        }
        true
    }

    /// Flags or clears a dead-letter move under way; false when nothing is in flight there.
    pub fn set_dead_lettering(&mut self, offset: u64, on: bool) -> bool {
        match self.in_flight.get_mut(&offset) {
            Some(f) => {
                f.dead_lettering = on;
                true
            }
            None => false,
        }
    }

    /// Moves the deadline of an in-flight entry (memory only: used to retry a failed
    /// dead-letter move later); false when nothing is in flight there.
    pub fn set_deadline(&mut self, offset: u64, deadline_ms: i64) -> bool {
        match self.in_flight.get_mut(&offset) {
            Some(f) => {
                f.deadline_ms = deadline_ms;
                true
            }
            None => false,
        }
    }

    /// Holds back a read message of FIFO group `group`.
    pub fn hold(&mut self, offset: u64, group: String) {
        if self.is_known(offset) {
            return;
        }
        inc(&mut self.held_groups, &group);
        self.held.insert(offset, group);
    }

    /// Marks `offset` finished (acked, dead-lettered, filtered out, or gone from the store) and
    /// moves the committed offset past any contiguous finished run.
    pub fn finish(&mut self, offset: u64) {
        self.forget(offset);
        if offset >= self.committed {
            self.done.insert(offset);
            self.advance_committed();
        }
    }

    /// Marks every offset of `[start, end)` finished, in flight and held ones included (a
    /// merge of acks made elsewhere), and moves the committed offset as [`finish`](Self::finish)
    /// does. Offsets below the committed offset are already finished; an empty range does
    /// nothing.
    pub fn finish_range(&mut self, start: u64, end: u64) {
        let start = start.max(self.committed);
        if start >= end {
            return;
        }
        let known: Vec<u64> = self
            .in_flight
            .range(start..end)
            .map(|(o, _)| *o)
            .chain(self.held.range(start..end).map(|(o, _)| *o))
            .collect();
        for o in known {
            self.forget(o);
        }
        self.done.insert_range(start, end);
        self.advance_committed();
    }

    /// The parts of `[start, end)` not finished here, as ascending disjoint ranges. Costs one
    /// step per finished range crossed, not per offset.
    pub fn unfinished_in(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut o = start.max(self.committed);
        while o < end {
            if let Some(done_end) = self.done.end_of_range_containing(o) {
                o = done_end;
                continue;
            }
            let stop = self.done.next_start_after(o).map_or(end, |s| s.min(end));
            out.push((o, stop));
            o = stop;
        }
        out
    }

    /// Drops the in-flight or held entry at `offset`, if any.
    fn forget(&mut self, offset: u64) {
        if let Some(old) = self.in_flight.remove(&offset) {
            if let Some(g) = &old.message_group {
                dec(&mut self.in_flight_groups, g);
            }
        }
        if let Some(group) = self.held.remove(&offset) {
            dec(&mut self.held_groups, &group);
        }
    }

    /// Marks `[from, to)` finished (filtered out by tag hash), except offsets in flight or held.
    pub fn mark_skipped(&mut self, from: u64, to: u64) {
        let mut start = from.max(self.committed);
        if start >= to {
            return;
        }
        let mut blockers: Vec<u64> = self
            .in_flight
            .range(start..to)
            .map(|(o, _)| *o)
            .chain(self.held.range(start..to).map(|(o, _)| *o))
            .collect();
        blockers.sort_unstable();
        for b in blockers {
            self.done.insert_range(start, b);
            start = b + 1;
        }
        self.done.insert_range(start, to);
        self.advance_committed();
    }

    fn advance_committed(&mut self) {
        while let Some(end) = self.done.take_range_at(self.committed) {
            self.committed = end;
        }
        self.next = self.next.max(self.committed);
    }

    /// Forgets everything and restarts the queue at `offset` (reset by time, or first use).
    pub fn reset(&mut self, offset: u64) {
        *self = QueueState::new(offset);
    }

    /// The store no longer has anything below `min` (retention): those offsets count as
    /// finished, and in-flight or held entries there are dropped.
    pub fn clamp_min(&mut self, min: u64) {
        if self.committed >= min {
            return;
        }
        let gone: Vec<u64> = self
            .in_flight
            .range(..min)
            .map(|(o, _)| *o)
            .chain(self.held.range(..min).map(|(o, _)| *o))
            .collect();
        for o in gone {
            self.finish(o);
        }
        self.done.remove_below(min);
        self.committed = min;
        self.advance_committed();
    }

    /// The first offset at or after `from` that is unread.
    pub fn skip_known(&self, from: u64) -> u64 {
        let mut o = from.max(self.committed);
        loop {
            if let Some(end) = self.done.end_of_range_containing(o) {
                o = end;
            } else if self.in_flight.contains_key(&o) || self.held.contains_key(&o) {
                o += 1;
            } else {
                return o;
            }
        }
    }

    /// The first known offset strictly after `from` (reads can stop there).
    pub fn next_known_after(&self, from: u64) -> Option<u64> {
        let after = from.saturating_add(1);
        [
            self.done.next_start_after(from),
            self.in_flight.range(after..).next().map(|(o, _)| *o),
            self.held.range(after..).next().map(|(o, _)| *o),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// In-flight entries whose deadline has passed and that are not being dead-lettered.
    pub fn expired(&self, now_ms: i64) -> impl Iterator<Item = (u64, &InFlight)> + '_ {
        self.in_flight
            .iter()
            .filter(move |(_, f)| f.deadline_ms <= now_ms && !f.dead_lettering)
            .map(|(o, f)| (*o, f))
    }

    /// The earliest deadline among entries that can expire.
    pub fn next_deadline(&self) -> Option<i64> {
        self.in_flight
            .values()
            .filter(|f| !f.dead_lettering)
            .map(|f| f.deadline_ms)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fl(seq: u64, deadline_ms: i64, group: Option<&str>) -> InFlight {
        InFlight {
            seq,
            attempt: 1,
            deadline_ms,
            message_group: group.map(str::to_owned),
            dead_lettering: false,
        }
    }

    #[test]
    fn committed_advances_only_over_contiguous_finished_offsets() {
        let mut q = QueueState::new(0);
        for o in 0..5 {
            assert!(q.set_in_flight(o, fl(o + 100, 10, None)));
        }
        q.set_next(5);
        q.finish(1);
        q.finish(3);
        assert_eq!(q.committed(), 0);
        q.finish(0);
        assert_eq!(q.committed(), 2);
        q.finish(4);
        assert_eq!(q.committed(), 2);
        q.finish(2);
        assert_eq!(q.committed(), 5);
        assert_eq!(q.in_flight_len(), 0);
        assert_eq!(q.done_ranges().count(), 0);
        assert!(q.is_finished(4) && !q.is_finished(5));
    }

    #[test]
    fn stale_sequence_is_refused() {
        let mut q = QueueState::new(0);
        q.set_in_flight(0, fl(1, 10, None));
        assert!(q.check(0, 1).is_ok());
        q.set_in_flight(0, fl(2, 20, None));
        assert_eq!(q.check(0, 1), Err(Stale::OldDelivery));
        assert!(q.check(0, 2).is_ok());
        q.finish(0);
        assert_eq!(q.check(0, 2), Err(Stale::NotInFlight));
        // A replayed delivery of a finished offset must not resurrect it.
        assert!(!q.set_in_flight(0, fl(3, 30, None)));
        assert_eq!(q.in_flight_len(), 0);
    }

    #[test]
    fn skipped_ranges_avoid_in_flight_and_held() {
        let mut q = QueueState::new(0);
        q.set_in_flight(2, fl(1, 10, None));
        q.hold(4, "g".into());
        q.mark_skipped(0, 6);
        assert_eq!(q.committed(), 2);
        assert!(!q.is_finished(2) && !q.is_finished(4));
        assert!(q.is_finished(3) && q.is_finished(5));
        q.finish(2);
        assert_eq!(q.committed(), 4);
        q.finish(4);
        assert_eq!(q.committed(), 6);
    }

    #[test]
    fn expiry_and_deadlines() {
        let mut q = QueueState::new(0);
        q.set_in_flight(0, fl(1, 100, None));
        q.set_in_flight(1, fl(2, 50, None));
        assert_eq!(q.next_deadline(), Some(50));
        assert_eq!(q.expired(49).count(), 0);
        assert_eq!(q.expired(50).map(|(o, _)| o).collect::<Vec<_>>(), vec![1]);
        assert_eq!(q.expired(100).count(), 2);
        q.set_dead_lettering(1, true);
        assert_eq!(q.expired(100).map(|(o, _)| o).collect::<Vec<_>>(), vec![0]);
        assert_eq!(q.next_deadline(), Some(100));
    }

    #[test]
    fn fifo_groups_block_until_finished() {
        let mut q = QueueState::new(0);
        q.set_in_flight(0, fl(1, 10, Some("A")));
        assert!(q.group_blocked("A"));
        assert!(!q.group_blocked("B"));
        q.hold(1, "A".into());
        q.finish(0);
        // Still blocked by the held message until it is delivered.
        assert!(!q.group_in_flight("A"));
        assert!(q.group_blocked("A"));
        assert_eq!(q.held(), vec![(1, "A".to_owned())]);
        q.set_in_flight(1, fl(2, 10, Some("A")));
        assert_eq!(q.held_len(), 0);
        assert!(q.group_in_flight("A"));
        q.finish(1);
        assert!(!q.group_blocked("A"));
        assert_eq!(q.committed(), 2);
    }

    #[test]
    fn skip_known_and_next_known() {
        let mut q = QueueState::new(0);
        q.finish(1);
        q.finish(2);
        q.set_in_flight(3, fl(1, 10, None));
        q.hold(6, "g".into());
        assert_eq!(q.skip_known(0), 0);
        assert_eq!(q.skip_known(1), 4);
        assert_eq!(q.next_known_after(0), Some(1));
        assert_eq!(q.next_known_after(4), Some(6));
        assert_eq!(q.next_known_after(6), None);
    }

    #[test]
    fn random_operations_match_a_simple_model() {
        // Model: per offset one of unread / in flight / held / finished; committed must be the
        // lowest offset that is not finished.
        #[derive(Clone, Copy, PartialEq, Debug)]
        enum M {
            Unread,
            InFlight,
            Held,
            Finished,
        }
        const N: u64 = 40;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _case in 0..200 {
            let mut q = QueueState::new(0);
            let mut model = vec![M::Unread; N as usize];
            for step in 0..300u64 {
                let o = rand(N);
                let i = o as usize;
                match rand(4) {
                    0 => {
                        let put = q.set_in_flight(o, fl(step, 0, None));
                        assert_eq!(put, model[i] != M::Finished);
                        if put {
                            model[i] = M::InFlight;
                        }
                    }
                    1 => {
                        if model[i] == M::Unread {
                            q.hold(o, "g".into());
                            model[i] = M::Held;
                        }
                    }
                    2 => {
                        q.finish(o);
                        model[i] = M::Finished;
                    }
                    _ => {
                        let end = (o + rand(5)).min(N);
                        q.mark_skipped(o, end);
                        for m in &mut model[i..end as usize] {
                            if *m == M::Unread {
                                *m = M::Finished;
                            }
                        }
                    }
                }
                let want = model
                    .iter()
                    .position(|m| *m != M::Finished)
                    .map_or(N, |p| p as u64);
                assert_eq!(q.committed(), want);
                for (j, m) in model.iter().enumerate() {
                    let j = j as u64;
                    assert_eq!(q.is_finished(j), *m == M::Finished, "offset {j}");
                    assert_eq!(q.in_flight(j).is_some(), *m == M::InFlight, "offset {j}");
                }
                let unread = model.iter().position(|m| *m == M::Unread);
                let skip = q.skip_known(0);
                match unread {
                    Some(p) => assert_eq!(skip, p as u64),
                    None => assert!(skip >= N),
                }
            }
        }
    }

    #[test]
    fn finish_range_takes_in_flight_and_held_and_moves_committed() {
        let mut q = QueueState::new(2);
        q.set_in_flight(3, fl(1, 10, Some("A")));
        q.hold(4, "A".into());
        q.set_in_flight(9, fl(2, 10, None));
        q.finish(7);
        q.finish_range(0, 6);
        assert_eq!(q.committed(), 6);
        assert!(!q.group_blocked("A"));
        assert_eq!(q.in_flight_len(), 1);
        assert_eq!(q.held_len(), 0);
        q.finish_range(6, 7);
        assert_eq!(q.committed(), 8);
        q.finish_range(10, 10);
        q.finish_range(5, 3);
        assert_eq!(q.committed(), 8);
        assert_eq!(q.done_ranges().count(), 0);
        q.finish_range(8, 1 << 40);
        assert_eq!(q.committed(), 1 << 40);
        assert_eq!(q.in_flight_len(), 0);
    }

    #[test]
    fn unfinished_parts_skip_finished_ranges() {
        let mut q = QueueState::new(3);
        q.finish(5);
        q.finish(6);
        q.finish(9);
        q.set_in_flight(4, fl(1, 10, None));
        assert_eq!(q.unfinished_in(0, 12), vec![(3, 5), (7, 9), (10, 12)]);
        assert!(q.unfinished_in(5, 7).is_empty());
        assert_eq!(q.unfinished_in(6, 8), vec![(7, 8)]);
        assert!(q.unfinished_in(0, 3).is_empty());
        assert!(q.unfinished_in(8, 8).is_empty());
    }

    #[test]
    fn clamp_and_reset() {
        let mut q = QueueState::new(0);
        q.set_in_flight(1, fl(1, 10, Some("A")));
        q.finish(5);
        q.clamp_min(3);
        assert_eq!(q.committed(), 3);
        assert_eq!(q.in_flight_len(), 0);
        assert!(!q.group_blocked("A"));
        q.finish(3);
        q.finish(4);
        assert_eq!(q.committed(), 6);
        q.reset(2);
        assert_eq!((q.committed(), q.next()), (2, 2));
        assert!(!q.is_finished(3));
    }
}
