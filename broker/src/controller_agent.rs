//! A replica's side of the controller (`[broker.replication] controller = true`): it
//! heartbeats to the controller leader in the nameservers, learns its role from the answers,
//! renews its lease while it is master and tells the controller which slaves are caught up.
//!
//! Role changes that keep the store as it is happen in place (a slave elected master stops
//! following and writes). The others — a master that learns another was elected, a slave
//! whose master changed — restart the broker in the same process: it closes its store,
//! compares its log with the new master's, cuts what the new master never had (records no
//! producer was told were stored) and follows.

use rocketlog_transport::signature::{Credentials, SigningInterceptor};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rocketlog_proto::controller::v1 as pb;
use rocketlog_proto::controller::v1::controller_client::ControllerClient as GrpcClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::broker::Broker;
use crate::replication::StartAs;

/// Metadata a controller member that is not the leader names the leader with.
pub const LEADER_HEADER: &str = "x-controller-leader";
/// Deadline of one controller call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A slave whose master is in a newer epoch than it follows, and that is not admitted in
/// it for this long, restarts to compare its log with the master's.
const STALE_FOLLOW: Duration = Duration::from_secs(3);
/// A master unable to reach the controller for this many leases lets go of its clients.
const ISOLATED_LEASES: u32 = 3;
/// Heartbeat period before the controller has said what it wants.
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
/// A slave joins the sync-state set once it is at most this far behind, holds every send
/// acknowledged so far and everything of this master's epoch before it (from the moment it is
/// proposed, the master waits for it too, so on joining it holds every acknowledged send).
const JOIN_LAG_BYTES: u64 = 1 << 20;

/// Heartbeats to whichever controller member leads.
#[derive(Debug)]
pub struct ControllerClient {
    addresses: Vec<String>,
    channels: Mutex<HashMap<String, Channel>>,
    leader: Mutex<Option<String>>,
    signer: SigningInterceptor,
}

impl ControllerClient {
    /// A client of the controller members at `addresses` (the nameservers), signing its calls
    /// with `credentials` (`[broker.auth] nameserver_access_key`).
    pub fn new(addresses: &[String], credentials: Option<Credentials>) -> Self {
        ControllerClient {
            addresses: addresses.to_vec(),
            channels: Mutex::new(HashMap::new()),
            leader: Mutex::new(None),
            signer: SigningInterceptor::new(credentials),
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, String> {
        if let Some(c) = self.channels.lock().get(address) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("invalid controller address {address:?}: {e}"))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        self.channels
            .lock()
            .insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// The leader a refusing member named, when it is one of the configured addresses: this
    /// broker talks to the controller only through those (the members' own addresses may not
    /// be reachable from here, or may bypass the path the operator set up).
    fn hint(&self, status: &tonic::Status) -> Option<String> {
        let hint = status.metadata().get(LEADER_HEADER)?.to_str().ok()?;
        self.addresses.iter().find(|a| a.as_str() == hint).cloned()
    }

    /// Asks the leader to make `broker_id` the master of `broker_name`.
    pub async fn elect(&self, req: &pb::ElectRequest) -> Result<pb::Assignment, tonic::Status> {
        let mut last = tonic::Status::unavailable("no controller address configured");
        let mut order = self.addresses.clone();
        let mut tried = Vec::new();
        while let Some(address) = order.first().cloned() {
            order.remove(0);
            if tried.contains(&address) {
                continue;
            }
            tried.push(address.clone());
            let channel = self
                .channel(&address)
                .map_err(tonic::Status::invalid_argument)?;
            match GrpcClient::with_interceptor(channel, self.signer.clone())
                .elect(req.clone())
                .await
            {
                Ok(r) => return Ok(r.into_inner().assignment.unwrap_or_default()),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    if let Some(hint) = self.hint(&status) {
                        order.insert(0, hint);
                    }
                    last = status;
                }
                Err(status) => return Err(status),
            }
        }
        Err(last)
    }

    /// Sends `hb` to the leader: the one that answered last, else each member in turn,
    /// following a member's hint to the leader.
    pub async fn heartbeat(&self, hb: &pb::ReplicaHeartbeat) -> Result<pb::Assignment, String> {
        let mut order: Vec<String> = self.leader.lock().iter().cloned().collect();
        order.extend(self.addresses.iter().cloned());
        let mut last = String::from("no controller address configured");
        let mut tried = Vec::new();
        while let Some(address) = order.first().cloned() {
            order.remove(0);
            if tried.contains(&address) {
                continue;
            }
            tried.push(address.clone());
            let mut client =
                GrpcClient::with_interceptor(self.channel(&address)?, self.signer.clone());
            match client.heartbeat(hb.clone()).await {
                Ok(r) => {
                    *self.leader.lock() = Some(address);
                    return Ok(r.into_inner());
                }
                Err(status) => {
                    if let Some(hint) = self.hint(&status).filter(|h| !tried.contains(h)) {
                        order.insert(0, hint);
                    }
                    last = format!("controller {address}: {}", status.message());
                }
            }
        }
        *self.leader.lock() = None;
        Err(last)
    }
}

/// What one broker process (one incarnation of it) tells the controller about itself.
#[derive(Debug)]
pub struct Agent {
    client: ControllerClient,
    cluster_name: String,
    broker_name: String,
    broker_id: u64,
    incarnation: u64,
    replication_address: String,
    client_address: String,
    /// Asked for by the agent when the broker must restart to take its new role.
    restart: CancellationToken,
    restart_reason: Mutex<Option<String>>,
    /// The restart is because this master lost the controller.
    isolated: std::sync::atomic::AtomicBool,
    /// A slave not admitted by its master in the assignment's epoch, since when.
    behind_since: Mutex<Option<Instant>>,
}

/// The role the controller assigned at start, with the lease that came with it.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub start_as: StartAs,
    pub assignment: pb::Assignment,
    /// When the answered heartbeat was sent (the lease counts from there).
    pub sent: Instant,
}

