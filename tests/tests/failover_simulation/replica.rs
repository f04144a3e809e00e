//! One broker replica as the simulation runs it: a durable log with its epoch history (the
//! real `EpochHistory`), and a role taken from the controller's answers.
//!
//! The slave side follows the real follower and broker: Compare, cut the divergent tail
//! (the log and `EpochHistory::truncate_to`, only when something must go), Follow, adopt the
//! master's newer epochs, append chunks that start at its log end, acknowledge its durable
//! end. The master side is in `master.rs`.

use std::collections::VecDeque;

use rocketlog_controller::{Heartbeat, ReplicaInfo};
use rocketlog_replication::{divergence, EpochError, EpochHistory};

use super::controller::{CLUSTER, GROUP};
use super::master::{Mastership, IDLE_MS};
use super::net::{Answer, Hello, Msg, Node, Rec};

pub const REPL_TICK_MS: u64 = 250;
const JOIN_RETRY_MS: u64 = 1_000;

/// Departures from the protocol, to show what the checker catches and to try a fix.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// Propose a slave into the sync-state set once it is within `MAX_LAG` of the end, even
    /// if it lacks records already acknowledged (a bytes-behind threshold does that).
    pub join_on_lag_alone: bool,
    /// Append and acknowledge whatever the lease says.
    pub ignore_lease: bool,
    /// Adopt the master's epochs the way the follower once did: keep the local history and
    /// append only the master's epochs newer than its last (which can keep an epoch the
    /// master never had and label the master's older records with it). The default copies
    /// `adopt_epochs` of follower.rs: take the master's history whole.
    pub adopt_newer_only: bool,
}

/// What a replica step did, for the checker and the trace.
#[derive(Debug)]
pub enum Note {
    Acked {
        id: u64,
        pos: u64,
        epoch: u64,
    },
    /// A released or arriving send that was not acknowledged, and why.
    Refused {
        why: &'static str,
    },
    Appended {
        start: u64,
        count: u64,
    },
    Truncated {
        from: u64,
        to: u64,
    },
    /// The epoch history changed under records already held.
    Adopted,
    Joined {
        master: u64,
        epoch: u64,
    },
    BecameMaster {
        epoch: u64,
        start: u64,
        fence_until: u64,
        lease_until: u64,
    },
    SteppedDown {
        epoch: u64,
    },
    /// The replica cannot go on, as the real code could not (an epoch refused).
    Stuck(String),
}

#[derive(Debug, Default)]
pub struct Out {
    pub sends: Vec<(Node, Msg)>,
    pub notes: Vec<Note>,
}

impl Out {
    pub fn send(&mut self, to: u64, msg: Msg) {
        self.sends.push((Node::Replica(to), msg));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Compare,
    Follow,
}

#[derive(Debug)]
pub struct Joining {
    master: u64,
    master_inc: u64,
    epoch: u64,
    stage: Stage,
    sent_at: u64,
}

#[derive(Debug)]
pub struct Following {
    master: u64,
    master_inc: u64,
    epoch: u64,
    session: u64,
    last_heard: u64,
}

#[derive(Debug)]
pub enum Role {
    Waiting,
    Joining(Joining),
    Following(Following),
    Master(Box<Mastership>),
}

#[derive(Debug)]
pub struct Replica {
    pub id: u64,
    pub inc: u64,
    info: ReplicaInfo,
    rules: Rules,
    pub log: Vec<Rec>,
    pub history: EpochHistory,
    /// The highest epoch heard of; kept across restarts, as the epoch file is.
    pub known_epoch: u64,
    role: Role,
    hb_seq: u64,
    /// Recent heartbeats and when they were sent: a lease counts from the sending.
    hb_sent: VecDeque<(u64, u64)>,
}

impl Replica {
    pub fn new(id: u64, inc: u64, rules: Rules) -> Self {
        Replica {
            id,
            inc,
            info: ReplicaInfo {
                id,
                replication_address: format!("10.0.0.{id}:10912"),
                client_address: format!("10.0.0.{id}:8081"),
            },
            rules,
            log: Vec::new(),
            history: EpochHistory::new(),
            known_epoch: 0,
            role: Role::Waiting,
            hb_seq: 0,
            hb_sent: VecDeque::new(),
        }
    }

    pub fn log_end(&self) -> u64 {
        self.log.len() as u64
    }

    /// The process died: everything but the log, its epochs and the known epoch is gone.
    /// Sends waiting for replication get no answer.
    pub fn crash(&mut self) {
        self.role = Role::Waiting;
        self.hb_sent.clear();
    }

    pub fn restart(&mut self, inc: u64) {
        self.crash();
        self.inc = inc;
    }

