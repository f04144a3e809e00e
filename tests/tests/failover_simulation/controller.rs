//! The controller as the simulation runs it: one linearizable `ControllerState` (Raft is
//! taken as correct and not modelled beyond a commit delay) and the leader's `Elector`.
//!
//! Commands are proposed by the leader and applied, in proposal order, a few milliseconds
//! later, as a Raft commit would land them. A heartbeat that calls for commands is answered
//! only once they are applied, with the record as it is then; one that calls for none is
//! answered at once. When leadership is lost, a prefix of the uncommitted proposals may still
//! commit (they reached a majority) and the rest are lost, together with the answers and the
//! `elected` calls waiting on them: the next leader starts from `became_leader`.

use std::collections::VecDeque;

use rocketlog_controller::{
    Command, ControllerState, Decision, ElectionSettings, Elector, GroupRecord, Heartbeat, Outcome,
};

use super::net::Answer;

pub const GROUP: &str = "g";
pub const CLUSTER: &str = "c";

#[derive(Debug)]
enum Then {
    Nothing,
    Answer { to: u64, inc: u64, seq: u64 },
    Elected { previous: Option<u64> },
}

#[derive(Debug)]
struct Pending {
    commit_at: u64,
    cmd: Command,
    then: Then,
}

/// What a controller step asks of the world.
#[derive(Debug, Default)]
pub struct CtlOut {
    pub answers: Vec<(u64, Answer)>,
    pub commit_at: Vec<u64>,
    pub applied: Vec<(Command, Outcome)>,
    /// Elections proposed and groups left without a candidate, for the trace.
    pub decisions: Vec<Decision>,
}

#[derive(Debug)]
pub struct Controller {
    pub state: ControllerState,
    pub elector: Elector,
    /// False while the members have no leader: heartbeats go unanswered, nothing is decided.
    pub leader: bool,
    pending: VecDeque<Pending>,
    last_commit_at: u64,
    /// An election is proposed and not yet applied; deciding again would only propose a
    /// duplicate that the epoch check refuses.
    electing: bool,
}

impl Controller {
    pub fn new(settings: ElectionSettings) -> Self {
        Controller {
            state: ControllerState::default(),
            elector: Elector::new(settings, 0),
            leader: true,
            pending: VecDeque::new(),
            last_commit_at: 0,
            electing: false,
        }
    }

    /// The group's record (empty before the first registration).
    pub fn record(&self) -> GroupRecord {
        self.state.groups.get(GROUP).cloned().unwrap_or_default()
    }

    pub fn on_heartbeat(
        &mut self,
        hb: &Heartbeat,
        seq: u64,
        now: u64,
        latency: u64,
        out: &mut CtlOut,
    ) {
        if !self.leader {
            return;
        }
        let commands = self.elector.observe(hb, self.state.groups.get(GROUP), now);
        let (to, inc) = (hb.replica.id, hb.incarnation);
        if commands.is_empty() {
            out.answers.push((to, self.answer(to, inc, seq, now)));
            return;
        }
        let last = commands.len() - 1;
        for (i, cmd) in commands.into_iter().enumerate() {
            let then = if i == last {
                Then::Answer { to, inc, seq }
            } else {
                Then::Nothing
            };
            self.propose(cmd, then, now, latency, out);
        }
    }

    /// One round of the leader's failure detection.
    pub fn tick(&mut self, now: u64, latency: u64, out: &mut CtlOut) {
        if !self.leader || self.electing {
            return;
        }
        let Some(group) = self.state.groups.get(GROUP) else {
            return;
        };
        let previous = group.master;
        match self.elector.decide(GROUP, group, now) {
            Decision::Elect(cmd) => {
                self.electing = true;
                out.decisions.push(Decision::Elect(cmd.clone()));
                self.propose(cmd, Then::Elected { previous }, now, latency, out);
            }
            d @ Decision::NoCandidate(_) => out.decisions.push(d),
            Decision::Healthy | Decision::Wait(_) => {}
        }
    }

    /// An operator's switch-over to `to` (the elector's `manual`, never unclean): the old
    /// master is alive and may hold a lease, so only the fence keeps the two apart.
    pub fn switch_over(
        &mut self,
        to: u64,
        now: u64,
        latency: u64,
        out: &mut CtlOut,
    ) -> Result<(), String> {
        if !self.leader || self.electing {
            return Err("no leader, or an election under way".into());
        }
        let group = self.state.groups.get(GROUP).ok_or("no group yet")?;
        let previous = group.master;
        let cmd = self.elector.manual(GROUP, group, to, false, now)?;
        self.electing = true;
        out.decisions.push(Decision::Elect(cmd.clone()));
        self.propose(cmd, Then::Elected { previous }, now, latency, out);
        Ok(())
    }

    /// Applies every proposal whose commit time has come.
    pub fn commit(&mut self, now: u64, out: &mut CtlOut) {
        while self.pending.front().is_some_and(|p| p.commit_at <= now) {
            let p = self.pending.pop_front().expect("checked above");
            self.apply(p, now, true, out);
        }
    }

    /// Leadership is lost: the first `survivors` uncommitted proposals commit, the rest are
    /// dropped, and nothing waiting on either happens.
    pub fn lose_leader(&mut self, now: u64, survivors: usize, out: &mut CtlOut) {
        self.leader = false;
        self.electing = false;
        let pending = std::mem::take(&mut self.pending);
        for p in pending.into_iter().take(survivors) {
            self.apply(p, now, false, out);
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A member (this one or another: the soft state is lost either way) becomes leader.
    pub fn gain_leader(&mut self, now: u64) {
        self.leader = true;
        self.last_commit_at = now;
        self.elector.became_leader(now);
    }

    fn propose(&mut self, cmd: Command, then: Then, now: u64, latency: u64, out: &mut CtlOut) {
        // Raft commits in log order: a later proposal never lands before an earlier one.
        let commit_at = self.last_commit_at.max(now) + latency;
        self.last_commit_at = commit_at;
        out.commit_at.push(commit_at);
        self.pending.push_back(Pending {
            commit_at,
            cmd,
            then,
        });
    }

    fn apply(&mut self, p: Pending, now: u64, leading: bool, out: &mut CtlOut) {
        let outcome = self.state.apply(&p.cmd);
        let applied = matches!(outcome, Outcome::Applied(_));
        out.applied.push((p.cmd, outcome));
        match p.then {
            Then::Nothing => {}
            Then::Answer { to, inc, seq } => {
                if leading {
                    out.answers.push((to, self.answer(to, inc, seq, now)));
                }
            }
            Then::Elected { previous } => {
                if leading {
                    self.electing = false;
                    if applied {
                        self.elector.elected(GROUP, previous, now);
                    }
                }
            }
        }
    }

    fn answer(&self, to: u64, inc: u64, seq: u64, now: u64) -> Answer {
        let record = self.record();
        let lease_ms = self.elector.lease_for(&record, to, inc);
        let fence_wait_ms = if lease_ms > 0 {
            self.elector.fence_wait_ms(GROUP, now)
        } else {
            0
        };
        Answer {
            to_inc: inc,
            seq,
            record,
            lease_ms,
            fence_wait_ms,
        }
    }
}