impl Agent {
    /// An agent for a new incarnation of this broker.
    pub fn new(
        nameservers: &[String],
        credentials: Option<Credentials>,
        cluster_name: &str,
        broker_name: &str,
        broker_id: u64,
        replication_address: String,
        client_address: String,
    ) -> Self {
        Agent {
            client: ControllerClient::new(nameservers, credentials),
            cluster_name: cluster_name.to_owned(),
            broker_name: broker_name.to_owned(),
            broker_id,
            incarnation: new_incarnation(),
            replication_address,
            client_address,
            restart: CancellationToken::new(),
            restart_reason: Mutex::new(None),
            isolated: std::sync::atomic::AtomicBool::new(false),
            behind_since: Mutex::new(None),
        }
    }

    /// Cancelled when the broker must restart in its new role.
    pub fn restart_token(&self) -> CancellationToken {
        self.restart.clone()
    }

    /// Why the agent asked for a restart.
    pub fn restart_reason(&self) -> Option<String> {
        self.restart_reason.lock().clone()
    }

    /// Whether the restart is because this master lost the controller.
    pub fn isolated(&self) -> bool {
        self.isolated.load(std::sync::atomic::Ordering::Acquire)
    }

    fn ask_restart(&self, reason: String) {
        let mut r = self.restart_reason.lock();
        if r.is_none() {
            tracing::warn!(%reason, "restarting the broker in its new role");
            *r = Some(reason);
        }
        self.restart.cancel();
    }

    fn heartbeat(&self, log_end: u64, epoch: u64, acting_master: bool) -> pb::ReplicaHeartbeat {
        pb::ReplicaHeartbeat {
            cluster_name: self.cluster_name.clone(),
            broker_name: self.broker_name.clone(),
            broker_id: self.broker_id,
            incarnation: self.incarnation,
            replication_address: self.replication_address.clone(),
            client_address: self.client_address.clone(),
            log_end,
            epoch,
            acting_master,
            proposed_sync_state: Vec::new(),
            sync_state_version: 0,
        }
    }

    fn is_mine(&self, a: &pb::Assignment) -> bool {
        a.master_id == self.broker_id && a.master_incarnation == self.incarnation
    }

    /// Before the broker serves: heartbeats until the controller says whether this replica
    /// is master or whom it follows. `None` when `stop` fires first.
    pub async fn await_role(&self, log_end: u64, stop: &CancellationToken) -> Option<Assigned> {
        let mut said = String::new();
        loop {
            let sent = Instant::now();
            let answer = self
                .client
                .heartbeat(&self.heartbeat(log_end, 0, false))
                .await;
            let period = match &answer {
                Ok(a) if a.heartbeat_interval_ms > 0 => {
                    Duration::from_millis(a.heartbeat_interval_ms)
                }
                _ => DEFAULT_HEARTBEAT,
            };
            let note = match answer {
                Ok(a) if self.is_mine(&a) => {
                    return Some(Assigned {
                        start_as: StartAs::Master {
                            epoch: Some(a.epoch),
                        },
                        assignment: a,
                        sent,
                    })
                }
                Ok(a) if a.master_id != 0 && a.master_id != self.broker_id => {
                    return Some(Assigned {
                        start_as: StartAs::Slave {
                            master_address: a.master_replication_address.clone(),
                        },
                        assignment: a,
                        sent,
                    })
                }
                Ok(a) => format!(
                    "waiting for the controller to elect a master of group {} (epoch {})",
                    self.broker_name, a.epoch
                ),
                Err(e) => format!("waiting for the controller: {e}"),
            };
            if note != said {
                tracing::info!("{note}");
                said = note;
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(period) => {}
            }
        }
    }