    pub fn mastership(&self) -> Option<&Mastership> {
        match &self.role {
            Role::Master(m) => Some(m),
            _ => None,
        }
    }

    pub fn following(&self) -> Option<(u64, u64)> {
        match &self.role {
            Role::Following(f) => Some((f.master, f.epoch)),
            _ => None,
        }
    }

    /// The master this replica is joining or following, with the epoch.
    pub fn master_sought(&self) -> Option<(u64, u64)> {
        match &self.role {
            Role::Joining(j) => Some((j.master, j.epoch)),
            Role::Following(f) => Some((f.master, f.epoch)),
            _ => None,
        }
    }

    pub fn parked(&self) -> usize {
        self.mastership().map_or(0, Mastership::parked)
    }

    /// For the trace: the role in a few words.
    pub fn describe(&self) -> String {
        match &self.role {
            Role::Waiting => "waiting".into(),
            Role::Joining(j) => format!("joining {} e{}", j.master, j.epoch),
            Role::Following(f) => format!("following {} e{}", f.master, f.epoch),
            Role::Master(m) => format!(
                "master e{} lease<{} set{:?}",
                m.epoch, m.lease_until, m.committed
            ),
        }
    }

    /// One message from replica `from` (0 for the controller and clients).
    pub fn receive(&mut self, from: u64, msg: Msg, now: u64, out: &mut Out) {
        match msg {
            Msg::Answer(a) => self.on_answer(a, now, out),
            Msg::Compare(h) => self.on_compare(h, out),
            Msg::Compared {
                epoch,
                to_inc,
                truncate_to,
            } => self.on_compared(from, (epoch, to_inc), truncate_to, now, out),
            Msg::Follow(h) => self.on_follow(h, now, out),
            Msg::Welcome {
                epoch,
                to_inc,
                admitted,
            } => self.on_welcome(from, (epoch, to_inc), admitted, now, out),
            Msg::Chunk {
                epoch,
                to_inc,
                session,
                start,
                records,
            } => self.on_chunk(from, (epoch, to_inc, session), start, records, now, out),
            Msg::Ack {
                from,
                inc,
                epoch,
                session,
                end,
                appended,
            } => {
                let Replica {
                    role, log, rules, ..
                } = self;
                if let Role::Master(m) = role {
                    if m.epoch == epoch {
                        m.on_ack((from, inc, session), end, appended, log, now, *rules, out);
                    }
                }
            }
            Msg::Write { id } => self.on_write(id, now, out),
            Msg::Heartbeat { .. } => {}
        }
    }

    pub fn heartbeat(&mut self, now: u64, out: &mut Out) {
        self.hb_seq += 1;
        let seq = self.hb_seq;
        self.hb_sent.push_back((seq, now));
        while self.hb_sent.len() > 64 {
            self.hb_sent.pop_front();
        }
        let (me, rules) = (self.id, self.rules);
        let proposed = match &mut self.role {
            Role::Master(m) => Some(m.propose(me, now, seq, rules, out)),
            _ => None,
        };
        out.sends.push((
            Node::Controller,
            Msg::Heartbeat {
                hb: Heartbeat {
                    cluster: CLUSTER.into(),
                    group: GROUP.into(),
                    replica: self.info.clone(),
                    incarnation: self.inc,
                    log_end: self.log_end(),
                    proposed_sync_state: proposed,
                },
                seq,
            },
        ));
        self.keep_following(now, out);
    }

    /// A slave's keepalive, and the retries of a join that stalled.
    fn keep_following(&mut self, now: u64, out: &mut Out) {
        let rejoin = match &self.role {
            Role::Following(f) if now.saturating_sub(f.last_heard) > IDLE_MS => {
                Some((f.master, f.master_inc, f.epoch))
            }
            Role::Following(f) => {
                let ack = Msg::Ack {
                    from: self.id,
                    inc: self.inc,
                    epoch: f.epoch,
                    session: f.session,
                    end: self.log_end(),
                    appended: true,
                };
                out.send(f.master, ack);
                None
            }
            Role::Joining(j) if now.saturating_sub(j.sent_at) > JOIN_RETRY_MS => {
                Some((j.master, j.master_inc, j.epoch))
            }
            _ => None,
        };
        if let Some((master, master_inc, epoch)) = rejoin {
            self.join(master, master_inc, epoch, now, out);
        }
    }

    /// The replication timer.
    pub fn repl_tick(&mut self, now: u64, out: &mut Out) {
        if let Role::Master(m) = &mut self.role {
            m.tick(&self.log, now, out);
        }
    }

