//! The invariants, checked against the ground truth the simulation holds (every replica's
//! real log, the controller's committed record), never against what a node believes.
//!
//! 1. **One acknowledger.** Every acknowledgement in epoch `E` comes from the replica (and
//!    incarnation) the controller elected for `E`; acknowledgements never go back to an older
//!    epoch; and when a replica acknowledges, no other replica is able to at that instant (a
//!    valid lease with its fence over).
//! 2. **The sync-state set holds everything acknowledged.** At every instant, every member of
//!    the controller's committed sync-state set holds every record acknowledged so far, at
//!    its offset. Why this is the guarantee: a master requires every member of its committed
//!    set *and of every proposal whose fate it does not know* to hold a send before
//!    acknowledging it, so a member admitted by a commit the master has not heard of yet is
//!    already required; it proposes a newcomer only once the newcomer holds every record
//!    acknowledged so far (the log before its epoch and its own acknowledged ones); an
//!    election only keeps members of the set it was decided on, which must still be the
//!    committed set when the election lands. Hence a committed member never lacks an
//!    acknowledged record, and an election from the set loses none. (A join on lag alone
//!    breaks the second step; an election landing after the set changed, the third.)
//! 3. **Epochs only grow**: the controller's, and the epoch each replica knows of.
//! 4. **Rejoining cuts exactly the divergent tail**: a replica that cut its log, or was
//!    admitted by a master, holds a prefix of that master's log; and each replica's epoch
//!    history says truthfully which epoch wrote each record it holds (what `divergence`
//!    relies on).
//! 5. **No acknowledged loss** (after healing every fault): every acknowledged message is in
//!    the final master's log exactly once, at the offset it was acknowledged at.

use std::collections::{BTreeMap, BTreeSet};

use rocketlog_controller::{Command, GroupRecord, Outcome};

use super::net::Rec;
use super::replica::Replica;

pub type Replicas = BTreeMap<u64, Replica>;

#[derive(Debug, Default)]
pub struct Checker {
    /// Acknowledged records by offset.
    acked: BTreeMap<u64, Rec>,
    acked_ids: BTreeSet<u64>,
    /// Epoch -> (master, incarnation), as the controller elected.
    elected: BTreeMap<u64, (u64, u64)>,
    newest_ack_epoch: u64,
    controller_epoch: u64,
    /// (epoch, version) of the last sync-state set checked in full.
    set_checked: (u64, u64),
    /// By replica id (a vector: this runs after every event).
    known_epochs: Vec<u64>,
}

impl Checker {
    pub fn on_applied(
        &mut self,
        cmd: &Command,
        outcome: &Outcome,
        record: &GroupRecord,
        replicas: &Replicas,
    ) -> Result<(), String> {
        if let (
            Command::Elect {
                master,
                incarnation,
                ..
            },
            Outcome::Applied(g),
        ) = (cmd, outcome)
        {
            if let Some(before) = self.elected.insert(g.epoch, (*master, *incarnation)) {
                return Err(format!(
                    "inv 3: epoch {} elected twice ({before:?}, then {master})",
                    g.epoch
                ));
            }
        }
        if record.epoch < self.controller_epoch {
            return Err(format!(
                "inv 3: the controller's epoch went from {} back to {}",
                self.controller_epoch, record.epoch
            ));
        }
        self.controller_epoch = record.epoch;
        let now_set = (record.epoch, record.sync_state_version);
        if now_set != self.set_checked {
            self.set_checked = now_set;
            for &member in &record.sync_state {
                self.member_holds_all(member, record, replicas)?;
            }
        }
        Ok(())
    }

