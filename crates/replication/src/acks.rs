//! Which sends waiting for sync replication are satisfied.
//!
//! In sync mode a master answers a send only once `min_in_sync` replicas — the master itself
//! and `min_in_sync - 1` slaves — hold its record durably. Each slave reports how far its log
//! is durable; the *confirm offset* is the largest offset that enough slaves hold. A send
//! waits for the exclusive end offset of its record, so it is satisfied once the confirm
//! offset reaches that end.
//!
//! Waiters are parked by end offset in an ordered map, so one slave acknowledgement releases
//! every send it covers in a single pass: many senders share one slave round trip (group
//! commit), and the cost of an acknowledgement does not grow with the number of senders it
//! leaves waiting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Broker id of a slave in its group (the master is 0, slaves 1..n). Used only as a key: any
/// value is accepted.
pub type ReplicaId = u64;

/// Tracks the durable positions of the connected slaves and the sends waiting for them.
///
/// `W` is whatever the caller answers a send with once it is replicated (a oneshot sender, a
/// callback, an id); the tracker only stores and hands them back.
pub struct SyncTracker<W> {
    min_in_sync: usize,
    /// Durable end offset of each connected slave.
    slaves: HashMap<ReplicaId, u64>,
    /// Parked waiters by the end offset they wait for, in arrival order within one offset.
    waiting: BTreeMap<u64, Vec<W>>,
    /// Total waiters in `waiting`, kept so [`SyncTracker::parked`] need not walk the map.
    parked: usize,
    /// Under a controller: the slaves that must all hold a send (the sync-state set without
    /// the master, plus any member whose joining is being proposed). `None`: any
    /// `min_in_sync - 1` connected slaves do.
    required: Option<BTreeSet<ReplicaId>>,
}

impl<W> SyncTracker<W> {
    /// A tracker needing `min_in_sync` replicas, the master itself counted: 1 = no slave
    /// needed (every wait is satisfied at once), 2 = one slave, and so on. 0 is taken as 1.
    pub fn new(min_in_sync: usize) -> Self {
        Self {
            min_in_sync,
            slaves: HashMap::new(),
            waiting: BTreeMap::new(),
            parked: 0,
            required: None,
        }
    }

    /// Switches to (or, with `None`, away from) the sync-state rule: a send is satisfied only
    /// once every slave in `members` holds it, and refused while `members` is smaller than
    /// `min_in_sync - 1`. Under that rule every member of the set holds every acknowledged
    /// record, so any member can take over without losing one. Returns the waiters now
    /// satisfied.
    pub fn require(&mut self, members: Option<BTreeSet<ReplicaId>>) -> Vec<W> {
        self.required = members;
        self.release()
    }

    /// The slaves that must hold a send under the sync-state rule, if it applies.
    pub fn required(&self) -> Option<&BTreeSet<ReplicaId>> {
        self.required.as_ref()
    }

    /// Slaves that count towards `min_in_sync`: the required ones, or every connected one.
    fn eligible(&self) -> usize {
        match &self.required {
            Some(r) => r.len(),
            None => self.slaves.len(),
        }
    }

    /// The `min_in_sync` this tracker was made with.
    pub fn min_in_sync(&self) -> usize {
        self.min_in_sync
    }

    /// A slave connected (or reconnected) holding `durable` bytes durably; returns the
    /// waiters that are now satisfied.
    ///
    /// The position is replaced, not maxed with an earlier one: a slave that restarted may
    /// have lost bytes it had not flushed, and only what it holds now counts.
    pub fn connect(&mut self, id: ReplicaId, durable: u64) -> Vec<W> {
        self.slaves.insert(id, durable);
        self.release()
    }

    /// A connected slave reports a new durable end offset; returns the waiters that are now
    /// satisfied.
    ///
    /// A lower offset than the one already known is ignored: acknowledgements can be
    /// reordered in flight, and a durable byte does not stop being durable. A slave that
    /// really lost bytes comes back through [`SyncTracker::connect`]. An id that is not
    /// connected is ignored too, so a late acknowledgement arriving after
    /// [`SyncTracker::disconnect`] cannot make a gone slave count again.
    pub fn ack(&mut self, id: ReplicaId, durable: u64) -> Vec<W> {
        match self.slaves.get_mut(&id) {
            Some(position) if durable > *position => *position = durable,
            _ => return Vec::new(),
        }
        self.release()
    }

    /// A slave disconnected; its position no longer counts. Waiters stay parked: call
    /// [`SyncTracker::fail_if_too_few`] to fail them if the group fell below the minimum.
    pub fn disconnect(&mut self, id: ReplicaId) {
        self.slaves.remove(&id);
    }