    fn on_answer(&mut self, a: Answer, now: u64, out: &mut Out) {
        // Epochs only grow: an answer behind what this replica knows is a stale one.
        if a.to_inc != self.inc || a.record.epoch < self.known_epoch {
            return;
        }
        let r = &a.record;
        self.known_epoch = r.epoch;
        let lease_until = self
            .hb_sent
            .iter()
            .find(|(seq, _)| *seq == a.seq)
            .filter(|_| a.lease_ms > 0)
            .map(|&(_, sent)| sent + a.lease_ms);
        let (me, rules) = (self.id, self.rules);
        if r.master == Some(me) && r.master_incarnation == self.inc {
            match &mut self.role {
                Role::Master(m) if m.epoch == r.epoch => {
                    let set = (&r.sync_state, r.sync_state_version);
                    m.answered(a.seq, lease_until, set, me, now, rules, out);
                }
                _ => self.become_master(&a, lease_until, now, out),
            }
            return;
        }
        match r.master {
            None => {}
            Some(m) if m == me => {
                // Elected as an incarnation of ours that is gone: the controller will notice.
                self.step_down(out);
                self.role = Role::Waiting;
            }
            Some(m) => {
                let epoch = r.epoch;
                if self.master_sought() != Some((m, epoch)) {
                    self.step_down(out);
                    self.join(m, r.master_incarnation, epoch, now, out);
                }
            }
        }
    }

    /// As the broker's promotion: a new epoch from the log end, the fence from the answer.
    fn become_master(&mut self, a: &Answer, lease_until: Option<u64>, now: u64, out: &mut Out) {
        self.step_down(out);
        let r = &a.record;
        let start = self.log_end();
        // As the broker does: entries adopted from a master this replica never caught up
        // with start past its log end and describe bytes it does not hold.
        self.history.truncate_to(start);
        if let Err(e) = self.history.begin(r.epoch, start) {
            out.notes.push(Note::Stuck(format!(
                "replica {} cannot begin epoch {} at {start}: {e}",
                self.id, r.epoch
            )));
            self.role = Role::Waiting;
            return;
        }
        let m = Mastership::new(
            r.epoch,
            start,
            now,
            lease_until.unwrap_or(0),
            now + a.fence_wait_ms,
            (r.sync_state.clone(), r.sync_state_version),
            self.id,
        );
        out.notes.push(Note::BecameMaster {
            epoch: m.epoch,
            start,
            fence_until: m.fence_until,
            lease_until: m.lease_until,
        });
        self.role = Role::Master(Box::new(m));
    }

    /// Leaves the master role, failing every send still waiting.
    fn step_down(&mut self, out: &mut Out) {
        if let Role::Master(m) = &mut self.role {
            m.drain(out);
            out.notes.push(Note::SteppedDown { epoch: m.epoch });
            self.role = Role::Waiting;
        }
    }

    fn hello(&self, epoch: u64, master_inc: u64) -> Hello {
        Hello {
            from: self.id,
            inc: self.inc,
            epoch,
            master_inc,
            history: self.history.clone(),
            log_end: self.log_end(),
        }
    }

    fn join(&mut self, master: u64, master_inc: u64, epoch: u64, now: u64, out: &mut Out) {
        out.send(master, Msg::Compare(self.hello(epoch, master_inc)));
        self.role = Role::Joining(Joining {
            master,
            master_inc,
            epoch,
            stage: Stage::Compare,
            sent_at: now,
        });
    }

    fn masters(&self, epoch: u64, inc: u64) -> bool {
        self.inc == inc && matches!(&self.role, Role::Master(m) if m.epoch == epoch)
    }

    /// As the master's `compare`.
    fn on_compare(&mut self, h: Hello, out: &mut Out) {
        let truncate_to = self.masters(h.epoch, h.master_inc).then(|| {
            divergence(&h.history, h.log_end, &self.history, self.log_end())
                .truncate_to
                .min(h.log_end)
        });
        let answer = Msg::Compared {
            epoch: h.epoch,
            to_inc: h.inc,
            truncate_to,
        };
        out.send(h.from, answer);
    }

    /// The joining slave learns where to cut.
    fn on_compared(
        &mut self,
        from: u64,
        (epoch, to_inc): (u64, u64),
        truncate_to: Option<u64>,
        now: u64,
        out: &mut Out,
    ) {
        let Role::Joining(j) = &self.role else {
            return;
        };
        if to_inc != self.inc || j.master != from || j.epoch != epoch || j.stage != Stage::Compare {
            return;
        }
        // Refused: the join is retried on the heartbeat tick.
        let Some(to) = truncate_to else {
            return;
        };
        let master_inc = j.master_inc;
        let end = self.log_end();
        // As the broker does: the log and its epochs are cut only when something must go.
        if to < end {
            self.log.truncate(to as usize);
            self.history.truncate_to(to);
            out.notes.push(Note::Truncated { from: end, to });
        }
        out.send(from, Msg::Follow(self.hello(epoch, master_inc)));
        self.role = Role::Joining(Joining {
            master: from,
            master_inc,
            epoch,
            stage: Stage::Follow,
            sent_at: now,
        });
    }

