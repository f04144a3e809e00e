//! The replicated state: per broker group, its replicas, its master, the epoch and the
//! sync-state set. It changes only by [`Command`]s applied in Raft-log order, and every
//! command is checked against the state it lands on (compare-and-set on the epoch and the
//! sync-state version), so a decision made on a stale view is refused, never half-applied.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Where one replica of a group is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub id: u64,
    pub replication_address: String,
    pub client_address: String,
}

/// One broker group, as the controller decided it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub cluster: String,
    pub replicas: BTreeMap<u64, ReplicaInfo>,
    /// The master's replica id; `None` before the first election.
    pub master: Option<u64>,
    /// The master's process incarnation when it was elected: a heartbeat from another
    /// incarnation means the master restarted, which counts as its failure.
    pub master_incarnation: u64,
    /// Grows by one with every election; 0 before the first.
    pub epoch: u64,
    /// Replicas, the master included, that hold every record the master acknowledged. The
    /// master acknowledges a sync send only once every member holds it, so any member can
    /// take over without losing one.
    pub sync_state: BTreeSet<u64>,
    /// Grows with every change of `sync_state` (and every election).
    pub sync_state_version: u64,
}

/// A change to the replicated state; the Raft log's entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A replica's addresses (on its first heartbeat, and when they change).
    Register {
        group: String,
        cluster: String,
        replica: ReplicaInfo,
    },
    /// Makes `master` (of process `incarnation`) the master of epoch `expected_epoch + 1`,
    /// provided the group is still at that epoch and its sync-state set still at
    /// `expected_version` (the set the choice was made from).
    Elect {
        group: String,
        expected_epoch: u64,
        expected_version: u64,
        master: u64,
        incarnation: u64,
        sync_state: BTreeSet<u64>,
        /// Chosen from outside the sync-state set: acknowledged records may be lost.
        unclean: bool,
        reason: String,
    },
    /// The master of `epoch` replaces the sync-state set it last saw at `expected_version`.
    AlterSyncState {
        group: String,
        epoch: u64,
        master: u64,
        expected_version: u64,
        sync_state: BTreeSet<u64>,
    },
}