    /// The confirm offset: the offset that at least `min_in_sync - 1` connected slaves hold
    /// durably, i.e. the `(min_in_sync - 1)`-th largest durable offset among them.
    /// `u64::MAX` when no slave is needed, 0 when too few slaves are connected.
    pub fn confirmed(&self) -> u64 {
        let needed = self.slaves_needed();
        if let Some(required) = &self.required {
            if required.len() < needed {
                return 0;
            }
            return required
                .iter()
                .map(|id| self.slaves.get(id).copied().unwrap_or(0))
                .min()
                .unwrap_or(u64::MAX);
        }
        if needed == 0 {
            return u64::MAX;
        }
        if self.slaves.len() < needed {
            return 0;
        }
        let mut offsets: Vec<u64> = self.slaves.values().copied().collect();
        // Descending, so index needed-1 is held by that slave and by every one before it.
        let (_, nth, _) = offsets.select_nth_unstable_by(needed - 1, |a, b| b.cmp(a));
        *nth
    }

    /// Number of connected slaves.
    pub fn connected(&self) -> usize {
        self.slaves.len()
    }

    /// Registers `waiter` for the bytes up to `end`, the exclusive end offset of an appended
    /// record.
    ///
    /// `Ok(Some(waiter))`: already satisfied, answer it now. `Ok(None)`: parked until an
    /// acknowledgement covers `end`. `Err`: fewer than `min_in_sync - 1` slaves are connected,
    /// so waiting could only end in a timeout; the waiter comes back inside the error so the
    /// caller can answer it (the broker answers `HA_NOT_AVAILABLE`).
    pub fn wait(&mut self, end: u64, waiter: W) -> Result<Option<W>, TooFewReplicas<W>> {
        let needed = self.slaves_needed();
        if needed == 0 && self.required.as_ref().is_none_or(BTreeSet::is_empty) {
            return Ok(Some(waiter));
        }
        if self.eligible() < needed {
            return Err(TooFewReplicas {
                connected: self.eligible(),
                needed,
                waiter,
            });
        }
        if end <= self.confirmed() {
            return Ok(Some(waiter));
        }
        self.waiting.entry(end).or_default().push(waiter);
        self.parked += 1;
        Ok(None)
    }

    /// Removes and returns every parked waiter, lowest end offset first (on shutdown, or when
    /// the master steps down).
    pub fn drain(&mut self) -> Vec<W> {
        self.parked = 0;
        std::mem::take(&mut self.waiting)
            .into_values()
            .flatten()
            .collect()
    }

    /// If fewer than `min_in_sync - 1` slaves are connected, removes and returns every parked
    /// waiter, so they can be failed at once instead of each waiting out its timeout for
    /// acknowledgements that cannot come. Otherwise returns nothing.
    pub fn fail_if_too_few(&mut self) -> Vec<W> {
        if self.eligible() < self.slaves_needed() {
            self.drain()
        } else {
            Vec::new()
        }
    }

    /// Number of parked waiters.
    pub fn parked(&self) -> usize {
        self.parked
    }

    fn slaves_needed(&self) -> usize {
        self.min_in_sync.saturating_sub(1)
    }

    /// Pops every waiter whose end the confirm offset now covers.
    fn release(&mut self) -> Vec<W> {
        let confirmed = self.confirmed();
        // split_off keeps keys >= its argument, i.e. the ends still beyond the confirm offset.
        let beyond = match confirmed.checked_add(1) {
            Some(first_unconfirmed) => self.waiting.split_off(&first_unconfirmed),
            None => BTreeMap::new(),
        };
        let ready: Vec<W> = std::mem::replace(&mut self.waiting, beyond)
            .into_values()
            .flatten()
            .collect();
        self.parked -= ready.len();
        ready
    }
}

impl<W> fmt::Debug for SyncTracker<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Waiters are opaque tokens (often channels): their count is what is worth showing.
        f.debug_struct("SyncTracker")
            .field("min_in_sync", &self.min_in_sync)
            .field("slaves", &self.slaves)
            .field("parked", &self.parked)
            .finish_non_exhaustive()
    }
}

/// A send could not wait for sync replication: fewer slaves are connected than it needs.
/// Carries the waiter back so the caller can answer it.
pub struct TooFewReplicas<W> {
    /// Slaves connected when the send arrived.
    pub connected: usize,
    /// Slaves needed (`min_in_sync - 1`).
    pub needed: usize,
    /// The waiter that was not parked.
    pub waiter: W,
}