    /// As the master's `admit`: only a log that is a prefix of ours may follow.
    fn on_follow(&mut self, h: Hello, now: u64, out: &mut Out) {
        let admitted = self.masters(h.epoch, h.master_inc)
            && divergence(&h.history, h.log_end, &self.history, self.log_end()).truncate_to
                >= h.log_end;
        let Replica {
            role,
            log,
            history,
            rules,
            ..
        } = self;
        let (Role::Master(m), true) = (role, admitted) else {
            let refusal = Msg::Welcome {
                epoch: h.epoch,
                to_inc: h.inc,
                admitted: None,
            };
            out.send(h.from, refusal);
            return;
        };
        let slave = (h.from, h.inc, h.log_end);
        let session = m.admit(slave, log.len() as u64, now, *rules, out);
        let welcome = Msg::Welcome {
            epoch: h.epoch,
            to_inc: h.inc,
            admitted: Some((session, history.clone())),
        };
        out.send(h.from, welcome);
        m.ship(log, h.from, now, out);
    }

    fn on_welcome(
        &mut self,
        from: u64,
        (epoch, to_inc): (u64, u64),
        admitted: Option<(u64, EpochHistory)>,
        now: u64,
        out: &mut Out,
    ) {
        let Role::Joining(j) = &self.role else {
            return;
        };
        if to_inc != self.inc || j.master != from || j.epoch != epoch || j.stage != Stage::Follow {
            return;
        }
        let master_inc = j.master_inc;
        let Some((session, master_history)) = admitted else {
            self.join(from, master_inc, epoch, now, out);
            return;
        };
        let before = self.history.clone();
        let adopted = if self.rules.adopt_newer_only {
            adopt_newer_only(&mut self.history, &master_history)
        } else {
            adopt_like_follower(&mut self.history, &master_history)
        };
        if let Err(e) = adopted {
            out.notes.push(Note::Stuck(format!(
                "replica {} cannot follow {from} in epoch {epoch}: recording the master's \
                 epochs {:?} over its own {:?}: {e}",
                self.id,
                master_history.entries(),
                before.entries()
            )));
            self.role = Role::Waiting;
            return;
        }
        if self.history != before {
            out.notes.push(Note::Adopted);
        }
        self.role = Role::Following(Following {
            master: from,
            master_inc,
            epoch,
            session,
            last_heard: now,
        });
        out.notes.push(Note::Joined {
            master: from,
            epoch,
        });
    }

    fn on_chunk(
        &mut self,
        from: u64,
        (epoch, to_inc, session): (u64, u64, u64),
        start: u64,
        records: Vec<Rec>,
        now: u64,
        out: &mut Out,
    ) {
        let Role::Following(f) = &mut self.role else {
            return;
        };
        if to_inc != self.inc || f.master != from || f.epoch != epoch || f.session != session {
            return;
        }
        f.last_heard = now;
        let end = self.log_end();
        let gap = start > end;
        if start == end && !records.is_empty() {
            let count = records.len() as u64;
            self.log.extend(records);
            out.notes.push(Note::Appended { start, count });
        }
        let ack = Msg::Ack {
            from: self.id,
            inc: self.inc,
            epoch,
            session,
            end: self.log_end(),
            appended: !gap,
        };
        out.send(from, ack);
    }

    fn on_write(&mut self, id: u64, now: u64, out: &mut Out) {
        let Replica {
            role,
            log,
            known_epoch,
            rules,
            ..
        } = self;
        match role {
            // Only a master of the newest epoch it knows of takes writes.
            Role::Master(m) if *known_epoch == m.epoch => m.write(id, log, now, *rules, out),
            _ => out.notes.push(Note::Refused { why: "not master" }),
        }
    }
}

/// The real follower's rule (`adopt_epochs` in follower.rs): the master admitted this log
/// as a prefix of its own, so its history describes it; take it whole.
fn adopt_like_follower(local: &mut EpochHistory, master: &EpochHistory) -> Result<(), EpochError> {
    *local = master.clone();
    Ok(())
}

/// The earlier rule (see `Rules::adopt_newer_only`): record the master's entries whose epoch
/// is above the newest local one.
fn adopt_newer_only(local: &mut EpochHistory, master: &EpochHistory) -> Result<(), EpochError> {
    let last = local.last().map(|e| e.epoch);
    for e in master.entries() {
        if last.is_none_or(|l| e.epoch > l) {
            local.begin(e.epoch, e.start_offset)?;
        }
    }
    Ok(())
}
