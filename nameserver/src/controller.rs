//! The controller role of a nameserver (`[nameserver.controller]`): three (or five)
//! nameservers form one Raft group that decides, per broker group, which replica is master,
//! under which epoch, and which replicas are in sync. The leader answers the replicas'
//! heartbeats, grants the master its lease, and elects a new master when one fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rocketlog_controller::elector::{Decision, ElectionSettings, Elector, Heartbeat};
use rocketlog_controller::raft::{ControllerNode, ProposeError, RaftSettings};
use rocketlog_controller::{Command, GroupRecord, Outcome, ReplicaInfo};
use rocketlog_proto::controller::v1 as pb;
use rocketlog_proto::controller::v1::controller_server::Controller;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

/// Metadata naming the leader in a refusal from a member that is not it.
pub const LEADER_HEADER: &str = "x-controller-leader";

/// `[nameserver.controller]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerConfig {
    /// Run the controller in this nameserver (default false).
    pub enabled: bool,
    /// This member's id, one of `peers`.
    pub node_id: u64,
    /// Every member, this one included: `"<id>=<host>:<port>"` of its nameserver port.
    pub peers: Vec<String>,
    /// Where the Raft log, vote and snapshots are kept (default `controller` in the
    /// working directory).
    pub data_dir: PathBuf,
    /// A master silent for this long is replaced, ms (default 3 000).
    pub master_timeout_ms: u64,
    /// How often replicas heartbeat, ms (default 500).
    pub heartbeat_interval_ms: u64,
    /// How long a master may acknowledge after sending an answered heartbeat, ms (default
    /// 1 500; shorter than `master_timeout_ms`).
    pub lease_ms: u64,
    /// Elect a replica outside the sync-state set when no member is alive: the group
    /// writes again, but acknowledged messages only the members had are lost (default
    /// false).
    pub unclean_election: bool,
    /// Raft: election timeout range and leader heartbeat, ms (defaults 400, 800, 100).
    pub raft_election_timeout_min_ms: u64,
    pub raft_election_timeout_max_ms: u64,
    pub raft_heartbeat_ms: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        let e = ElectionSettings::default();
        ControllerConfig {
            enabled: false,
            node_id: 0,
            peers: Vec::new(),
            data_dir: PathBuf::from("controller"),
            master_timeout_ms: e.master_timeout_ms,
            heartbeat_interval_ms: e.heartbeat_interval_ms,
            lease_ms: e.lease_ms,
            unclean_election: e.unclean,
            raft_election_timeout_min_ms: 400,
            raft_election_timeout_max_ms: 800,
            raft_heartbeat_ms: 100,
        }
    }
}

impl ControllerConfig {
    pub fn election(&self) -> ElectionSettings {
        ElectionSettings {
            master_timeout_ms: self.master_timeout_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            lease_ms: self.lease_ms,
            unclean: self.unclean_election,
        }
    }

    /// The members, by id.
    pub fn peer_map(&self) -> Result<BTreeMap<u64, String>, String> {
        let mut out = BTreeMap::new();
        for p in &self.peers {
            let (id, addr) = p
                .split_once('=')
                .ok_or_else(|| format!("controller.peers: {p:?} is not \"<id>=<host>:<port>\""))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| format!("controller.peers: {p:?} has no numeric id"))?;
            if id == 0 {
                return Err(format!("controller.peers: {p:?}: ids start at 1"));
            }
            if out.insert(id, addr.trim().to_owned()).is_some() {
                return Err(format!("controller.peers: id {id} is listed twice"));
            }
        }
        Ok(out)
    }

    /// The first problem with these settings.
    pub fn invalid(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let peers = match self.peer_map() {
            Ok(p) => p,
            Err(e) => return Some(e),
        };
        if !peers.contains_key(&self.node_id) {
            return Some(format!(
                "controller.node_id {} is not among controller.peers {:?}",
                self.node_id, self.peers
            ));
        }
        if let Some(e) = self.election().invalid() {
            return Some(format!("controller.{e}"));
        }
        if self.raft_election_timeout_min_ms == 0
            || self.raft_election_timeout_min_ms >= self.raft_election_timeout_max_ms
            || self.raft_heartbeat_ms >= self.raft_election_timeout_min_ms
        {
            return Some(
                "controller.raft_*: need 0 < raft_heartbeat_ms < raft_election_timeout_min_ms \
                 < raft_election_timeout_max_ms"
                    .into(),
            );
        }
        None
    }

    pub fn raft(&self) -> Result<RaftSettings, String> {
        Ok(RaftSettings {
            heartbeat_interval_ms: self.raft_heartbeat_ms,
            election_timeout_min_ms: self.raft_election_timeout_min_ms,
            election_timeout_max_ms: self.raft_election_timeout_max_ms,
            ..RaftSettings::new(self.node_id, self.peer_map()?, self.data_dir.clone())
        })
    }
}