impl<W> fmt::Debug for TooFewReplicas<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No `W: Debug` bound: oneshot senders and the like need not be printable.
        f.debug_struct("TooFewReplicas")
            .field("connected", &self.connected)
            .field("needed", &self.needed)
            .finish_non_exhaustive()
    }
}

impl<W> fmt::Display for TooFewReplicas<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} slaves connected", self.connected, self.needed)
    }
}

impl<W> std::error::Error for TooFewReplicas<W> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a table test and the waiters it must release (by their ids).
    enum Step {
        Connect(ReplicaId, u64, &'static [u32]),
        Ack(ReplicaId, u64, &'static [u32]),
        Disconnect(ReplicaId),
        /// Wait for `end`: Some(true) = satisfied at once, Some(false) = parked, None = refused.
        Wait(u64, u32, Option<bool>),
        FailIfTooFew(&'static [u32]),
        Confirmed(u64),
        Parked(usize),
    }
    use Step::*;

    fn run(min_in_sync: usize, steps: &[Step]) {
        let mut tracker = SyncTracker::<u32>::new(min_in_sync);
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Connect(id, durable, want) => {
                    assert_eq!(tracker.connect(id, durable), want, "step {i}: connect");
                }
                Ack(id, durable, want) => {
                    assert_eq!(tracker.ack(id, durable), want, "step {i}: ack");
                }
                Disconnect(id) => tracker.disconnect(id),
                Wait(end, waiter, want) => {
                    let got = match tracker.wait(end, waiter) {
                        Ok(Some(w)) => {
                            assert_eq!(w, waiter, "step {i}: the waiter comes back");
                            Some(true)
                        }
                        Ok(None) => Some(false),
                        Err(e) => {
                            assert_eq!(e.waiter, waiter, "step {i}: the waiter comes back");
                            None
                        }
                    };
                    assert_eq!(got, want, "step {i}: wait({end})");
                }
                FailIfTooFew(want) => {
                    assert_eq!(tracker.fail_if_too_few(), want, "step {i}: fail_if_too_few");
                }
                Confirmed(want) => assert_eq!(tracker.confirmed(), want, "step {i}: confirmed"),
                Parked(want) => assert_eq!(tracker.parked(), want, "step {i}: parked"),
            }
        }
    }

    #[test]
    fn one_slave_needed_and_connected() {
        run(
            2,
            &[
                Connect(1, 0, &[]),
                Confirmed(0),
                Wait(100, 1, Some(false)),
                Wait(200, 2, Some(false)),
                Wait(100, 3, Some(false)),
                Ack(1, 150, &[1, 3]),
                Confirmed(150),
                Parked(1),
                Wait(150, 4, Some(true)),
                Ack(1, 300, &[2]),
                Parked(0),
            ],
        );
    }

    #[test]
    fn two_slaves_with_min_two_take_the_fastest() {
        run(
            2,
            &[
                Connect(1, 0, &[]),
                Connect(2, 0, &[]),
                Wait(100, 1, Some(false)),
                Ack(2, 100, &[1]),
                Confirmed(100),
                Ack(1, 50, &[]),
                Confirmed(100),
            ],
        );
    }

    #[test]
    fn two_slaves_with_min_three_take_the_slowest() {
        run(
            3,
            &[
                Connect(1, 0, &[]),
                Wait(10, 9, None),
                Connect(2, 0, &[]),
                Wait(100, 1, Some(false)),
                Wait(200, 2, Some(false)),
                Ack(1, 300, &[]),
                Confirmed(0),
                Ack(2, 150, &[1]),
                Confirmed(150),
                Ack(2, 250, &[2]),
                Confirmed(250),
            ],
        );
    }

    #[test]
    fn acks_out_of_order_never_move_back() {
        run(
            2,
            &[
                Connect(1, 0, &[]),
                Wait(100, 1, Some(false)),
                Wait(200, 2, Some(false)),
                Ack(1, 200, &[1, 2]),
                Ack(1, 100, &[]),
                Confirmed(200),
                Wait(150, 3, Some(true)),
            ],
        );
    }

    #[test]
    fn reconnect_with_lower_offset_resets_the_position() {
        run(
            2,
            &[
                Connect(1, 0, &[]),
                Ack(1, 500, &[]),
                Disconnect(1),
                // Restarted and lost its unflushed tail: only 300 bytes count now.
                Connect(1, 300, &[]),
                Confirmed(300),
                Wait(400, 1, Some(false)),
                Ack(1, 400, &[1]),
            ],
        );
    }

    #[test]
    fn connect_can_release_waiters() {
        run(
            3,
            &[
                Connect(1, 500, &[]),
                Connect(2, 0, &[]),
                Wait(100, 1, Some(false)),
                Disconnect(2),
                Connect(2, 100, &[1]),
            ],
        );
    }

    #[test]
    fn disconnect_below_minimum_fails_parked_waiters_and_refuses_new_ones() {
        run(
            3,
            &[
                Connect(1, 0, &[]),
                Connect(2, 0, &[]),
                Wait(200, 2, Some(false)),
                Wait(100, 1, Some(false)),
                FailIfTooFew(&[]),
                Disconnect(2),
                Confirmed(0),
                Wait(50, 3, None),
                FailIfTooFew(&[1, 2]),
                Parked(0),
                // A late ack from the slave that is gone does not count.
                Ack(2, 1000, &[]),
                Confirmed(0),
            ],
        );
    }

    #[test]
    fn waiter_exactly_at_confirmed_is_satisfied() {
        run(
            2,
            &[
                Connect(1, 100, &[]),
                Wait(100, 1, Some(true)),
                Wait(101, 2, Some(false)),
                Ack(1, 101, &[2]),
            ],
        );
    }

    #[test]
    fn under_the_sync_state_rule_every_member_must_hold_a_send() {
        let mut t = SyncTracker::<u32>::new(2);
        t.connect(1, 0);
        t.connect(2, 0);
        assert!(t.require(Some([1, 2].into_iter().collect())).is_empty());
        assert_eq!(t.wait(100, 7).ok(), Some(None));
        // One member is not enough, however far it is.
        assert!(t.ack(1, 500).is_empty());
        assert_eq!(t.confirmed(), 0);
        assert_eq!(t.ack(2, 100), vec![7]);
        // A member that never connected holds nothing.
        t.require(Some([1, 3].into_iter().collect()));
        assert_eq!(t.confirmed(), 0);
        // The set shrank below min_in_sync: refused at once, parked ones failed.
        assert_eq!(t.wait(600, 8).ok(), Some(None));
        t.require(Some(BTreeSet::new()));
        assert_eq!(t.fail_if_too_few(), vec![8]);
        assert!(t.wait(700, 9).is_err());
        // Back to counting connected slaves.
        t.require(None);
        assert_eq!(t.confirmed(), 500);
    }

    #[test]
    fn min_in_sync_one_under_the_sync_state_rule_still_waits_for_members() {
        let mut t = SyncTracker::<u32>::new(1);
        t.connect(1, 10);
        t.require(Some([1].into_iter().collect()));
        assert_eq!(t.wait(5, 1).ok(), Some(Some(1)));
        assert_eq!(t.wait(50, 2).ok(), Some(None));
        assert_eq!(t.ack(1, 50), vec![2]);
    }

    #[test]
    fn min_in_sync_one_is_always_immediate() {
        for min in [0, 1] {
            run(
                min,
                &[
                    Confirmed(u64::MAX),
                    Wait(u64::MAX, 1, Some(true)),
                    Connect(1, 5, &[]),
                    Wait(10, 2, Some(true)),
                    Disconnect(1),
                    Wait(10, 3, Some(true)),
                    FailIfTooFew(&[]),
                    Parked(0),
                ],
            );
        }
    }

    #[test]
    fn ack_up_to_u64_max_releases_everything() {
        run(
            2,
            &[
                Connect(1, 0, &[]),
                Wait(u64::MAX, 1, Some(false)),
                Wait(1, 2, Some(false)),
                Ack(1, u64::MAX, &[2, 1]),
            ],
        );
    }

    #[test]
    fn drain_returns_all_in_offset_order() {
        let mut tracker = SyncTracker::new(2);
        tracker.connect(7, 0);
        for (end, w) in [(30, 'c'), (10, 'a'), (20, 'b'), (10, 'A')] {
            assert!(matches!(tracker.wait(end, w), Ok(None)));
        }
        assert_eq!(tracker.parked(), 4);
        assert_eq!(tracker.drain(), ['a', 'A', 'b', 'c']);
        assert_eq!(tracker.parked(), 0);
        assert_eq!(tracker.connected(), 1);
        assert_eq!(tracker.min_in_sync(), 2);
    }

    #[test]
    fn too_few_replicas_reads_well() {
        let mut tracker = SyncTracker::new(3);
        tracker.connect(1, 0);
        let Err(e) = tracker.wait(1, ()) else {
            panic!("one slave of two must be refused");
        };
        assert_eq!(e.to_string(), "1 of 2 slaves connected");
        assert_eq!(
            format!("{e:?}"),
            "TooFewReplicas { connected: 1, needed: 2, .. }"
        );
        assert!(format!("{tracker:?}").contains("parked: 0"));
    }
}