impl Command {
    /// The group the command is about.
    pub fn group(&self) -> &str {
        match self {
            Command::Register { group, .. }
            | Command::Elect { group, .. }
            | Command::AlterSyncState { group, .. } => group,
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; the group as it is now.
    Applied(GroupRecord),
    /// Refused, and why (the state is unchanged).
    Refused(String),
}

/// Every group the controller knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    pub groups: BTreeMap<String, GroupRecord>,
}

impl ControllerState {
    /// Applies one command; deterministic, so every member reaches the same state.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::Register {
                group,
                cluster,
                replica,
            } => {
                let g = self.groups.entry(group.clone()).or_default();
                if g.cluster.is_empty() {
                    g.cluster = cluster.clone();
                } else if g.cluster != *cluster {
                    return Outcome::Refused(format!(
                        "broker group {group} belongs to cluster {}, not {cluster}",
                        g.cluster
                    ));
                }
                g.replicas.insert(replica.id, replica.clone());
                Outcome::Applied(g.clone())
            }
            Command::Elect {
                group,
                expected_epoch,
                expected_version,
                master,
                incarnation,
                sync_state,
                unclean: _,
                reason: _,
            } => {
                let Some(g) = self.groups.get_mut(group) else {
                    return Outcome::Refused(format!("unknown broker group {group}"));
                };
                if g.epoch != *expected_epoch {
                    return Outcome::Refused(format!(
                        "group {group} is at epoch {}, the election was for epoch {expected_epoch}",
                        g.epoch
                    ));
                }
                if g.sync_state_version != *expected_version {
                    return Outcome::Refused(format!(
                        "the sync-state set of group {group} changed (version {}, the election \
                         was decided from {expected_version})",
                        g.sync_state_version
                    ));
                }
                if !g.replicas.contains_key(master) {
                    return Outcome::Refused(format!(
                        "replica {master} of group {group} never registered"
                    ));
                }
                if !sync_state.contains(master) {
                    return Outcome::Refused(format!(
                        "the new sync-state set of group {group} must hold its master {master}"
                    ));
                }
                g.master = Some(*master);
                g.master_incarnation = *incarnation;
                g.epoch += 1;
                g.sync_state = sync_state.clone();
                g.sync_state_version += 1;
                Outcome::Applied(g.clone())
            }
            Command::AlterSyncState {
                group,
                epoch,
                master,
                expected_version,
                sync_state,
            } => {
                let Some(g) = self.groups.get_mut(group) else {
                    return Outcome::Refused(format!("unknown broker group {group}"));
                };
                if g.epoch != *epoch || g.master != Some(*master) {
                    return Outcome::Refused(format!(
                        "replica {master} is not the master of group {group} in epoch {epoch} \
                         (epoch {} has master {:?})",
                        g.epoch, g.master
                    ));
                }
                if g.sync_state_version != *expected_version {
                    return Outcome::Refused(format!(
                        "the sync-state set of group {group} changed (version {}, the \
                         proposal was based on {expected_version})",
                        g.sync_state_version
                    ));
                }
                if !sync_state.contains(master) {
                    return Outcome::Refused(format!(
                        "the sync-state set of group {group} must hold its master {master}"
                    ));
                }
                if let Some(unknown) = sync_state.iter().find(|id| !g.replicas.contains_key(id)) {
                    return Outcome::Refused(format!(
                        "replica {unknown} of group {group} never registered"
                    ));
                }
                g.sync_state = sync_state.clone();
                g.sync_state_version += 1;
                Outcome::Applied(g.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: u64) -> ReplicaInfo {
        ReplicaInfo {
            id,
            replication_address: format!("127.0.0.1:{}", 20000 + id),
            client_address: format!("127.0.0.1:{}", 10000 + id),
        }
    }

    fn register(state: &mut ControllerState, id: u64) {
        let out = state.apply(&Command::Register {
            group: "g".into(),
            cluster: "c".into(),
            replica: replica(id),
        });
        assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
    }

    fn elect(expected_epoch: u64, master: u64, set: &[u64]) -> Command {
        Command::Elect {
            group: "g".into(),
            expected_epoch,
            // Every election bumps the version once; these tests change the set only by
            // elections.
            expected_version: expected_epoch,
            master,
            incarnation: 7,
            sync_state: set.iter().copied().collect(),
            unclean: false,
            reason: "test".into(),
        }
    }

    #[test]
    fn an_election_bumps_the_epoch_once_and_a_stale_one_is_refused() {
        let mut s = ControllerState::default();
        register(&mut s, 1);
        register(&mut s, 2);
        assert!(matches!(s.apply(&elect(0, 1, &[1])), Outcome::Applied(_)));
        let g = &s.groups["g"];
        assert_eq!((g.master, g.epoch, g.sync_state_version), (Some(1), 1, 1));
        // Two leaders' decisions for the same epoch: only the first lands.
        assert!(matches!(s.apply(&elect(1, 2, &[2])), Outcome::Applied(_)));
        let before = s.clone();
        assert!(matches!(s.apply(&elect(1, 1, &[1])), Outcome::Refused(_)));
        assert_eq!(s, before);
        assert_eq!(s.groups["g"].epoch, 2);
    }

    #[test]
    fn elections_need_a_registered_master_inside_its_set() {
        let mut s = ControllerState::default();
        register(&mut s, 1);
        assert!(matches!(s.apply(&elect(0, 9, &[9])), Outcome::Refused(_)));
        assert!(matches!(s.apply(&elect(0, 1, &[2])), Outcome::Refused(_)));
        assert_eq!(s.groups["g"].epoch, 0);
    }

    #[test]
    fn only_the_current_master_alters_the_set_and_only_from_the_version_it_saw() {
        let mut s = ControllerState::default();
        for id in 1..=3 {
            register(&mut s, id);
        }
        s.apply(&elect(0, 1, &[1]));
        let alter = |master, epoch, version, set: &[u64]| Command::AlterSyncState {
            group: "g".into(),
            epoch,
            master,
            expected_version: version,
            sync_state: set.iter().copied().collect(),
        };
        assert!(matches!(
            s.apply(&alter(2, 1, 1, &[1, 2])),
            Outcome::Refused(_)
        ));
        assert!(matches!(
            s.apply(&alter(1, 1, 0, &[1, 2])),
            Outcome::Refused(_)
        ));
        assert!(matches!(
            s.apply(&alter(1, 1, 1, &[2])),
            Outcome::Refused(_)
        ));
        assert!(matches!(
            s.apply(&alter(1, 1, 1, &[1, 4])),
            Outcome::Refused(_)
        ));
        assert!(matches!(
            s.apply(&alter(1, 1, 1, &[1, 2, 3])),
            Outcome::Applied(_)
        ));
        let g = &s.groups["g"];
        assert_eq!(g.sync_state, [1, 2, 3].into_iter().collect());
        assert_eq!(g.sync_state_version, 2);
    }

    #[test]
    fn an_election_decided_from_an_older_sync_state_set_is_refused() {
        let mut s = ControllerState::default();
        for id in 1..=3 {
            register(&mut s, id);
        }
        s.apply(&elect(0, 1, &[1]));
        s.apply(&Command::AlterSyncState {
            group: "g".into(),
            epoch: 1,
            master: 1,
            expected_version: 1,
            sync_state: [1, 2, 3].into_iter().collect(),
        });
        // Decided while 2 was in the set; the master then dropped it.
        let stale = Command::Elect {
            group: "g".into(),
            expected_epoch: 1,
            expected_version: 2,
            master: 2,
            incarnation: 7,
            sync_state: [2].into_iter().collect(),
            unclean: false,
            reason: "test".into(),
        };
        s.apply(&Command::AlterSyncState {
            group: "g".into(),
            epoch: 1,
            master: 1,
            expected_version: 2,
            sync_state: [1, 3].into_iter().collect(),
        });
        assert!(matches!(s.apply(&stale), Outcome::Refused(_)));
        assert_eq!(s.groups["g"].master, Some(1));
    }

    #[test]
    fn a_group_stays_in_its_cluster() {
        let mut s = ControllerState::default();
        register(&mut s, 1);
        let out = s.apply(&Command::Register {
            group: "g".into(),
            cluster: "other".into(),
            replica: replica(2),
        });
        assert!(matches!(out, Outcome::Refused(_)));
        assert_eq!(s.groups["g"].replicas.len(), 1);
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let mut s = ControllerState::default();
        register(&mut s, 1);
        s.apply(&elect(0, 1, &[1]));
        let json = serde_json::to_vec(&s).unwrap();
        let back: ControllerState = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, s);
    }
}