/// The controller as the nameserver serves it: the Raft member plus the leader's elector.
#[derive(Debug, Clone)]
pub struct ControllerService {
    node: Arc<ControllerNode>,
    elector: Arc<Mutex<Elector>>,
    /// Process start: the elector's clock is milliseconds since then (monotonic).
    epoch: Instant,
}

impl ControllerService {
    pub fn new(node: Arc<ControllerNode>, settings: ElectionSettings) -> Self {
        ControllerService {
            node,
            elector: Arc::new(Mutex::new(Elector::new(settings, 0))),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn node(&self) -> &Arc<ControllerNode> {
        &self.node
    }

    /// Watches leadership and, while this member leads, checks every group for a failed
    /// master a few times per heartbeat interval. Runs until the task is aborted.
    pub async fn elect_loop(self) {
        let mut leadership = self.node.leadership();
        let mut was_leader = false;
        let period = {
            let e = self.elector.lock();
            Duration::from_millis((e.settings().heartbeat_interval_ms / 4).max(20))
        };
        let mut said: BTreeMap<String, String> = BTreeMap::new();
        loop {
            tokio::select! {
                changed = leadership.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(period) => {}
            }
            let leader = self.node.is_leader();
            if leader && !was_leader {
                self.elector.lock().became_leader(self.now_ms());
                tracing::info!(
                    node = self.node.status().node_id,
                    "controller leader: watching the broker groups"
                );
            }
            was_leader = leader;
            if !leader {
                continue;
            }
            let state = self.node.state();
            for (name, group) in &state.groups {
                let now = self.now_ms();
                let decision = self.elector.lock().decide(name, group, now);
                match decision {
                    Decision::Healthy => {
                        said.remove(name);
                    }
                    Decision::Wait(why) | Decision::NoCandidate(why) => {
                        if said.get(name) != Some(&why) {
                            tracing::warn!(group = %name, "{why}");
                            said.insert(name.clone(), why);
                        }
                    }
                    Decision::Elect(cmd) => {
                        self.commit_election(name, group, cmd).await;
                        said.remove(name);
                    }
                }
            }
        }
    }

    async fn commit_election(&self, name: &str, before: &GroupRecord, cmd: Command) {
        if let Command::Elect {
            master,
            unclean,
            reason,
            ..
        } = &cmd
        {
            if *unclean {
                tracing::error!(group = %name, master, %reason, "UNCLEAN election: a replica outside the sync-state set becomes master; acknowledged messages only the set held are lost");
            }
        }
        match self.node.propose(cmd).await {
            Ok(Outcome::Applied(g)) => {
                self.elector
                    .lock()
                    .elected(name, before.master, self.now_ms());
                tracing::warn!(group = %name, master = ?g.master, epoch = g.epoch, sync_state = ?g.sync_state, previous = ?before.master, "elected a new master");
            }
            Ok(Outcome::Refused(why)) => {
                tracing::info!(group = %name, %why, "election not applied");
            }
            Err(e) => tracing::warn!(group = %name, error = %e, "election not committed"),
        }
    }

    fn not_leader(&self) -> Status {
        let mut status = Status::unavailable(match self.node.leader() {
            Some((id, addr)) => {
                format!("this nameserver is not the controller leader; member {id} at {addr} is")
            }
            None => "the controller has no leader right now (an election is under way)".into(),
        });
        if let Some((_, addr)) = self.node.leader() {
            if let Ok(v) = addr.parse() {
                status.metadata_mut().insert(LEADER_HEADER, v);
            }
        }
        status
    }

    fn propose_error(&self, e: ProposeError) -> Status {
        match e {
            ProposeError::NotLeader { .. } => self.not_leader(),
            ProposeError::Failed(m) => Status::unavailable(format!("controller: {m}")),
        }
    }

    fn assignment(&self, name: &str, g: &GroupRecord, lease_ms: u64, fence: u64) -> pb::Assignment {
        let e = self.elector.lock();
        let now = self.now_ms();
        let master = g.master.and_then(|m| g.replicas.get(&m));
        pb::Assignment {
            broker_name: name.to_owned(),
            epoch: g.epoch,
            master_id: g.master.unwrap_or(0),
            master_incarnation: g.master_incarnation,
            master_replication_address: master
                .map(|r| r.replication_address.clone())
                .unwrap_or_default(),
            master_client_address: master.map(|r| r.client_address.clone()).unwrap_or_default(),
            sync_state: g.sync_state.iter().copied().collect(),
            sync_state_version: g.sync_state_version,
            lease_ms,
            replicas: g
                .replicas
                .values()
                .map(|r| {
                    let seen = e.seen(name, r.id);
                    pb::Replica {
                        broker_id: r.id,
                        replication_address: r.replication_address.clone(),
                        client_address: r.client_address.clone(),
                        heard_ms_ago: seen.map(|s| now.saturating_sub(s.at_ms)),
                        log_end: seen.map_or(0, |s| s.log_end),
                    }
                })
                .collect(),
            heartbeat_interval_ms: e.settings().heartbeat_interval_ms,
            fence_wait_ms: fence,
        }
    }

    /// Every group's assignment, as this member's applied state has it.
    pub fn groups(&self) -> Vec<pb::Assignment> {
        self.node
            .state()
            .groups
            .iter()
            .map(|(name, g)| self.assignment(name, g, 0, 0))
            .collect()
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn heartbeat(
        &self,
        request: Request<pb::ReplicaHeartbeat>,
    ) -> Result<Response<pb::Assignment>, Status> {
        let hb = request.into_inner();
        if hb.broker_name.is_empty() || hb.broker_id == 0 {
            return Err(Status::invalid_argument(
                "a heartbeat needs broker_name and a broker_id from 1 up",
            ));
        }
        if !self.node.is_leader() {
            return Err(self.not_leader());
        }
        // Only a leader a quorum still follows answers: a member restarted from disk may
        // believe it leads an old term, and its state may be older than the replica's.
        self.node
            .ensure_leader()
            .await
            .map_err(|e| self.propose_error(e))?;
        let beat = Heartbeat {
            cluster: hb.cluster_name.clone(),
            group: hb.broker_name.clone(),
            replica: ReplicaInfo {
                id: hb.broker_id,
                replication_address: hb.replication_address.clone(),
                client_address: hb.client_address.clone(),
            },
            incarnation: hb.incarnation,
            log_end: hb.log_end,
            proposed_sync_state: (!hb.proposed_sync_state.is_empty()).then(|| {
                (
                    hb.proposed_sync_state
                        .iter()
                        .copied()
                        .collect::<BTreeSet<u64>>(),
                    hb.sync_state_version,
                )
            }),
        };
        let state = self.node.state();
        let commands =
            self.elector
                .lock()
                .observe(&beat, state.groups.get(&hb.broker_name), self.now_ms());
        for cmd in commands {
            match self.node.propose(cmd).await {
                Ok(Outcome::Applied(_)) => {}
                Ok(Outcome::Refused(why)) => {
                    tracing::debug!(group = %hb.broker_name, %why, "heartbeat change refused")
                }
                Err(e) => return Err(self.propose_error(e)),
            }
        }
        let state = self.node.state();
        let Some(g) = state.groups.get(&hb.broker_name) else {
            return Err(Status::unavailable(
                "the group's registration is not applied yet",
            ));
        };
        let (lease, fence) = {
            let e = self.elector.lock();
            let lease = e.lease_for(g, hb.broker_id, hb.incarnation);
            let fence = if lease > 0 {
                e.fence_wait_ms(&hb.broker_name, self.now_ms())
            } else {
                0
            };
            (lease, fence)
        };
        // The lease counts from before the leadership check above, so a deposed leader that
        // had not noticed yet never extends a master another leader may replace.
        Ok(Response::new(self.assignment(
            &hb.broker_name,
            g,
            lease,
            fence,
        )))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ControllerStatus>, Status> {
        let s = self.node.status();
        let leader = s.leader.clone();
        Ok(Response::new(pb::ControllerStatus {
            node_id: s.node_id,
            leader_id: leader.as_ref().map_or(0, |(id, _)| *id),
            leader_address: leader.map(|(_, a)| a).unwrap_or_default(),
            term: s.term,
            last_applied: s.last_applied_index,
            members: s
                .members
                .iter()
                .map(|(id, address)| pb::Member {
                    node_id: *id,
                    address: address.clone(),
                    leader: s.leader.as_ref().is_some_and(|(l, _)| l == id),
                })
                .collect(),
            groups: self.groups(),
        }))
    }

    async fn elect(
        &self,
        request: Request<pb::ElectRequest>,
    ) -> Result<Response<pb::ElectResponse>, Status> {
        let req = request.into_inner();
        if !self.node.is_leader() {
            return Err(self.not_leader());
        }
        let state = self.node.state();
        let Some(g) = state.groups.get(&req.broker_name) else {
            return Err(Status::not_found(format!(
                "the controller knows no broker group {:?}",
                req.broker_name
            )));
        };
        let cmd = self
            .elector
            .lock()
            .manual(
                &req.broker_name,
                g,
                req.broker_id,
                req.unclean,
                self.now_ms(),
            )
            .map_err(Status::failed_precondition)?;
        if req.unclean {
            tracing::error!(group = %req.broker_name, master = req.broker_id, "UNCLEAN election asked for by an operator");
        }
        match self.node.propose(cmd).await {
            Ok(Outcome::Applied(after)) => {
                self.elector
                    .lock()
                    .elected(&req.broker_name, g.master, self.now_ms());
                tracing::warn!(group = %req.broker_name, master = ?after.master, epoch = after.epoch, "master changed by an operator");
                Ok(Response::new(pb::ElectResponse {
                    assignment: Some(self.assignment(&req.broker_name, &after, 0, 0)),
                }))
            }
            Ok(Outcome::Refused(why)) => Err(Status::aborted(why)),
            Err(e) => Err(self.propose_error(e)),
        }
    }
}
