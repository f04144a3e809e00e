//! The leader's view of liveness and the elections it makes from it.
//!
//! Heartbeats are not written to the Raft log: they arrive every few hundred milliseconds
//! from every replica, and their only use is the leader's failure detection. The leader keeps
//! them here, and a member that becomes leader starts with none and counts every master as
//! heard at the moment it took over, so an election never happens sooner than
//! `master_timeout_ms` after the last heartbeat any earlier leader could have answered.
//!
//! Fencing rests on two numbers: a master may acknowledge writes for `lease_ms` after it
//! *sent* a heartbeat that was answered, and the leader declares it failed only
//! `master_timeout_ms` after it last *received* one. With `lease_ms < master_timeout_ms`, a
//! master that stopped renewing (paused, partitioned, dead) stopped acknowledging before any
//! other replica can be elected; and the candidates' end offsets are taken from heartbeats
//! received after that moment, so they cover every record the failed master acknowledged.

use std::collections::{BTreeSet, HashMap};

use crate::state::{Command, GroupRecord, ReplicaInfo};

/// Timing and policy of elections (`[nameserver.controller]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionSettings {
    /// A master silent for this long is replaced, ms.
    pub master_timeout_ms: u64,
    /// How often replicas heartbeat, ms (told to them; also the settling time of the first
    /// election of a group).
    pub heartbeat_interval_ms: u64,
    /// How long after sending an answered heartbeat a master may acknowledge writes, ms.
    /// Must be shorter than `master_timeout_ms`.
    pub lease_ms: u64,
    /// Elect a replica outside the sync-state set when no member is alive (loses the
    /// acknowledged records only the members had).
    pub unclean: bool,
}

impl Default for ElectionSettings {
    fn default() -> Self {
        ElectionSettings {
            master_timeout_ms: 3_000,
            heartbeat_interval_ms: 500,
            lease_ms: 1_500,
            unclean: false,
        }
    }
}

impl ElectionSettings {
    /// The first setting out of range and why.
    pub fn invalid(&self) -> Option<String> {
        if self.heartbeat_interval_ms == 0 {
            return Some("heartbeat_interval_ms must be positive".into());
        }
        if self.lease_ms == 0 || self.lease_ms >= self.master_timeout_ms {
            return Some(format!(
                "lease_ms ({}) must be positive and shorter than master_timeout_ms ({}): a \
                 master must stop acknowledging before it can be replaced",
                self.lease_ms, self.master_timeout_ms
            ));
        }
        if self.heartbeat_interval_ms >= self.lease_ms {
            return Some(format!(
                "heartbeat_interval_ms ({}) must be shorter than lease_ms ({}), or a healthy \
                 master loses its lease between heartbeats",
                self.heartbeat_interval_ms, self.lease_ms
            ));
        }
        None
    }
}

/// One replica's heartbeat, as the elector needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub cluster: String,
    pub group: String,
    pub replica: ReplicaInfo,
    pub incarnation: u64,
    pub log_end: u64,
    /// A master's view of who is caught up, with the version it is based on.
    pub proposed_sync_state: Option<(BTreeSet<u64>, u64)>,
}

/// What the leader last heard from one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub incarnation: u64,
    pub log_end: u64,
    /// When the leader received the latest heartbeat, ms on the leader's clock.
    pub at_ms: u64,
    /// When the leader first heard this incarnation.
    pub since_ms: u64,
}

/// What a group needs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Its master is alive (or it has no replica yet).
    Healthy,
    /// An election is due but waits, for the reason given (fresh offsets, settling).
    Wait(String),
    /// Propose this election.
    Elect(Command),
    /// Its master failed and no replica may take over: the group is unavailable for
    /// writes until a sync-state member comes back (or unclean election is allowed).
    NoCandidate(String),
}

/// The leader's soft state.
#[derive(Debug)]
pub struct Elector {
    settings: ElectionSettings,
    /// When this member became leader, ms.
    leader_since_ms: u64,
    seen: HashMap<(String, u64), Seen>,
    /// Per group: until when the master before the last election might still hold a lease
    /// (a newly elected master waits that out before acknowledging).
    fenced_until_ms: HashMap<String, u64>,
}