    /// While the broker serves: heartbeats, renews the lease, proposes sync-state changes and
    /// takes the roles the controller assigns, until the broker shuts down or restarts.
    pub async fn run(self: Arc<Self>, broker: Arc<Broker>, first: Assigned) {
        let role = &broker.role;
        let mut assignment = first.assignment;
        let mut lease = Duration::from_millis(assignment.lease_ms);
        if role.is_master() {
            role.renew_lease(first.sent + lease);
            role.set_fence(Instant::now() + Duration::from_millis(assignment.fence_wait_ms));
            role.require(without(&assignment.sync_state, self.broker_id));
        }
        // Every member proposed since the last answer: a proposal whose answer was lost may
        // still be committed, so its members stay required until an answer says what is.
        let mut proposed: Option<BTreeSet<u64>> = None;
        let mut unanswered: BTreeSet<u64> = BTreeSet::new();
        let mut unreachable_since: Option<Instant> = None;
        loop {
            let period = Duration::from_millis(assignment.heartbeat_interval_ms.max(1));
            tokio::select! {
                () = broker.shutdown.cancelled() => return,
                () = self.restart.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            let mut hb = self.heartbeat(role.log_end(), role.epoch(), role.is_master());
            if role.is_master() {
                let view = self.caught_up(&broker, &assignment);
                if view
                    != assignment
                        .sync_state
                        .iter()
                        .copied()
                        .collect::<BTreeSet<u64>>()
                {
                    // From the moment a slave is proposed, sends wait for it too, so that on
                    // joining it holds every acknowledged record.
                    unanswered.extend(view.iter().copied());
                    let mut required: BTreeSet<u64> =
                        assignment.sync_state.iter().copied().collect();
                    required.extend(unanswered.iter().copied());
                    role.require(without_set(&required, self.broker_id));
                    hb.proposed_sync_state = view.iter().copied().collect();
                    hb.sync_state_version = assignment.sync_state_version;
                    proposed = Some(view);
                } else {
                    proposed = None;
                }
            }
            let sent = Instant::now();
            let answer = match self.client.heartbeat(&hb).await {
                Ok(a) => {
                    if let Some(since) = unreachable_since.take() {
                        tracing::info!(
                            after_ms = since.elapsed().as_millis() as u64,
                            "controller reachable again"
                        );
                    }
                    a
                }
                Err(e) => {
                    let since = *unreachable_since.get_or_insert_with(|| {
                        tracing::warn!(
                            error = %e,
                            master = role.is_master(),
                            "controller unreachable; a master stops acknowledging sends once its lease runs out"
                        );
                        Instant::now()
                    });
                    // A master that has been without a lease for long enough has most
                    // likely been replaced: it lets go of its clients so they reach the
                    // replica that took over, and waits to hear from the controller.
                    let lease = lease.max(Duration::from_millis(assignment.heartbeat_interval_ms));
                    if role.is_master() && since.elapsed() > lease * ISOLATED_LEASES {
                        self.isolated
                            .store(true, std::sync::atomic::Ordering::Release);
                        self.ask_restart(format!(
                            "no answer from the controller for {} ms while master: closing the \
                             client port until the controller says what this replica is",
                            since.elapsed().as_millis()
                        ));
                        return;
                    }
                    continue;
                }
            };
            self.take(&broker, &answer, sent, proposed.as_ref()).await;
            unanswered = proposed.clone().unwrap_or_default();
            if answer.lease_ms > 0 {
                lease = Duration::from_millis(answer.lease_ms);
            }
            assignment = answer;
        }
    }

    /// Acts on one answer.
    async fn take(
        &self,
        broker: &Broker,
        a: &pb::Assignment,
        sent: Instant,
        proposed: Option<&BTreeSet<u64>>,
    ) {
        let role = &broker.role;
        let lease = Duration::from_millis(a.lease_ms);
        // Epochs only grow: an answer naming an older one comes from a controller member
        // whose state is behind (it cannot be the leader a quorum follows).
        if a.epoch < role.epoch() {
            tracing::warn!(
                answered = a.epoch,
                known = role.epoch(),
                "ignoring a controller answer from an older epoch"
            );
            return;
        }
        if role.is_master() {
            if self.is_mine(a) && role.master_epoch() == Some(a.epoch) {
                if a.lease_ms > 0 {
                    role.renew_lease(sent + lease);
                }
                let mut required: BTreeSet<u64> = a.sync_state.iter().copied().collect();
                if let Some(p) = proposed {
                    // A proposal the answer did not take yet stays required until it does
                    // or the next heartbeat proposes something else.
                    required.extend(p.iter().copied());
                }
                role.require(without_set(&required, self.broker_id));
            } else {
                role.revoke_lease();
                if a.master_id != 0 && !self.is_mine(a) {
                    self.ask_restart(format!(
                        "the controller elected replica {} master of epoch {}; this replica \
                         (master of epoch {}) becomes its slave",
                        a.master_id,
                        a.epoch,
                        role.epoch()
                    ));
                }
            }
            return;
        }
        if self.is_mine(a) {
            let fence = Duration::from_millis(a.fence_wait_ms);
            match role.promote_elected(a.epoch, fence, sent + lease).await {
                Ok(p) => {
                    role.require(without(&a.sync_state, self.broker_id));
                    tracing::warn!(
                        epoch = p.epoch,
                        start_offset = p.start_offset,
                        fence_wait_ms = a.fence_wait_ms,
                        "elected master by the controller"
                    );
                }
                Err(e) => self.ask_restart(format!("taking the master role failed: {e}")),
            }
            return;
        }
        if a.master_id != 0
            && role.following().as_deref() != Some(a.master_replication_address.as_str())
        {
            self.ask_restart(format!(
                "the master of group {} is now replica {} at {} (epoch {})",
                self.broker_name, a.master_id, a.master_replication_address, a.epoch
            ));
            return;
        }
        // The same master in a newer epoch (it restarted and was elected again): the follower
        // reconnects by itself, unless the logs diverged, which only a restart (compare and
        // cut) resolves. Give it a few heartbeats to be admitted first.
        let connected = role.follower_status().is_some_and(|(s, _)| s.connected);
        if a.master_id != 0 && a.epoch > role.epoch() && !connected {
            let since = *self.behind_since.lock().get_or_insert_with(Instant::now);
            if since.elapsed() > STALE_FOLLOW {
                self.ask_restart(format!(
                    "following replica {} but not admitted in its epoch {} for {} ms",
                    a.master_id,
                    a.epoch,
                    since.elapsed().as_millis()
                ));
            }
        } else {
            *self.behind_since.lock() = None;
        }
    }

    /// The replicas this master finds caught up: itself, every member still within the lag
    /// bounds, and every other slave close enough to join.
    fn caught_up(&self, broker: &Broker, a: &pb::Assignment) -> BTreeSet<u64> {
        let settings = broker.role.settings();
        let members: BTreeSet<u64> = a.sync_state.iter().copied().collect();
        let (acknowledged, epoch_start) = broker.role.master_progress().unwrap_or((0, 0));
        let mut view = BTreeSet::from([self.broker_id]);
        for s in broker.role.slaves() {
            let fresh = s.caught_up_ms_ago <= settings.max_lag_ms;
            let keeps = members.contains(&s.broker_id) && s.lag_bytes <= settings.max_lag_bytes;
            let joins = s.lag_bytes <= JOIN_LAG_BYTES.min(settings.max_lag_bytes)
                && s.durable_offset >= acknowledged
                && s.durable_offset >= epoch_start;
            if fresh && (keeps || joins) {
                view.insert(s.broker_id);
            }
        }
        view
    }
}

fn without(set: &[u64], me: u64) -> BTreeSet<u64> {
    set.iter().copied().filter(|id| *id != me).collect()
}

fn without_set(set: &BTreeSet<u64>, me: u64) -> BTreeSet<u64> {
    set.iter().copied().filter(|id| *id != me).collect()
}

/// A number that tells this process start from any other of the same replica.
fn new_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32);
    // splitmix64 finaliser: nearby start times give unrelated numbers; never 0.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)).max(1)
}
