//! The master side of a replica, as the real master and controller agent do it: slaves
//! admitted by the real `divergence`, sync sends parked in the real `SyncTracker` under
//! `require(Some(required))`, a send acknowledged only when the tracker releases it while
//! the lease is valid and the fence is over, and the sync-state proposals.

use std::collections::{BTreeMap, BTreeSet};

use rocketlog_replication::SyncTracker;

use super::net::{Msg, Rec};
use super::replica::{Note, Out, Rules};

/// The master itself and one slave.
pub const MIN_IN_SYNC: usize = 2;
/// A slave at most this many records behind the master's end counts as caught up.
pub const MAX_LAG: u64 = 2;
/// A slave not caught up for this long leaves the master's proposal.
pub const MAX_LAG_MS: u64 = 2_000;
const RETRANSMIT_MS: u64 = 500;
const KEEPALIVE_MS: u64 = 500;
/// Silence after which a master drops a slave's connection (and a slave re-joins).
pub const IDLE_MS: u64 = 3_000;
const MAX_CHUNK: usize = 64;

/// One admitted slave's stream.
#[derive(Debug)]
struct Link {
    inc: u64,
    session: u64,
    sent_end: u64,
    acked: u64,
    last_heard: u64,
    last_sent: u64,
    last_progress: u64,
    /// When its durable end was last within `MAX_LAG` of the master's.
    caught_up_at: Option<u64>,
}

#[derive(Debug)]
pub struct Mastership {
    pub epoch: u64,
    epoch_start: u64,
    since: u64,
    pub lease_until: u64,
    pub fence_until: u64,
    /// The sync-state set as the last answer showed it, and its version.
    pub committed: BTreeSet<u64>,
    version: u64,
    /// Proposals made on `version` whose fate is unknown, by heartbeat: any one of them may
    /// be the next committed set, so every member of each must hold what is acknowledged.
    pending: BTreeMap<u64, BTreeSet<u64>>,
    tracker: SyncTracker<(u64, u64)>,
    slaves: BTreeMap<u64, Link>,
    next_session: u64,
    /// End of the highest record this master acknowledged.
    acked_end: u64,
}

impl Mastership {
    /// Master of `epoch` from `start`, its log end; `committed` at `version` as elected.
    pub fn new(
        epoch: u64,
        start: u64,
        now: u64,
        lease_until: u64,
        fence_until: u64,
        (committed, version): (BTreeSet<u64>, u64),
        me: u64,
    ) -> Self {
        let mut m = Mastership {
            epoch,
            epoch_start: start,
            since: now,
            lease_until,
            fence_until,
            committed,
            version,
            pending: BTreeMap::new(),
            tracker: SyncTracker::new(MIN_IN_SYNC),
            slaves: BTreeMap::new(),
            next_session: 1,
            acked_end: 0,
        };
        m.tracker.require(Some(m.required(me)));
        m
    }

    pub fn parked(&self) -> usize {
        self.tracker.parked()
    }

    /// The slaves a send must reach: the committed set and every open proposal, less
    /// ourselves.
    fn required(&self, me: u64) -> BTreeSet<u64> {
        self.committed
            .iter()
            .chain(self.pending.values().flatten())
            .copied()
            .filter(|&id| id != me)
            .collect()
    }

    fn require(&mut self, me: u64, now: u64, rules: Rules, out: &mut Out) {
        let released = self.tracker.require(Some(self.required(me)));
        self.settle(released, now, rules, out);
    }

    /// The set to propose in heartbeat `seq`: ourselves and every slave caught up within
    /// `MAX_LAG_MS`; a newcomer only if it holds everything acknowledged so far (the records
    /// before this epoch, and this master's acknowledged ones). From now on sends wait for
    /// every member of it too.
    pub fn propose(
        &mut self,
        me: u64,
        now: u64,
        seq: u64,
        rules: Rules,
        out: &mut Out,
    ) -> (BTreeSet<u64>, u64) {
        let floor = if rules.join_on_lag_alone {
            0
        } else {
            self.epoch_start.max(self.acked_end)
        };
        let mut set = BTreeSet::from([me]);
        for (&id, link) in &self.slaves {
            let in_sync = link
                .caught_up_at
                .is_some_and(|t| now.saturating_sub(t) <= MAX_LAG_MS);
            if in_sync && (self.committed.contains(&id) || link.acked >= floor) {
                set.insert(id);
            }
        }
        // Members that have not connected yet get the same grace from the election on.
        if now.saturating_sub(self.since) <= MAX_LAG_MS {
            set.extend(
                self.committed
                    .iter()
                    .filter(|id| !self.slaves.contains_key(id)),
            );
        }
        if set != self.committed {
            self.pending.insert(seq, set.clone());
        }
        self.require(me, now, rules, out);
        (set, self.version)
    }

    /// An answer to heartbeat `seq` naming us master of our epoch.
    #[allow(clippy::too_many_arguments)] // the answer's parts, and who and when we are
    pub fn answered(
        &mut self,
        seq: u64,
        lease_until: Option<u64>,
        (committed, version): (&BTreeSet<u64>, u64),
        me: u64,
        now: u64,
        rules: Rules,
        out: &mut Out,
    ) {
        if let Some(until) = lease_until {
            self.lease_until = self.lease_until.max(until);
        }
        if version > self.version {
            self.committed = committed.clone();
            self.version = version;
            self.pending.clear();
        } else if version == self.version {
            // Its own proposal did not commit, and cannot any more.
            self.pending.remove(&seq);
        }
        self.require(me, now, rules, out);
    }