impl Elector {
    pub fn new(settings: ElectionSettings, now_ms: u64) -> Self {
        Elector {
            settings,
            leader_since_ms: now_ms,
            seen: HashMap::new(),
            fenced_until_ms: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &ElectionSettings {
        &self.settings
    }

    /// This member just became leader: forget what an earlier term heard.
    pub fn became_leader(&mut self, now_ms: u64) {
        self.leader_since_ms = now_ms;
        self.seen.clear();
        self.fenced_until_ms.clear();
    }

    /// Records a heartbeat; returns the commands it calls for (a registration, a change of
    /// the sync-state set proposed by the master), checked against `group`.
    pub fn observe(
        &mut self,
        hb: &Heartbeat,
        group: Option<&GroupRecord>,
        now_ms: u64,
    ) -> Vec<Command> {
        let key = (hb.group.clone(), hb.replica.id);
        let since_ms = match self.seen.get(&key) {
            Some(s) if s.incarnation == hb.incarnation => s.since_ms,
            _ => now_ms,
        };
        self.seen.insert(
            key,
            Seen {
                incarnation: hb.incarnation,
                log_end: hb.log_end,
                at_ms: now_ms,
                since_ms,
            },
        );
        let mut out = Vec::new();
        if group.and_then(|g| g.replicas.get(&hb.replica.id)) != Some(&hb.replica) {
            out.push(Command::Register {
                group: hb.group.clone(),
                cluster: hb.cluster.clone(),
                replica: hb.replica.clone(),
            });
        }
        if let (Some(g), Some((set, version))) = (group, &hb.proposed_sync_state) {
            let is_master =
                g.master == Some(hb.replica.id) && g.master_incarnation == hb.incarnation;
            if is_master && *version == g.sync_state_version && *set != g.sync_state {
                out.push(Command::AlterSyncState {
                    group: hb.group.clone(),
                    epoch: g.epoch,
                    master: hb.replica.id,
                    expected_version: *version,
                    sync_state: set.clone(),
                });
            }
        }
        out
    }

    /// What the leader last heard from a replica.
    pub fn seen(&self, group: &str, id: u64) -> Option<Seen> {
        self.seen.get(&(group.to_owned(), id)).copied()
    }

    fn alive(&self, group: &str, id: u64, now_ms: u64) -> Option<Seen> {
        self.seen(group, id)
            .filter(|s| now_ms.saturating_sub(s.at_ms) <= self.settings.master_timeout_ms)
    }

    /// The lease to grant `id` (of `incarnation`) on its heartbeat: the full lease when it is
    /// the group's master, nothing otherwise.
    pub fn lease_for(&self, group: &GroupRecord, id: u64, incarnation: u64) -> u64 {
        if group.master == Some(id) && group.master_incarnation == incarnation {
            self.settings.lease_ms
        } else {
            0
        }
    }

    /// How long a newly elected master of `group` must wait before acknowledging, so that
    /// the master before it has surely lost its lease, ms.
    pub fn fence_wait_ms(&self, group: &str, now_ms: u64) -> u64 {
        let until = self
            .fenced_until_ms
            .get(group)
            .copied()
            // After a change of leader an earlier one may have renewed any lease until the
            // moment this member took over.
            .unwrap_or(self.leader_since_ms + self.settings.lease_ms);
        until.saturating_sub(now_ms)
    }

    /// Notes that `group` just elected a new master: the previous one may hold a lease until
    /// it was last heard plus the lease.
    pub fn elected(&mut self, group: &str, previous: Option<u64>, now_ms: u64) {
        let last = previous
            .and_then(|id| self.seen(group, id))
            .map_or(self.leader_since_ms, |s| s.at_ms.max(self.leader_since_ms));
        let until = (last + self.settings.lease_ms).max(now_ms);
        self.fenced_until_ms.insert(group.to_owned(), until);
    }

    /// Whether `group`'s master failed, and from when (leader's clock). The offsets of the
    /// candidates must come from heartbeats received after that moment.
    fn failed_at(&self, name: &str, g: &GroupRecord, now_ms: u64) -> Option<(u64, bool)> {
        let master = g.master?;
        let timeout = self.settings.master_timeout_ms;
        match self.seen(name, master) {
            None => {
                let deadline = self.leader_since_ms + timeout;
                (now_ms > deadline).then_some((deadline, false))
            }
            Some(s) if s.incarnation != g.master_incarnation => {
                // Restarted: the old process is gone; wait one heartbeat round so that the
                // other replicas' offsets are reported after its death.
                Some((s.since_ms + self.settings.heartbeat_interval_ms, true))
            }
            Some(s) => {
                let deadline = s.at_ms.max(self.leader_since_ms) + timeout;
                (now_ms > deadline).then_some((deadline, false))
            }
        }
    }

    /// What `g` (named `name`) needs now.
    pub fn decide(&self, name: &str, g: &GroupRecord, now_ms: u64) -> Decision {
        if g.epoch == 0 {
            return self.first_election(name, g, now_ms);
        }
        let Some((failed_at, restarted)) = self.failed_at(name, g, now_ms) else {
            return Decision::Healthy;
        };
        let old = g.master;
        let candidates: Vec<(u64, Seen)> = g
            .sync_state
            .iter()
            .filter(|&&id| restarted || Some(id) != old)
            .filter_map(|&id| self.alive(name, id, now_ms).map(|s| (id, s)))
            .collect();
        if let Some((id, _)) = candidates.iter().find(|(_, s)| s.at_ms <= failed_at) {
            return Decision::Wait(format!(
                "waiting for a heartbeat from replica {id} sent after master {old:?} failed"
            ));
        }
        let reason = if restarted {
            format!("master {old:?} restarted")
        } else {
            format!(
                "master {old:?} silent for more than {} ms",
                self.settings.master_timeout_ms
            )
        };
        if let Some(cmd) = self.pick(name, g, &candidates, false, reason.clone()) {
            return Decision::Elect(cmd);
        }
        if self.settings.unclean {
            let others: Vec<(u64, Seen)> = g
                .replicas
                .keys()
                .filter(|&&id| restarted || Some(id) != old)
                .filter_map(|&id| self.alive(name, id, now_ms).map(|s| (id, s)))
                .filter(|(_, s)| s.at_ms > failed_at)
                .collect();
            if let Some(cmd) = self.pick(name, g, &others, true, reason.clone()) {
                return Decision::Elect(cmd);
            }
        }
        Decision::NoCandidate(format!(
            "{reason}, and no member of the sync-state set {:?} is alive{}",
            g.sync_state,
            if self.settings.unclean {
                " (nor any other replica)"
            } else {
                "; unclean election is off"
            }
        ))
    }

    fn first_election(&self, name: &str, g: &GroupRecord, now_ms: u64) -> Decision {
        let heard: Vec<(u64, Seen)> = g
            .replicas
            .keys()
            .filter_map(|&id| self.alive(name, id, now_ms).map(|s| (id, s)))
            .collect();
        let Some(first) = heard.iter().map(|(_, s)| s.since_ms).min() else {
            return Decision::Healthy;
        };
        // Give the other replicas of a group starting together time to be heard, so the
        // one holding the most log wins.
        let settle = first + 2 * self.settings.heartbeat_interval_ms;
        if now_ms < settle {
            return Decision::Wait("letting the group's replicas register".into());
        }
        match self.pick(name, g, &heard, false, "first master of the group".into()) {
            Some(c) => Decision::Elect(c),
            None => Decision::Healthy,
        }
    }

    /// The most advanced of `candidates` (lowest id on a tie), with the new sync-state set:
    /// it and every candidate holding as much log.
    fn pick(
        &self,
        name: &str,
        g: &GroupRecord,
        candidates: &[(u64, Seen)],
        unclean: bool,
        reason: String,
    ) -> Option<Command> {
        let &(best, seen) = candidates
            .iter()
            .max_by_key(|(id, s)| (s.log_end, std::cmp::Reverse(*id)))?;
        let sync_state = candidates
            .iter()
            .filter(|(_, s)| s.log_end >= seen.log_end)
            .map(|(id, _)| *id)
            .chain(std::iter::once(best))
            .collect();
        Some(Command::Elect {
            group: name.to_owned(),
            expected_epoch: g.epoch,
            expected_version: g.sync_state_version,
            master: best,
            incarnation: seen.incarnation,
            sync_state,
            unclean,
            reason,
        })
    }

    /// An election asked for by an operator: `id` becomes master, provided it is alive and
    /// (unless `unclean`) in the sync-state set.
    pub fn manual(
        &self,
        name: &str,
        g: &GroupRecord,
        id: u64,
        unclean: bool,
        now_ms: u64,
    ) -> Result<Command, String> {
        if !g.replicas.contains_key(&id) {
            return Err(format!("replica {id} of group {name} never registered"));
        }
        let Some(seen) = self.alive(name, id, now_ms) else {
            return Err(format!(
                "replica {id} of group {name} has not been heard within {} ms",
                self.settings.master_timeout_ms
            ));
        };
        if g.master == Some(id) {
            return Err(format!(
                "replica {id} is already the master of group {name}"
            ));
        }
        let in_set = g.sync_state.contains(&id);
        if !in_set && !unclean {
            return Err(format!(
                "replica {id} is not in the sync-state set {:?} of group {name}: it may lack \
                 acknowledged messages (pass unclean to accept losing them)",
                g.sync_state
            ));
        }
        let sync_state = g
            .sync_state
            .iter()
            .copied()
            .filter(|&other| {
                Some(other) != g.master
                    && self
                        .alive(name, other, now_ms)
                        .is_some_and(|s| s.log_end >= seen.log_end)
            })
            .chain(std::iter::once(id))
            .collect();
        Ok(Command::Elect {
            group: name.to_owned(),
            expected_epoch: g.epoch,
            expected_version: g.sync_state_version,
            master: id,
            incarnation: seen.incarnation,
            sync_state,
            unclean: !in_set,
            reason: "asked for by an operator".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ControllerState, Outcome};

    const G: &str = "g";

    fn hb(id: u64, incarnation: u64, log_end: u64) -> Heartbeat {
        Heartbeat {
            cluster: "c".into(),
            group: G.into(),
            replica: ReplicaInfo {
                id,
                replication_address: format!("r{id}"),
                client_address: format!("c{id}"),
            },
            incarnation,
            log_end,
            proposed_sync_state: None,
        }
    }

    struct World {
        state: ControllerState,
        elector: Elector,
    }

    impl World {
        fn new() -> Self {
            World {
                state: ControllerState::default(),
                elector: Elector::new(ElectionSettings::default(), 0),
            }
        }
        fn beat(&mut self, h: Heartbeat, now: u64) {
            for c in self.elector.observe(&h, self.state.groups.get(G), now) {
                self.state.apply(&c);
            }
        }
        fn decide(&mut self, now: u64) -> Decision {
            let g = self.state.groups.get(G).cloned().unwrap_or_default();
            let d = self.elector.decide(G, &g, now);
            if let Decision::Elect(c) = &d {
                let previous = g.master;
                assert!(matches!(self.state.apply(c), Outcome::Applied(_)));
                self.elector.elected(G, previous, now);
            }
            d
        }
        fn group(&self) -> &GroupRecord {
            &self.state.groups[G]
        }
    }

    #[test]
    fn the_first_master_is_the_most_advanced_replica_heard_while_settling() {
        let mut w = World::new();
        w.beat(hb(1, 11, 0), 0);
        assert!(matches!(w.decide(100), Decision::Wait(_)));
        w.beat(hb(2, 12, 500), 400);
        w.beat(hb(3, 13, 100), 400);
        assert!(matches!(w.decide(1_000), Decision::Elect(_)));
        let g = w.group();
        assert_eq!((g.master, g.epoch, g.master_incarnation), (Some(2), 1, 12));
        assert_eq!(g.sync_state, [2].into_iter().collect());
    }

    fn three_in_sync(w: &mut World) {
        for id in 1..=3 {
            w.beat(hb(id, 10 + id, 0), 0);
        }
        w.decide(1_000);
        let master = w.group().master.unwrap();
        let mut proposal = hb(master, 10 + master, 0);
        proposal.proposed_sync_state = Some(([1, 2, 3].into_iter().collect(), 1));
        w.beat(proposal, 1_100);
        assert_eq!(w.group().sync_state.len(), 3);
        assert_eq!(master, 1);
    }

    #[test]
    fn a_silent_master_is_replaced_by_the_most_advanced_member_once_its_lease_is_over() {
        let mut w = World::new();
        three_in_sync(&mut w);
        // The master's last heartbeat at 1 100; the slaves keep beating.
        for t in (1_200..=4_100).step_by(500) {
            w.beat(hb(2, 12, 900), t);
            w.beat(hb(3, 13, 1_000), t);
            assert_eq!(w.decide(t), Decision::Healthy, "at {t}");
        }
        // 4 100 = 1 100 + timeout: still within it; then the slaves' beats from before the
        // deadline do not count.
        assert!(matches!(w.decide(4_150), Decision::Wait(_)));
        w.beat(hb(2, 12, 950), 4_200);
        assert!(matches!(w.decide(4_250), Decision::Wait(_)));
        w.beat(hb(3, 13, 1_000), 4_300);
        assert!(matches!(w.decide(4_300), Decision::Elect(_)));
        let g = w.group();
        assert_eq!((g.master, g.epoch), (Some(3), 2));
        assert_eq!(g.sync_state, [3].into_iter().collect());
        // The old master's lease ended long ago.
        assert_eq!(w.elector.fence_wait_ms(G, 4_300), 0);
    }

    #[test]
    fn a_restarted_master_counts_as_failed_and_may_win_again() {
        let mut w = World::new();
        three_in_sync(&mut w);
        w.beat(hb(1, 99, 2_000), 1_500);
        w.beat(hb(2, 12, 1_500), 1_600);
        assert!(matches!(w.decide(1_700), Decision::Wait(_)));
        w.beat(hb(3, 13, 1_500), 2_100);
        w.beat(hb(2, 12, 1_500), 2_100);
        w.beat(hb(1, 99, 2_000), 2_100);
        assert!(matches!(w.decide(2_100), Decision::Elect(_)));
        let g = w.group();
        assert_eq!((g.master, g.master_incarnation, g.epoch), (Some(1), 99, 2));
    }

    #[test]
    fn no_member_alive_leaves_the_group_without_master_unless_unclean() {
        let mut w = World::new();
        w.beat(hb(1, 11, 10), 0);
        w.beat(hb(2, 12, 0), 0);
        w.decide(1_000);
        assert_eq!(w.group().sync_state, [1].into_iter().collect());
        w.beat(hb(2, 12, 0), 5_000);
        assert!(matches!(w.decide(5_000), Decision::NoCandidate(_)));
        w.elector.settings.unclean = true;
        let Decision::Elect(Command::Elect {
            unclean, master, ..
        }) = w.decide(5_000)
        else {
            panic!("expected an unclean election");
        };
        assert!(unclean);
        assert_eq!(master, 2);
    }

    #[test]
    fn a_new_leader_waits_a_full_timeout_before_replacing_anyone() {
        let mut w = World::new();
        three_in_sync(&mut w);
        w.elector.became_leader(10_000);
        w.beat(hb(2, 12, 0), 10_100);
        w.beat(hb(3, 13, 0), 10_100);
        assert_eq!(w.decide(12_000), Decision::Healthy);
        assert_eq!(w.elector.fence_wait_ms(G, 10_500), 1_000);
        w.beat(hb(2, 12, 0), 13_100);
        w.beat(hb(3, 13, 0), 13_100);
        assert!(matches!(w.decide(13_100), Decision::Elect(_)));
    }

    #[test]
    fn a_manual_election_keeps_to_the_set_and_fences_the_old_master() {
        let mut w = World::new();
        three_in_sync(&mut w);
        w.beat(hb(1, 11, 100), 2_000);
        w.beat(hb(2, 12, 100), 2_000);
        w.beat(hb(3, 13, 90), 2_000);
        let g = w.group().clone();
        assert!(w.elector.manual(G, &g, 1, false, 2_000).is_err());
        assert!(w.elector.manual(G, &g, 7, false, 2_000).is_err());
        let cmd = w.elector.manual(G, &g, 2, false, 2_000).unwrap();
        w.state.apply(&cmd);
        w.elector.elected(G, Some(1), 2_000);
        assert_eq!(w.group().master, Some(2));
        assert_eq!(w.group().sync_state, [2].into_iter().collect());
        assert_eq!(w.elector.fence_wait_ms(G, 2_000), 1_500);
        assert_eq!(w.elector.lease_for(w.group(), 1, 11), 0);
        assert_eq!(w.elector.lease_for(w.group(), 2, 12), 1_500);
    }

    #[test]
    fn settings_keep_the_lease_inside_the_timeout() {
        assert_eq!(ElectionSettings::default().invalid(), None);
        let bad = ElectionSettings {
            lease_ms: 3_000,
            ..ElectionSettings::default()
        };
        assert!(bad.invalid().is_some());
    }
}
