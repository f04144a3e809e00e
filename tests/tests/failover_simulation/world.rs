//! The simulated world: one clock, one event queue, the network between the controller and
//! the three replicas, the faults, and the checker run after every event.
//!
//! Events are ordered by (time, insertion number) in a `BTreeMap`, and every choice comes
//! from the seeded `Rng`, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet};

use rocketlog_controller::{Command, Decision, ElectionSettings, GroupRecord, Outcome};

use super::checker::{Checker, Replicas};
use super::config::{Config, Failure, Stats};
use super::controller::{Controller, CtlOut, GROUP};
use super::faults::{random_fault, Action, FaultMode};
use super::net::{Msg, Node};
use super::replica::{Note, Out, Replica, REPL_TICK_MS};
use super::rng::Rng;

const CONTROLLER_TICK_MS: u64 = 100;
const TRACE_TAIL: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Up {
    Running,
    Crashed,
    Paused,
}

/// One acknowledgement, for scenarios to look at.
#[derive(Debug, Clone, Copy)]
pub struct AckSeen {
    pub at: u64,
    pub replica: u64,
    pub epoch: u64,
}

/// One applied election.
#[derive(Debug, Clone, Copy)]
pub struct Election {
    pub at: u64,
    pub epoch: u64,
    pub master: u64,
}

#[derive(Debug)]
enum Event {
    /// Boxed: messages are large, and events move about in the queue.
    Deliver {
        from: Node,
        to: Node,
        msg: Box<Msg>,
    },
    HeartbeatTick {
        id: u64,
        inc: u64,
    },
    ReplTick {
        id: u64,
        inc: u64,
    },
    ControllerTick,
    Commit,
    Write,
    NextFault {
        lane: u64,
    },
    NextLeaderChange,
    NextSwitchOver,
    Do(Action),
}

/// A fault that hit the master, until the next master acknowledges.
#[derive(Debug, Clone, Copy)]
struct MasterFault {
    start: u64,
    replica: u64,
    over: bool,
    /// Another fault began before the next master acknowledged: the time measures the pile,
    /// not one failover.
    compound: bool,
}

#[derive(Debug)]
pub struct World {
    cfg: Config,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    controller: Controller,
    replicas: Replicas,
    up: BTreeMap<u64, Up>,
    backlog: BTreeMap<u64, Vec<Event>>,
    cut: BTreeSet<(Node, Node)>,
    checker: Checker,
    stats: Stats,
    trace: Vec<String>,
    violation: Option<(u64, String)>,
    healed: bool,
    settled: bool,
    next_write: u64,
    master_fault: Option<MasterFault>,
    last_ack_epoch: u64,
    lose_on_next_election: Option<(usize, u64)>,
    last_no_candidate: bool,
    acks: Vec<AckSeen>,
    elections: Vec<Election>,
    leader_losses: Vec<u64>,
}