    /// Admits a slave whose log ends at `end`; returns its session.
    pub fn admit(
        &mut self,
        (from, inc, end): (u64, u64, u64),
        log_end: u64,
        now: u64,
        rules: Rules,
        out: &mut Out,
    ) -> u64 {
        let session = self.next_session;
        self.next_session += 1;
        let caught_up_at = if end + MAX_LAG >= log_end {
            Some(now)
        } else if self.committed.contains(&from) {
            Some(self.since)
        } else {
            None
        };
        self.slaves.insert(
            from,
            Link {
                inc,
                session,
                sent_end: end,
                acked: end,
                last_heard: now,
                last_sent: now,
                last_progress: now,
                caught_up_at,
            },
        );
        let released = self.tracker.connect(from, end);
        self.settle(released, now, rules, out);
        session
    }

    #[allow(clippy::too_many_arguments)] // the ack's fields, and the log and clock
    pub fn on_ack(
        &mut self,
        (from, inc, session): (u64, u64, u64),
        end: u64,
        appended: bool,
        log: &[Rec],
        now: u64,
        rules: Rules,
        out: &mut Out,
    ) {
        let log_end = log.len() as u64;
        let Some(link) = self.slaves.get_mut(&from) else {
            return;
        };
        if link.session != session || link.inc != inc {
            return;
        }
        link.last_heard = now;
        if end > link.acked {
            link.acked = end;
            link.last_progress = now;
        }
        if end + MAX_LAG >= log_end {
            link.caught_up_at = Some(now);
        }
        if !appended {
            link.sent_end = end;
        }
        let released = self.tracker.ack(from, end);
        self.settle(released, now, rules, out);
        self.ship(log, from, now, out);
    }

    /// A client send: appended only under a valid lease with the fence over, then parked
    /// until the required slaves hold it.
    pub fn write(&mut self, id: u64, log: &mut Vec<Rec>, now: u64, rules: Rules, out: &mut Out) {
        let leased = rules.ignore_lease || now < self.lease_until;
        if !leased || now < self.fence_until {
            out.notes.push(Note::Refused {
                why: "no lease or fenced",
            });
            return;
        }
        let pos = log.len() as u64;
        log.push((self.epoch, id));
        out.notes.push(Note::Appended {
            start: pos,
            count: 1,
        });
        let slaves: Vec<u64> = self.slaves.keys().copied().collect();
        for slave in slaves {
            self.ship(log, slave, now, out);
        }
        match self.tracker.wait(pos + 1, (id, pos)) {
            Ok(Some(w)) => self.settle(vec![w], now, rules, out),
            Ok(None) => {}
            Err(_) => out.notes.push(Note::Refused {
                why: "too few in sync",
            }),
        }
    }

    /// The replication timer: resends what went unacknowledged, keeps slaves alive, drops
    /// silent ones.
    pub fn tick(&mut self, log: &[Rec], now: u64, out: &mut Out) {
        let silent: Vec<u64> = self
            .slaves
            .iter()
            .filter(|(_, l)| now.saturating_sub(l.last_heard) > IDLE_MS)
            .map(|(&id, _)| id)
            .collect();
        for id in silent {
            self.slaves.remove(&id);
            self.tracker.disconnect(id);
            for _ in self.tracker.fail_if_too_few() {
                out.notes.push(Note::Refused { why: "slave gone" });
            }
        }
        let log_end = log.len() as u64;
        let ids: Vec<u64> = self.slaves.keys().copied().collect();
        for id in ids {
            let epoch = self.epoch;
            let link = self.slaves.get_mut(&id).expect("listed above");
            if link.acked < link.sent_end && now.saturating_sub(link.last_progress) > RETRANSMIT_MS
            {
                link.sent_end = link.acked;
                link.last_progress = now;
            }
            if link.sent_end < log_end {
                self.ship(log, id, now, out);
            } else if now.saturating_sub(link.last_sent) >= KEEPALIVE_MS {
                link.last_sent = now;
                let keepalive = Msg::Chunk {
                    epoch,
                    to_inc: link.inc,
                    session: link.session,
                    start: link.sent_end,
                    records: Vec::new(),
                };
                out.send(id, keepalive);
            }
        }
    }

    /// Fails every send still waiting (stepping down).
    pub fn drain(&mut self, out: &mut Out) {
        for _ in self.tracker.drain() {
            out.notes.push(Note::Refused {
                why: "stepped down",
            });
        }
    }

    /// Answers the sends the tracker released: acknowledged only under a valid lease.
    fn settle(&mut self, released: Vec<(u64, u64)>, now: u64, rules: Rules, out: &mut Out) {
        for (id, pos) in released {
            let leased = rules.ignore_lease || now < self.lease_until;
            if leased && now >= self.fence_until {
                self.acked_end = self.acked_end.max(pos + 1);
                out.notes.push(Note::Acked {
                    id,
                    pos,
                    epoch: self.epoch,
                });
            } else {
                out.notes.push(Note::Refused {
                    why: "lease expired",
                });
            }
        }
    }

    /// Sends `slave` the next records it has not been sent.
    pub fn ship(&mut self, log: &[Rec], slave: u64, now: u64, out: &mut Out) {
        let epoch = self.epoch;
        let Some(link) = self.slaves.get_mut(&slave) else {
            return;
        };
        let start = link.sent_end as usize;
        if start >= log.len() {
            return;
        }
        let end = log.len().min(start + MAX_CHUNK);
        link.sent_end = end as u64;
        link.last_sent = now;
        let chunk = Msg::Chunk {
            epoch,
            to_inc: link.inc,
            session: link.session,
            start: start as u64,
            records: log[start..end].to_vec(),
        };
        out.send(slave, chunk);
    }
}