    fn member_holds_all(
        &self,
        member: u64,
        record: &GroupRecord,
        replicas: &Replicas,
    ) -> Result<(), String> {
        let log = &replicas[&member].log;
        for (&pos, rec) in &self.acked {
            if log.get(pos as usize) != Some(rec) {
                return Err(format!(
                    "inv 2: replica {member}, in the committed sync-state set {:?} (epoch {}, \
                     version {}), lacks acknowledged record {rec:?} at offset {pos} (it holds \
                     {:?} there; its log ends at {})",
                    record.sync_state,
                    record.epoch,
                    record.sync_state_version,
                    log.get(pos as usize),
                    log.len()
                ));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // the acknowledgement's fields and the truth to judge it by
    pub fn on_ack(
        &mut self,
        who: u64,
        inc: u64,
        epoch: u64,
        pos: u64,
        id: u64,
        now: u64,
        replicas: &Replicas,
        record: &GroupRecord,
    ) -> Result<(), String> {
        let elected = self.elected.get(&epoch).copied();
        if elected != Some((who, inc)) {
            return Err(format!(
                "inv 1: replica {who} (incarnation {inc:#x}) acknowledged in epoch {epoch}, \
                 whose elected master is {elected:?}"
            ));
        }
        if epoch < self.newest_ack_epoch {
            return Err(format!(
                "inv 1: replica {who} acknowledged in epoch {epoch} after epoch {} already had \
                 acknowledgements",
                self.newest_ack_epoch
            ));
        }
        self.newest_ack_epoch = epoch;
        for (&other, r) in replicas {
            if other == who {
                continue;
            }
            if let Some(m) = r.mastership() {
                if m.lease_until > now && m.fence_until <= now {
                    return Err(format!(
                        "inv 1: replica {who} acknowledged in epoch {epoch} while replica \
                         {other}, master of epoch {}, may acknowledge too (lease until {}, \
                         fence over at {})",
                        m.epoch, m.lease_until, m.fence_until
                    ));
                }
            }
        }
        let rec = (epoch, id);
        if let Some(before) = self.acked.insert(pos, rec) {
            return Err(format!(
                "inv 2: offset {pos} acknowledged twice: {before:?}, then {rec:?}"
            ));
        }
        if !self.acked_ids.insert(id) {
            return Err(format!("message {id} acknowledged twice"));
        }
        for &member in &record.sync_state {
            let held = replicas[&member].log.get(pos as usize);
            if held != Some(&rec) {
                return Err(format!(
                    "inv 2: replica {who} acknowledged {rec:?} at offset {pos}, which replica \
                     {member} of the committed sync-state set {:?} does not hold ({held:?})",
                    record.sync_state
                ));
            }
        }
        Ok(())
    }

    pub fn on_truncate(&self, who: u64, to: u64, record: &GroupRecord) -> Result<(), String> {
        if !record.sync_state.contains(&who) {
            return Ok(());
        }
        match self.acked.range(to..).next() {
            Some((pos, rec)) => Err(format!(
                "inv 2: replica {who}, in the committed sync-state set {:?}, cut its log to {to}, \
                 dropping acknowledged record {rec:?} at offset {pos}",
                record.sync_state
            )),
            None => Ok(()),
        }
    }

    /// Invariant 4: `who`, on its way to or admitted by `master` in `epoch`, holds a prefix
    /// of the master's log (checked while the master still leads that epoch).
    pub fn prefix_of_master(
        &self,
        who: u64,
        master: u64,
        epoch: u64,
        replicas: &Replicas,
    ) -> Result<(), String> {
        let m = &replicas[&master];
        if m.mastership().is_none_or(|ms| ms.epoch != epoch) {
            return Ok(());
        }
        let (log, mlog) = (&replicas[&who].log, &m.log);
        let agree = log.iter().zip(mlog).take_while(|(a, b)| a == b).count();
        if agree < log.len() {
            return Err(format!(
                "inv 4: replica {who} follows {master} (epoch {epoch}) but its log differs from \
                 the master's at offset {agree}: {:?} against {:?} (ends {} and {}; epochs \
                 {:?} and {:?})",
                log.get(agree),
                mlog.get(agree),
                log.len(),
                mlog.len(),
                replicas[&who].history.entries(),
                m.history.entries()
            ));
        }
        Ok(())
    }

    /// Invariant 4, second half: the epoch history names the epoch of every record in
    /// `from..to`.
    pub fn labels(&self, r: &Replica, from: u64, to: u64) -> Result<(), String> {
        for pos in from..to.min(r.log_end()) {
            let written = r.log[pos as usize].0;
            let said = r.history.epoch_at(pos);
            if said != Some(written) {
                return Err(format!(
                    "inv 4: replica {}'s epoch history {:?} says offset {pos} was written in \
                     epoch {said:?}, but the record there is from epoch {written}",
                    r.id,
                    r.history.entries()
                ));
            }
        }
        Ok(())
    }

    pub fn after_step(&mut self, replicas: &Replicas) -> Result<(), String> {
        for (&id, r) in replicas {
            let slot = id as usize;
            if self.known_epochs.len() <= slot {
                self.known_epochs.resize(slot + 1, 0);
            }
            let before = std::mem::replace(&mut self.known_epochs[slot], r.known_epoch);
            if r.known_epoch < before {
                return Err(format!(
                    "inv 3: replica {id}'s epoch went from {before} back to {}",
                    r.known_epoch
                ));
            }
        }
        Ok(())
    }

    /// Invariant 5, on the settled group.
    pub fn nothing_lost(&self, master: &Replica) -> Result<(), String> {
        let mut count: BTreeMap<u64, u32> = BTreeMap::new();
        for &(_, id) in &master.log {
            *count.entry(id).or_default() += 1;
        }
        for (&pos, &rec) in &self.acked {
            let n = count.get(&rec.1).copied().unwrap_or(0);
            if n != 1 {
                return Err(format!(
                    "inv 5: acknowledged message {} is {n} times in the final master {}'s log",
                    rec.1, master.id
                ));
            }
            if master.log.get(pos as usize) != Some(&rec) {
                return Err(format!(
                    "inv 5: acknowledged {rec:?} moved from offset {pos} in the final master {}'s \
                     log",
                    master.id
                ));
            }
        }
        Ok(())
    }
}