impl World {
    pub fn new(cfg: Config) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let mut replicas = BTreeMap::new();
        let mut up = BTreeMap::new();
        for id in 1..=3 {
            replicas.insert(id, Replica::new(id, rng.next_u64(), cfg.rules));
            up.insert(id, Up::Running);
        }
        let mut w = World {
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            controller: Controller::new(ElectionSettings::default()),
            replicas,
            up,
            backlog: BTreeMap::new(),
            cut: BTreeSet::new(),
            checker: Checker::default(),
            stats: Stats {
                seeds: 1,
                multi_fault_seeds: u64::from(cfg.faults == FaultMode::Multi),
                ..Stats::default()
            },
            trace: Vec::new(),
            violation: None,
            healed: false,
            settled: false,
            next_write: 0,
            master_fault: None,
            last_ack_epoch: 0,
            lose_on_next_election: None,
            last_no_candidate: false,
            acks: Vec::new(),
            elections: Vec::new(),
            leader_losses: Vec::new(),
            cfg,
        };
        for id in 1..=3 {
            let inc = w.replicas[&id].inc;
            let t = w.rng.between(0, 300);
            w.schedule(t, Event::HeartbeatTick { id, inc });
            let t = w.rng.between(0, REPL_TICK_MS);
            w.schedule(t, Event::ReplTick { id, inc });
        }
        w.schedule(CONTROLLER_TICK_MS, Event::ControllerTick);
        w.schedule(1_500, Event::Write);
        match w.cfg.faults {
            FaultMode::Quiet => {}
            FaultMode::Single => {
                let t = w.rng.between(4_000, 8_000);
                w.schedule(t, Event::NextFault { lane: 0 });
            }
            FaultMode::Multi => {
                for lane in 1..=3 {
                    let t = w.rng.between(3_000, 10_000);
                    w.schedule(t, Event::NextFault { lane });
                }
            }
        }
        if w.cfg.leader_changes {
            let t = w.rng.between(5_000, 20_000);
            w.schedule(t, Event::NextLeaderChange);
        }
        if w.cfg.switch_overs {
            let t = w.rng.between(5_000, 30_000);
            w.schedule(t, Event::NextSwitchOver);
        }
        w
    }

    pub fn replica(&self, id: u64) -> &Replica {
        &self.replicas[&id]
    }

    pub fn record(&self) -> GroupRecord {
        self.controller.record()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn acks(&self) -> &[AckSeen] {
        &self.acks
    }

    pub fn elections(&self) -> &[Election] {
        &self.elections
    }

    /// When the controller lost its leader.
    pub fn leader_losses(&self) -> &[u64] {
        &self.leader_losses
    }

    /// Schedules a scripted action.
    pub fn at(&mut self, t: u64, action: Action) {
        self.schedule(t, Event::Do(action));
    }

    /// The whole random run: faults and writes, then heal and settle, then the final check.
    /// The statistics come back either way.
    pub fn run(mut self) -> (Stats, Option<Failure>) {
        let end = self.cfg.run_ms;
        let result = self.run_until(end).and_then(|()| self.finish());
        let mut stats = self.stats.clone();
        stats.failed_seeds = u64::from(result.is_err());
        (stats, result.err())
    }

    /// Processes every event up to `t`.
    pub fn run_until(&mut self, t: u64) -> Result<(), Failure> {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > t {
                break;
            }
            let ((at, _), event) = entry.remove_entry();
            self.now = at;
            self.step(event);
            if let Some(f) = self.failure() {
                return Err(f);
            }
        }
        self.now = self.now.max(t);
        Ok(())
    }

    /// Heals every fault, lets the group settle (one master, everyone following it with the
    /// same log, all three in the sync-state set), then checks that nothing acknowledged is
    /// lost.
    pub fn finish(&mut self) -> Result<Stats, Failure> {
        self.heal_all();
        self.healed = true;
        let deadline = self.now + self.cfg.settle_ms;
        while !self.settled {
            if self.now > deadline {
                let states: Vec<String> = self
                    .replicas
                    .values()
                    .map(|r| format!("{}: {} log {}", r.id, r.describe(), r.log_end()))
                    .collect();
                self.violation = Some((
                    self.now,
                    format!(
                        "the healed group did not settle within {} ms: record {:?}; {}",
                        self.cfg.settle_ms,
                        brief(&self.controller.record()),
                        states.join("; ")
                    ),
                ));
                break;
            }
            let next = self.now + CONTROLLER_TICK_MS;
            self.run_until(next)?;
        }
        if self.violation.is_none() {
            let record = self.controller.record();
            let master = record.master.expect("settled with a master");
            if let Err(e) = self.checker.nothing_lost(&self.replicas[&master]) {
                self.violation = Some((self.now, e));
            }
        }
        match self.failure() {
            Some(f) => Err(f),
            None => Ok(self.stats.clone()),
        }
    }

    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    fn failure(&self) -> Option<Failure> {
        let (at_ms, what) = self.violation.clone()?;
        let skip = if self.cfg.full_trace {
            0
        } else {
            self.trace.len().saturating_sub(TRACE_TAIL)
        };
        Some(Failure {
            seed: self.cfg.seed,
            random: self.cfg.faults != FaultMode::Quiet,
            at_ms,
            what,
            trace: self.trace[skip..].to_vec(),
        })
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn note_line(&mut self, line: String) {
        let line = format!("t={:>6} {line}", self.now);
        if !self.cfg.full_trace && self.trace.len() >= 4 * TRACE_TAIL {
            self.trace.drain(..2 * TRACE_TAIL);
        }
        self.trace.push(line);
    }

    /// A line only the full trace keeps (built only then).
    fn detail(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.full_trace {
            self.note_line(line());
        }
    }

    fn check(&mut self, result: Result<(), String>) {
        if let (Err(e), None) = (result, &self.violation) {
            self.violation = Some((self.now, e));
        }
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, msg } => self.deliver(from, to, *msg),
            Event::HeartbeatTick { id, inc } => self.replica_timer(id, inc, true),
            Event::ReplTick { id, inc } => self.replica_timer(id, inc, false),
            Event::ControllerTick => self.controller_tick(),
            Event::Commit => {
                let mut out = CtlOut::default();
                self.controller.commit(self.now, &mut out);
                self.after_controller(out);
            }
            Event::Write => self.write(),
            Event::NextFault { lane } => self.inject_fault(lane),
            Event::NextLeaderChange => self.random_leader_change(),
            Event::NextSwitchOver => {
                if !self.healed && self.now < self.cfg.run_ms {
                    let record = self.controller.record();
                    let others: Vec<u64> = record
                        .sync_state
                        .iter()
                        .copied()
                        .filter(|&id| Some(id) != record.master)
                        .collect();
                    if !others.is_empty() {
                        let to = others[self.rng.below(others.len() as u64) as usize];
                        self.act(Action::SwitchOver(to));
                    }
                    let next = self.now + self.rng.between(5_000, 30_000);
                    self.schedule(next, Event::NextSwitchOver);
                }
            }
            Event::Do(action) => self.act(action),
        }
        let result = self.checker.after_step(&self.replicas);
        self.check(result);
    }

    fn send(&mut self, from: Node, to: Node, msg: Msg) {
        if self.cut.contains(&(from, to)) {
            return;
        }
        let lossy = !self.healed && from != Node::Client;
        if lossy && self.rng.chance(self.cfg.drop_per_mille) {
            return;
        }
        let slow_share = if self.healed {
            0
        } else {
            self.cfg.slow_per_mille
        };
        let roll = self.rng.below(1_000);
        let delay = if from == Node::Client {
            self.rng.between(0, 5)
        } else if roll < slow_share {
            self.rng.between(300, 2_000)
        } else if roll < slow_share + 200 {
            self.rng.between(20, 300)
        } else {
            self.rng.between(0, 20)
        };
        let at = self.now + delay;
        let msg = Box::new(msg);
        self.schedule(at, Event::Deliver { from, to, msg });
    }

    fn deliver(&mut self, from: Node, to: Node, msg: Msg) {
        if self.cut.contains(&(from, to)) {
            return;
        }
        self.detail(|| format!("{from:?} -> {to:?} {}", msg.kind()));
        match to {
            Node::Controller => {
                if let Msg::Heartbeat { hb, seq } = msg {
                    let latency = self.rng.between(1, 15);
                    let mut out = CtlOut::default();
                    self.controller
                        .on_heartbeat(&hb, seq, self.now, latency, &mut out);
                    self.after_controller(out);
                }
            }
            Node::Replica(id) => match self.up[&id] {
                Up::Crashed => {}
                Up::Paused => self.backlog.entry(id).or_default().push(Event::Deliver {
                    from,
                    to,
                    msg: Box::new(msg),
                }),
                Up::Running => self.receive(id, from, msg),
            },
            Node::Client => {}
        }
    }

    fn receive(&mut self, id: u64, from: Node, msg: Msg) {
        let src = match from {
            Node::Replica(s) => s,
            _ => 0,
        };
        let mut out = Out::default();
        let r = self.replicas.get_mut(&id).expect("replicas 1..=3");
        r.receive(src, msg, self.now, &mut out);
        self.after_replica(id, out);
    }

    fn replica_timer(&mut self, id: u64, inc: u64, heartbeat: bool) {
        if self.replicas[&id].inc != inc || self.up[&id] == Up::Crashed {
            return;
        }
        let event = if heartbeat {
            Event::HeartbeatTick { id, inc }
        } else {
            Event::ReplTick { id, inc }
        };
        if self.up[&id] == Up::Paused {
            self.backlog.entry(id).or_default().push(event);
            return;
        }
        let now = self.now;
        let mut out = Out::default();
        let r = self.replicas.get_mut(&id).expect("replicas 1..=3");
        let next = if heartbeat {
            r.heartbeat(now, &mut out);
            now + self.rng.between(490, 510)
        } else {
            r.repl_tick(now, &mut out);
            now + REPL_TICK_MS
        };
        self.after_replica(id, out);
        self.schedule(next, event);
    }

    fn after_replica(&mut self, id: u64, out: Out) {
        for (to, msg) in out.sends {
            self.send(Node::Replica(id), to, msg);
        }
        for note in out.notes {
            self.note(id, note);
        }
    }

    fn note(&mut self, id: u64, note: Note) {
        let empty = GroupRecord::default();
        let record = self.controller.state.groups.get(GROUP).unwrap_or(&empty);
        let r = &self.replicas[&id];
        let result = match &note {
            Note::Acked {
                id: message,
                pos,
                epoch,
            } => self.checker.on_ack(
                id,
                r.inc,
                *epoch,
                *pos,
                *message,
                self.now,
                &self.replicas,
                record,
            ),
            Note::Appended { start, count } if self.cfg.check_epoch_labels => {
                self.checker.labels(r, *start, start + count)
            }
            Note::Adopted if self.cfg.check_epoch_labels => self.checker.labels(r, 0, r.log_end()),
            Note::Truncated { to, .. } => {
                self.checker
                    .on_truncate(id, *to, record)
                    .and_then(|()| match r.master_sought() {
                        Some((m, e)) => self.checker.prefix_of_master(id, m, e, &self.replicas),
                        None => Ok(()),
                    })
            }
            Note::Joined { master, epoch } => {
                self.checker
                    .prefix_of_master(id, *master, *epoch, &self.replicas)
            }
            Note::Stuck(why) => Err(format!("stuck: {why}")),
            Note::Appended { .. }
            | Note::Adopted
            | Note::Refused { .. }
            | Note::BecameMaster { .. }
            | Note::SteppedDown { .. } => Ok(()),
        };
        self.check(result);
        match note {
            Note::Acked { epoch, .. } => self.on_acked(id, epoch),
            Note::Refused { why } => {
                if why == "lease expired" {
                    self.stats.refused_after_lease += 1;
                }
                self.detail(|| format!("R{id} refused a send: {why}"));
            }
            Note::Truncated { from, to } => {
                self.stats.truncations += 1;
                self.note_line(format!("R{id} cut its log from {from} to {to}"));
            }
            Note::Joined { master, epoch } => {
                let end = self.replicas[&id].log_end();
                self.note_line(format!(
                    "R{id} follows R{master} in epoch {epoch} from {end}"
                ));
            }
            Note::BecameMaster {
                epoch,
                start,
                fence_until,
                lease_until,
            } => self.note_line(format!(
                "R{id} is master of epoch {epoch} from {start} (fenced until {fence_until}, \
                 lease until {lease_until})"
            )),
            Note::SteppedDown { epoch } => {
                self.note_line(format!("R{id} steps down as master of epoch {epoch}"));
            }
            Note::Appended { .. } | Note::Adopted | Note::Stuck(_) => {}
        }
    }

    fn on_acked(&mut self, id: u64, epoch: u64) {
        self.stats.acked += 1;
        self.acks.push(AckSeen {
            at: self.now,
            replica: id,
            epoch,
        });
        if epoch > self.last_ack_epoch {
            self.last_ack_epoch = epoch;
            self.note_line(format!(
                "R{id} acknowledges its first write of epoch {epoch}"
            ));
            if let Some(f) = self.master_fault.take() {
                let took = self.now - f.start;
                if f.compound {
                    self.stats.compound_failovers += 1;
                    return;
                }
                self.stats.failovers += 1;
                self.stats.failover_ms_total += took;
                self.stats.max_failover_ms = self.stats.max_failover_ms.max(took);
                if self.cfg.faults != FaultMode::Multi {
                    self.stats.max_failover_single_ms = self.stats.max_failover_single_ms.max(took);
                }
                self.note_line(format!("failover from R{} took {took} ms", f.replica));
            }
        } else if self.master_fault.is_some_and(|f| f.over) {
            // The master came through its fault without being replaced.
            self.master_fault = None;
        }
    }

    fn after_controller(&mut self, out: CtlOut) {
        for at in out.commit_at {
            self.schedule(at, Event::Commit);
        }
        for (cmd, outcome) in &out.applied {
            let empty = GroupRecord::default();
            let record = self.controller.state.groups.get(GROUP).unwrap_or(&empty);
            let result = self
                .checker
                .on_applied(cmd, outcome, record, &self.replicas);
            self.check(result);
            self.trace_applied(cmd, outcome);
        }
        for d in out.decisions {
            match d {
                Decision::Elect(cmd) => {
                    self.last_no_candidate = false;
                    self.detail(|| format!("controller proposes {cmd:?}"));
                    if let Some((survivors, back_after)) = self.lose_on_next_election.take() {
                        self.act(Action::LeaderLost { survivors });
                        let at = self.now + back_after;
                        self.at(at, Action::LeaderBack);
                    }
                }
                Decision::NoCandidate(why) => {
                    if !self.last_no_candidate {
                        self.note_line(format!("controller: no candidate: {why}"));
                    }
                    self.last_no_candidate = true;
                }
                Decision::Healthy | Decision::Wait(_) => {}
            }
        }
        for (to, answer) in out.answers {
            self.send(Node::Controller, Node::Replica(to), Msg::Answer(answer));
        }
    }

    fn trace_applied(&mut self, cmd: &Command, outcome: &Outcome) {
        match (cmd, outcome) {
            (Command::Elect { master, reason, .. }, Outcome::Applied(g)) => {
                self.stats.elections += 1;
                self.elections.push(Election {
                    at: self.now,
                    epoch: g.epoch,
                    master: *master,
                });
                self.note_line(format!(
                    "controller elects R{master} for epoch {} with set {:?} ({reason})",
                    g.epoch, g.sync_state
                ));
            }
            (Command::AlterSyncState { .. }, Outcome::Applied(g)) => self.note_line(format!(
                "controller: sync-state set of epoch {} is {:?} (version {})",
                g.epoch, g.sync_state, g.sync_state_version
            )),
            (_, Outcome::Refused(why)) => {
                let why = why.clone();
                self.detail(|| format!("controller refused a command: {why}"));
            }
            (Command::Register { replica, .. }, Outcome::Applied(_)) => {
                let id = replica.id;
                self.detail(|| format!("controller registers R{id}"));
            }
        }
    }

    fn controller_tick(&mut self) {
        let latency = self.rng.between(1, 15);
        let mut out = CtlOut::default();
        self.controller.tick(self.now, latency, &mut out);
        self.after_controller(out);
        let next = self.now + CONTROLLER_TICK_MS;
        self.schedule(next, Event::ControllerTick);
        if self.healed && !self.settled {
            self.settled = self.is_settled();
        }
    }

    fn is_settled(&self) -> bool {
        let record = self.controller.record();
        let Some(m) = record.master else {
            return false;
        };
        let master = &self.replicas[&m];
        let leads = master.inc == record.master_incarnation
            && master
                .mastership()
                .is_some_and(|ms| ms.epoch == record.epoch && ms.committed.len() == 3);
        leads
            && master.parked() == 0
            && record.sync_state.len() == 3
            && self.replicas.values().all(|r| {
                r.id == m || (r.following() == Some((m, record.epoch)) && r.log == master.log)
            })
    }

    fn write(&mut self) {
        if self.healed || self.now >= self.cfg.run_ms {
            return;
        }
        self.next_write += 1;
        self.stats.writes += 1;
        // Producers send to whichever replica they believe is master: stale routes included.
        let targets: Vec<u64> = self
            .replicas
            .values()
            .filter(|r| self.up[&r.id] != Up::Crashed && r.mastership().is_some())
            .map(|r| r.id)
            .collect();
        if !targets.is_empty() {
            let to = targets[self.rng.below(targets.len() as u64) as usize];
            let id = self.next_write;
            self.send(Node::Client, Node::Replica(to), Msg::Write { id });
        }
        let (lo, hi) = self.cfg.write_gap_ms;
        let next = self.now + self.rng.between(lo, hi);
        self.schedule(next, Event::Write);
    }

    fn inject_fault(&mut self, lane: u64) {
        if self.healed || self.now >= self.cfg.run_ms {
            return;
        }
        let id = if lane == 0 {
            match self.controller.record().master {
                Some(m) if self.rng.chance(500) => m,
                _ => self.rng.between(1, 3),
            }
        } else {
            lane
        };
        let (start, end, duration, what) = random_fault(&mut self.rng, id);
        self.stats.faults += 1;
        self.note_line(format!("fault: R{id} {what} for {duration} ms"));
        match &mut self.master_fault {
            Some(f) => f.compound = true,
            None if self.controller.record().master == Some(id) => {
                self.master_fault = Some(MasterFault {
                    start: self.now,
                    replica: id,
                    over: false,
                    compound: false,
                });
            }
            None => {}
        }
        for action in start {
            self.act(action);
        }
        let until = self.now + duration;
        for action in end {
            self.at(until, action);
        }
        self.at(until, Action::FaultOver { lane, replica: id });
    }

    fn random_leader_change(&mut self) {
        if self.healed || self.now >= self.cfg.run_ms {
            return;
        }
        let survivors = self.rng.below(self.controller.pending() as u64 + 1) as usize;
        self.act(Action::LeaderLost { survivors });
        let outage = if self.rng.chance(200) {
            self.rng.between(1_500, 5_000)
        } else {
            self.rng.between(0, 1_500)
        };
        let back = self.now + outage;
        self.at(back, Action::LeaderBack);
        let next = self.now + self.rng.between(5_000, 20_000);
        self.schedule(next, Event::NextLeaderChange);
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Crash(id) => {
                if self.up[&id] != Up::Crashed {
                    self.up.insert(id, Up::Crashed);
                    self.backlog.remove(&id);
                    self.replicas.get_mut(&id).expect("1..=3").crash();
                    self.note_line(format!("R{id} crashes"));
                }
            }
            Action::Restart(id) => {
                if self.up[&id] == Up::Crashed {
                    let inc = self.rng.next_u64();
                    self.replicas.get_mut(&id).expect("1..=3").restart(inc);
                    self.up.insert(id, Up::Running);
                    self.note_line(format!("R{id} restarts as incarnation {inc:#x}"));
                    self.schedule(self.now, Event::HeartbeatTick { id, inc });
                    let t = self.now + self.rng.between(0, REPL_TICK_MS);
                    self.schedule(t, Event::ReplTick { id, inc });
                }
            }
            Action::Pause(id) => {
                if self.up[&id] == Up::Running {
                    self.up.insert(id, Up::Paused);
                    let r = &self.replicas[&id];
                    let line = format!("R{id} pauses ({})", r.describe());
                    self.note_line(line);
                }
            }
            Action::Resume(id) => {
                if self.up[&id] == Up::Paused {
                    self.up.insert(id, Up::Running);
                    self.note_line(format!("R{id} resumes"));
                    // What arrived while stopped is read before the stopped timers fire (a
                    // resumed process finds both ready; this order is the one that puts a
                    // stale lease to the test).
                    let (messages, timers): (Vec<Event>, Vec<Event>) = self
                        .backlog
                        .remove(&id)
                        .unwrap_or_default()
                        .into_iter()
                        .partition(|e| matches!(e, Event::Deliver { .. }));
                    for event in messages.into_iter().chain(timers) {
                        self.schedule(self.now, event);
                    }
                }
            }
            Action::Cut(a, b) => {
                self.detail(|| format!("cut {a:?} -> {b:?}"));
                self.cut.insert((a, b));
            }
            Action::Mend(a, b) => {
                self.detail(|| format!("mend {a:?} -> {b:?}"));
                self.cut.remove(&(a, b));
            }
            Action::LeaderLost { survivors } => {
                if self.controller.leader {
                    let pending = self.controller.pending();
                    let mut out = CtlOut::default();
                    self.controller.lose_leader(self.now, survivors, &mut out);
                    self.stats.leader_changes += 1;
                    self.leader_losses.push(self.now);
                    self.note_line(format!(
                        "controller loses its leader ({} of {pending} uncommitted proposals land)",
                        survivors.min(pending)
                    ));
                    self.after_controller(out);
                }
            }
            Action::LeaderBack => {
                if !self.controller.leader {
                    self.controller.gain_leader(self.now);
                    self.note_line("controller has a leader again".into());
                }
            }
            Action::LeaderLostOnNextElection {
                survivors,
                back_after_ms,
            } => self.lose_on_next_election = Some((survivors, back_after_ms)),
            Action::SwitchOver(to) => {
                let latency = self.rng.between(1, 15);
                let mut out = CtlOut::default();
                match self.controller.switch_over(to, self.now, latency, &mut out) {
                    Ok(()) => {
                        self.stats.switch_overs += 1;
                        self.note_line(format!("operator: switch over to R{to}"));
                    }
                    Err(why) => self.note_line(format!("operator: no switch-over to R{to}: {why}")),
                }
                self.after_controller(out);
            }
            Action::FaultOver { lane, replica } => {
                if let Some(f) = &mut self.master_fault {
                    if f.replica == replica {
                        f.over = true;
                    }
                }
                let gap = if lane == 0 {
                    self.rng.between(500, 5_000)
                } else {
                    self.rng.between(500, 8_000)
                };
                let next = self.now + gap;
                self.schedule(next, Event::NextFault { lane });
            }
        }
    }

    fn heal_all(&mut self) {
        for id in 1..=3 {
            self.act(Action::Resume(id));
            self.act(Action::Restart(id));
        }
        self.cut.clear();
        self.act(Action::LeaderBack);
        self.lose_on_next_election = None;
        self.note_line("every fault healed".into());
    }
}

fn brief(g: &GroupRecord) -> String {
    format!(
        "master {:?} epoch {} set {:?} v{}",
        g.master, g.epoch, g.sync_state, g.sync_state_version
    )
}
