//! The broker's role in its group: a master ships its commit log to its slaves (and, in sync
//! mode, acknowledges a send only once enough of them hold it); a slave follows its master's
//! log and never writes its own records. Settings: `[broker.replication]`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rocketlog_proto::replication::v1 as pb;
use rocketlog_proto::replication::v1::log_replication_server::{
    LogReplication, LogReplicationServer,
};
use rocketlog_replication::epoch_file::EpochFile;
use rocketlog_replication::follower::{
    self, Follower, FollowerSettings, FollowerStatus, GroupStateSink, SignCalls,
};
use rocketlog_replication::master::{
    FollowStream, GroupStateSource, Master, MasterSettings, SlaveStatus, SyncError,
};
use rocketlog_replication::{check_promotable, EpochHistory};
use rocketlog_store::{PhysicalOffset, Store, StoreConfig};
use rocketlog_transport::signature::{Credentials, SigningInterceptor};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::consumption::Consumption;
use crate::error::BrokerError;
use crate::timer::{Progress, Timer};
use crate::topics::TopicManager;

/// When a master acknowledges a send, with respect to its slaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// After the master's own flush mode is satisfied; slaves copy the log behind it.
    #[default]
    Async,
    /// After `min_in_sync_replicas` replicas, the master included, hold the send durably.
    Sync,
}

/// `[broker.replication]`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationSettings {
    /// When a send is acknowledged with respect to the slaves (default `async`).
    pub mode: ReplicationMode,
    /// In `sync` mode: replicas, the master included, that must hold a send durably before
    /// it is acknowledged (default 2: the master and one slave).
    pub min_in_sync_replicas: u32,
    /// In `sync` mode: how long a send waits for its slaves before it is answered
    /// SLAVE_PERSISTENCE_TIMEOUT, ms (default 3 000).
    pub sync_timeout_ms: u64,
    /// On a slave: the master's replication address (`host:port` of its
    /// `replication_listen`).
    pub master_address: Option<String>,
    /// An idle replication stream carries a heartbeat this often; a slave that hears
    /// nothing for three of them reconnects, ms (default 1 000).
    pub heartbeat_interval_ms: u64,
    /// A master sends its topic table, consumer offsets and in-flight messages to its slaves
    /// when they changed, at most this often, ms (default 1 000). After a promotion,
    /// messages acknowledged within the last interval may be delivered again.
    pub state_interval_ms: u64,
    /// Let the controller in the nameservers (`[nameserver.controller]`) decide this
    /// replica's role: it elects the master, and a master that cannot renew its lease stops
    /// acknowledging sends (default false: the role is `broker_id`, 0 = master).
    pub controller: bool,
    /// Under a controller: a slave further behind the master than this leaves the
    /// sync-state set, bytes (default 64 MiB).
    pub max_lag_bytes: u64,
    /// Under a controller: a slave the master has not heard from for this long leaves the
    /// sync-state set, ms (default 2 000). In sync mode, sends wait for every member, so this
    /// bounds how long a dead slave holds them up.
    pub max_lag_ms: u64,
    /// The access key of the group's replication credentials. Set (with `secret_key`) on
    /// every replica: the replication port then answers only calls signed with them, and the
    /// replica signs its own calls to its master. Unset: the port is open to anyone who can
    /// reach it.
    pub access_key: Option<String>,
    /// The secret key of `access_key` (set it through the environment,
    /// `ROCKETLOG_BROKER__REPLICATION__SECRET_KEY`, rather than in a file).
    pub secret_key: Option<String>,
    /// Largest difference between a replication call's signed date-time and this broker's
    /// clock, ms (default 900 000 = 15 min). 0 turns the check off.
    pub max_clock_skew_ms: u64,
}

impl std::fmt::Debug for ReplicationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("ReplicationSettings")
            .field("mode", &self.mode)
            .field("min_in_sync_replicas", &self.min_in_sync_replicas)
            .field("sync_timeout_ms", &self.sync_timeout_ms)
            .field("master_address", &self.master_address)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("state_interval_ms", &self.state_interval_ms)
            .field("controller", &self.controller)
            .field("max_lag_bytes", &self.max_lag_bytes)
            .field("max_lag_ms", &self.max_lag_ms)
            .field("access_key", &self.access_key)
            .field("max_clock_skew_ms", &self.max_clock_skew_ms)
            .finish_non_exhaustive()
    }
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        ReplicationSettings {
            mode: ReplicationMode::Async,
            min_in_sync_replicas: 2,
            sync_timeout_ms: 3_000,
            master_address: None,
            heartbeat_interval_ms: 1_000,
            state_interval_ms: 1_000,
            controller: false,
            max_lag_bytes: 64 << 20,
            max_lag_ms: 2_000,
            access_key: None,
            secret_key: None,
            max_clock_skew_ms: 15 * 60 * 1000,
        }
    }
}

/// Most replicas a group may require in sync.
pub const MAX_IN_SYNC_REPLICAS: u32 = 16;

impl ReplicationSettings {
    /// The first field out of range, named as in the `replication` section, and why.
    pub fn invalid_field(
        &self,
        broker_id: u64,
        listen: Option<SocketAddr>,
    ) -> Option<(&'static str, String)> {
        if self.min_in_sync_replicas == 0 || self.min_in_sync_replicas > MAX_IN_SYNC_REPLICAS {
            return Some((
                "replication.min_in_sync_replicas",
                format!(
                    "{} is outside 1..={MAX_IN_SYNC_REPLICAS}",
                    self.min_in_sync_replicas
                ),
            ));
        }
        if self.sync_timeout_ms == 0 {
            return Some(("replication.sync_timeout_ms", "must be positive".into()));
        }
        if self.state_interval_ms == 0 {
            return Some(("replication.state_interval_ms", "must be positive".into()));
        }
        if self.heartbeat_interval_ms == 0 {
            return Some((
                "replication.heartbeat_interval_ms",
                "must be positive".into(),
            ));
        }
        match (&self.access_key, &self.secret_key) {
            (Some(_), None) => {
                return Some((
                    "replication.secret_key",
                    "replication.access_key is set without its secret key".into(),
                ))
            }
            (None, Some(_)) => {
                return Some((
                    "replication.access_key",
                    "replication.secret_key is set without an access key".into(),
                ))
            }
            (Some(ak), Some(sk)) if ak.trim().is_empty() || sk.is_empty() => {
                return Some((
                    "replication.access_key",
                    "the replication access key and secret key must not be empty".into(),
                ))
            }
            _ => {}
        }
        if self.controller {
            if broker_id == 0 {
                return Some((
                    "broker_id",
                    "under a controller every replica needs its own id from 1 up (the \
                     controller decides which is master)"
                        .into(),
                ));
            }
            if listen.is_none() {
                return Some((
                    "replication_listen",
                    "under a controller any replica may become master, so each needs a \
                     replication port"
                        .into(),
                ));
            }
            if self.max_lag_ms == 0 {
                return Some(("replication.max_lag_ms", "must be positive".into()));
            }
            return None;
        }
        if broker_id != 0 && self.master_address.is_none() {
            return Some((
                "replication.master_address",
                format!("broker {broker_id} is a slave and needs its master's replication address"),
            ));
        }
        if broker_id == 0 && self.needs_slaves() && listen.is_none() {
            return Some((
                "replication_listen",
                format!(
                    "sync replication with min_in_sync_replicas = {} needs slaves, and slaves \
                     need the master's replication_listen",
                    self.min_in_sync_replicas
                ),
            ));
        }
        None
    }

    /// The group's replication credentials, when set.
    pub fn credentials(&self) -> Option<Credentials> {
        match (&self.access_key, &self.secret_key) {
            (Some(ak), Some(sk)) => Some(Credentials {
                access_key: ak.clone(),
                secret_key: sk.clone(),
            }),
            _ => None,
        }
    }

    /// How far a signed call's date-time may be from this clock (`None`: any).
    pub fn max_clock_skew(&self) -> Option<Duration> {
        (self.max_clock_skew_ms > 0).then(|| Duration::from_millis(self.max_clock_skew_ms))
    }

    /// Whether a send must wait for slaves.
    pub fn needs_slaves(&self) -> bool {
        self.mode == ReplicationMode::Sync && self.min_in_sync_replicas > 1
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long a starting slave waits for its master to say where their logs diverge.
const COMPARE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this broker is in its group (from `[broker]`).
#[derive(Debug, Clone)]
pub struct Identity {
    pub cluster_name: String,
    pub broker_name: String,
    pub broker_id: u64,
    /// Where the store keeps its files (the epoch file goes beside the commit log).
    pub store_dir: std::path::PathBuf,
    /// Whether a replication port is configured (`replication_listen`): a master serves its
    /// slaves there, and a slave does once it is promoted.
    pub serves_replication: bool,
    /// What it starts as: without a controller, a slave when `broker_id` is not 0; under one,
    /// what the controller assigned.
    pub start_as: StartAs,
}

/// The role a broker starts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAs {
    /// Master; under a controller, of the epoch it was elected for.
    Master { epoch: Option<u64> },
    /// Slave of the master at this replication address.
    Slave { master_address: String },
}

impl Identity {
    fn follower_settings(&self, settings: &ReplicationSettings) -> FollowerSettings {
        let heartbeat = Duration::from_millis(settings.heartbeat_interval_ms);
        FollowerSettings {
            cluster_name: self.cluster_name.clone(),
            broker_name: self.broker_name.clone(),
            broker_id: self.broker_id,
            master_address: match &self.start_as {
                StartAs::Slave { master_address } => master_address.clone(),
                StartAs::Master { .. } => settings.master_address.clone().unwrap_or_default(),
            },
            connect_timeout: Duration::from_secs(3),
            idle_timeout: heartbeat * 3,
            signer: settings.credentials().map(|c| {
                Arc::new(ReplicationSigner(SigningInterceptor::new(Some(c)))) as Arc<dyn SignCalls>
            }),
        }
    }
}

/// Signs a replica's calls to its master as the official clients sign theirs.
#[derive(Debug)]
struct ReplicationSigner(SigningInterceptor);

impl SignCalls for ReplicationSigner {
    fn sign(&self, metadata: &mut tonic::metadata::MetadataMap) -> Result<(), String> {
        use tonic::service::Interceptor as _;
        let signed = self
            .0
            .clone()
            .call(Request::new(()))
            .map_err(|s| s.message().to_owned())?;
        for kv in signed.metadata().iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                metadata.insert(k.clone(), v.clone());
            }
        }
        Ok(())
    }
}

/// What this broker is in its group right now.
#[derive(Debug, Clone)]
enum Role {
    /// Writes its own records (clients' sends, timers, transactions). `master` is set when it
    /// serves a replication port.
    Master {
        master: Option<Arc<Master>>,
        sync_timeout: Option<Duration>,
    },
    /// Follows the master's log.
    Slave { follower: Follower },
}

/// The broker state a slave keeps a copy of: the topic table, consumption state and timer
/// progress (everything a promoted slave needs that is not in the commit log).
#[derive(Debug, Clone)]
pub struct GroupState {
    pub topics: Arc<TopicManager>,
    pub consumption: Consumption,
    pub timer: Arc<Timer>,
    /// Users and access rules (`[broker.auth]`).
    pub users: Arc<crate::auth::UserStore>,
    /// On a slave: the consumption state's version right after the last install (0, the
    /// version at open, before any), so that changes its own consumers made since are known.
    pub installed_version: Arc<std::sync::atomic::AtomicU64>,
    /// Held by an install; a promotion takes it to end the copying: once it holds it, no
    /// install of an old master's state can land on the new master.
    accepting: Arc<parking_lot::Mutex<bool>>,
}

impl GroupState {
    pub fn new(
        topics: Arc<TopicManager>,
        consumption: Consumption,
        timer: Arc<Timer>,
        users: Arc<crate::auth::UserStore>,
    ) -> Self {
        let installed = consumption.state_version();
        GroupState {
            topics,
            consumption,
            timer,
            users,
            installed_version: Arc::new(std::sync::atomic::AtomicU64::new(installed)),
            accepting: Arc::new(parking_lot::Mutex::new(true)),
        }
    }

    /// Refuses every later install (and waits for one in progress): this broker is becoming
    /// its group's master.
    fn stop_installing(&self) {
        *self.accepting.lock() = false;
    }
}

impl GroupStateSource for GroupState {
    fn version(&self) -> u64 {
        // Each counter only grows, so the sum changes whenever one of them does.
        self.consumption
            .state_version()
            .wrapping_add(self.topics.version())
            .wrapping_add(self.timer.progress().fired)
            .wrapping_add(self.users.version())
    }

    fn snapshot(&self) -> Result<pb::GroupState, String> {
        // The timer first: its firings are in the log before its progress says so, and the
        // log end is read after this returns.
        let timer = self.timer.progress();
        Ok(pb::GroupState {
            topics: self.topics.export(),
            consumption: self.consumption.export_state(),
            timer_cursor_ms: timer.cursor_ms,
            timer_scanned_offset: timer.scanned_offset,
            log_offset: 0,
            users: self.users.export(),
        })
    }

    fn merge_progress(&self, consumption: &[u8]) -> Result<u64, String> {
        self.consumption
            .merge_finished(consumption)
            .map_err(|e| format!("the slave's consumption state: {e}"))
    }
}

impl GroupStateSink for GroupState {
    fn install(&self, state: pb::GroupState) -> Result<(), String> {
        let accepting = self.accepting.lock();
        if !*accepting {
            return Err("this broker is no longer a slave".into());
        }
        self.topics
            .install(&state.topics)
            .map_err(|e| format!("the master's topic table: {e}"))?;
        self.consumption
            .install_state(&state.consumption)
            .map_err(|e| format!("the master's consumption state: {e}"))?;
        if !state.users.is_empty() {
            self.users
                .install(&state.users)
                .map_err(|e| format!("the master's users: {e}"))?;
        }
        self.installed_version.store(
            self.consumption.state_version(),
            std::sync::atomic::Ordering::Release,
        );
        self.timer.follow_master(Progress {
            cursor_ms: state.timer_cursor_ms,
            scanned_offset: state.timer_scanned_offset,
            fired: 0,
        });
        Ok(())
    }

    fn local_progress(&self) -> Option<Vec<u8>> {
        let installed = self
            .installed_version
            .load(std::sync::atomic::Ordering::Acquire);
        (self.consumption.state_version() != installed).then(|| self.consumption.export_state())
    }
}

/// Why a slave was not promoted.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("this broker is already the master of its group")]
    NotASlave,
    #[error(
        "the master at {address} is still streaming its log to this slave (heard {heard_ms} ms \
         ago): stop or fence it first, or pass force to promote anyway and have two masters"
    )]
    MasterAlive { address: String, heard_ms: u64 },
    #[error(
        "this slave is {bytes} bytes behind what the group acknowledged (it holds the log up to \
         offset {holds}, the master acknowledged sends up to {acknowledged}): promoting it would \
         lose those messages; let it catch up, or pass force to accept the loss"
    )]
    Behind {
        bytes: u64,
        holds: u64,
        acknowledged: u64,
    },
    #[error("another promotion is in progress")]
    Busy,
    #[error("promotion failed: {0}")]
    Failed(String),
}

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The new epoch and where in the log it starts.
    pub epoch: u64,
    pub start_offset: u64,
    /// Bytes the group acknowledged that this broker does not hold (only when forced).
    pub lost_bytes: u64,
    pub forced: bool,
}

/// This broker's place in its group, which a promotion changes while it serves.
#[derive(Debug)]
pub struct GroupRole {
    identity: Identity,
    settings: ReplicationSettings,
    store: Store,
    state: GroupState,
    /// The address clients dial on this broker (told to slaves while it is master).
    client_address: String,
    /// The epoch this broker began as master (0 while it never was).
    epoch: std::sync::atomic::AtomicU64,
    role: RwLock<Role>,
    promoting: tokio::sync::Mutex<()>,
    /// Bumped on every change of role.
    changes: tokio::sync::watch::Sender<u64>,
    /// Set by `admin broker drain`: no sends are accepted, reads go on.
    draining: std::sync::atomic::AtomicBool,
    shutdown: CancellationToken,
    /// Under a controller: until when this master may acknowledge writes.
    lease: Option<parking_lot::Mutex<Lease>>,
}

/// A master's right to acknowledge writes under a controller.
#[derive(Debug, Default, Clone, Copy)]
struct Lease {
    /// Renewed by every answered controller heartbeat: the moment it was sent plus the
    /// lease the controller granted.
    until: Option<Instant>,
    /// A newly elected master waits until the master before it has surely lost its lease.
    from: Option<Instant>,
}

/// Why this broker may not acknowledge a write right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotWritable {
    #[error("this broker is a slave of its group; send to the master")]
    Slave,
    #[error(
        "this master could not renew its lease with the controller (last renewal expired \
         {0} ms ago): it may have been replaced, so it acknowledges nothing until it hears \
         from the controller"
    )]
    LeaseExpired(u64),
    #[error("this master was just elected and waits {0} ms for the previous one to stop")]
    Fencing(u64),
    #[error(
        "this broker is draining for a restart and accepts no sends: send to another broker \
         group (routes list its queues read-only)"
    )]
    Draining,
}

impl GroupRole {
    /// Starts the side of replication this broker plays: a slave follows its master; a master
    /// with `replication_listen` serves its slaves (one without replicates to nobody). The
    /// store's replica flag was set by [`prepare_store`].
    pub async fn start(
        identity: &Identity,
        settings: &ReplicationSettings,
        store: &Store,
        state: GroupState,
        client_address: String,
        shutdown: CancellationToken,
    ) -> Result<GroupRole, BrokerError> {
        let dir = identity.store_dir.clone();
        let epochs = tokio::task::spawn_blocking(move || open_epochs(&dir))
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))??;
        let mut epoch = 0;
        let role = if matches!(identity.start_as, StartAs::Slave { .. }) {
            store.set_replica(true);
            let sink: Arc<dyn GroupStateSink> = Arc::new(state.clone());
            Role::Slave {
                follower: Follower::start(
                    store.clone(),
                    identity.follower_settings(settings),
                    epochs,
                    Some(sink),
                    &shutdown,
                ),
            }
        } else {
            store.set_replica(false);
            // Every start as master is a new epoch from the current log end, so that bytes a
            // slave got from an earlier run but this log lost (a machine crash under async
            // flush) show up as a divergence instead of being silently overwritten.
            let mut epochs = epochs;
            let next = match identity.start_as {
                StartAs::Master { epoch: Some(e) } => e,
                _ => epochs.history().last().map_or(1, |e| e.epoch + 1),
            };
            let end = store.log_range().1 .0;
            let dir = identity.store_dir.clone();
            let history = tokio::task::spawn_blocking(move || {
                // Entries starting past this log's end (adopted from a master this replica
                // never caught up with) describe bytes it does not hold.
                epochs
                    .truncate_to(end)
                    .map_err(|e| BrokerError::Replication(e.to_string()))?;
                epochs
                    .begin(next, end)
                    .map_err(|e| BrokerError::Replication(e.to_string()))?;
                own_epochs::add(&dir, next, end)?;
                Ok::<_, BrokerError>(epochs.history().clone())
            })
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))??;
            epoch = next;
            master_role(
                identity,
                settings,
                store,
                &state,
                &client_address,
                history,
                &shutdown,
            )
        };
        Ok(GroupRole {
            identity: identity.clone(),
            settings: settings.clone(),
            store: store.clone(),
            state,
            client_address,
            epoch: std::sync::atomic::AtomicU64::new(epoch),
            role: RwLock::new(role),
            promoting: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::channel(0).0,
            draining: std::sync::atomic::AtomicBool::new(false),
            shutdown,
            lease: settings
                .controller
                .then(|| parking_lot::Mutex::new(Lease::default())),
        })
    }

    /// Where this broker passes client calls: its master's client address, while it is a
    /// slave following it.
    pub fn forward_target(&self) -> Option<String> {
        match &*self.role.read() {
            Role::Slave { follower } => {
                let s = follower.status();
                (s.connected && !s.master_client_address.is_empty())
                    .then_some(s.master_client_address)
            }
            Role::Master { .. } => None,
        }
    }

    /// Whether a controller decides this broker's role.
    pub fn under_controller(&self) -> bool {
        self.lease.is_some()
    }

    /// Whether this broker may acknowledge a write now: it is master and, under a
    /// controller, holds a valid lease and has waited out its predecessor's.
    pub fn check_writable(&self) -> Result<(), NotWritable> {
        if !self.is_master() {
            return Err(NotWritable::Slave);
        }
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        let lease = *lease.lock();
        let now = Instant::now();
        if let Some(from) = lease.from.filter(|f| *f > now) {
            return Err(NotWritable::Fencing(millis(from - now)));
        }
        match lease.until {
            Some(until) if until > now => Ok(()),
            Some(until) => Err(NotWritable::LeaseExpired(millis(now - until))),
            None => Err(NotWritable::LeaseExpired(0)),
        }
    }

    /// Extends the lease to `until` (never shortens it: answers may arrive out of order).
    pub fn renew_lease(&self, until: Instant) {
        if let Some(lease) = &self.lease {
            let mut l = lease.lock();
            l.until = Some(l.until.map_or(until, |u| u.max(until)));
        }
    }

    /// Holds off acknowledging until `from` (a master elected while its predecessor may
    /// still hold a lease).
    pub fn set_fence(&self, from: Instant) {
        if let Some(lease) = &self.lease {
            lease.lock().from = Some(from);
        }
    }

    /// Ends the lease at once: the controller named another master.
    pub fn revoke_lease(&self) {
        if let Some(lease) = &self.lease {
            lease.lock().until = None;
        }
        if let Some(m) = self.master() {
            m.step_down();
        }
    }

    /// Under a controller: the slaves every sync send must reach (see
    /// [`Master::require`]).
    pub fn require(&self, members: std::collections::BTreeSet<u64>) {
        if let Some(m) = self.master() {
            if self.settings.needs_slaves() {
                m.require(Some(members));
            }
        }
    }

    /// The master address this slave follows (its replication port).
    pub fn following(&self) -> Option<String> {
        match &*self.role.read() {
            Role::Slave { follower } => Some(follower.master_address().to_owned()),
            Role::Master { .. } => None,
        }
    }

    /// A master's acknowledged offset (what producers were told is stored) and where its
    /// epoch starts: a slave joins the sync-state set only once it holds both.
    pub fn master_progress(&self) -> Option<(u64, u64)> {
        let m = self.master()?;
        let start = m.epochs().last().map_or(0, |e| e.start_offset);
        Some((m.acknowledged_offset(), start))
    }

    /// The master epoch this broker writes under, when it is master.
    pub fn master_epoch(&self) -> Option<u64> {
        self.is_master()
            .then(|| self.epoch.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The settings this role was started with.
    pub fn settings(&self) -> &ReplicationSettings {
        &self.settings
    }

    /// The end of this broker's commit log.
    pub fn log_end(&self) -> u64 {
        self.store.log_range().1 .0
    }

    /// The controller elected this slave master of `epoch`: it stops following and writes
    /// from its log end, once `fence_wait` has passed (so its predecessor's lease is over);
    /// `lease_until` is the lease granted with the election.
    pub async fn promote_elected(
        &self,
        epoch: u64,
        fence_wait: Duration,
        lease_until: Instant,
    ) -> Result<Promotion, PromoteError> {
        if let Some(lease) = &self.lease {
            let mut l = lease.lock();
            l.from = Some(Instant::now() + fence_wait);
            l.until = Some(lease_until);
        }
        self.promote_inner(false, Some(epoch)).await
    }

    /// Changes whenever this broker's role does (a promotion).
    /// Starts (`true`) or ends draining: while draining the broker accepts no sends and
    /// registers its topics read-only, so producers move to other broker groups while
    /// consumers keep reading. Returns whether it was draining before.
    pub fn set_draining(&self, draining: bool) -> bool {
        let was = self
            .draining
            .swap(draining, std::sync::atomic::Ordering::AcqRel);
        if was != draining {
            tracing::info!(draining, "drain state changed");
            self.changes.send_modify(|v| *v += 1);
        }
        was
    }

    /// Whether `admin broker drain` is in effect.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether this broker writes its own records (clients' sends, timers, transactions).
    pub fn is_master(&self) -> bool {
        matches!(*self.role.read(), Role::Master { .. })
    }

    /// The broker id this broker registers under: 0 as master, its configured id as slave.
    pub fn broker_id(&self) -> u64 {
        if self.is_master() {
            0
        } else {
            self.identity.broker_id
        }
    }

    /// In sync mode, waits until enough slaves hold the log up to `end`.
    pub async fn replicated(&self, end: u64) -> Result<(), SyncError> {
        let (master, timeout) = match &*self.role.read() {
            Role::Master {
                master: Some(m),
                sync_timeout: Some(t),
            } => (Arc::clone(m), *t),
            _ => return Ok(()),
        };
        master.wait_replicated(end, timeout).await
    }

    /// The epoch this broker writes under (master) or last followed (slave); 0 before any.
    pub fn epoch(&self) -> u64 {
        match &*self.role.read() {
            Role::Master { .. } => self.epoch.load(std::sync::atomic::Ordering::Acquire),
            Role::Slave { follower } => follower.status().epoch,
        }
    }

    /// The slaves a master sees connected.
    pub fn slaves(&self) -> Vec<SlaveStatus> {
        match &*self.role.read() {
            Role::Master {
                master: Some(m), ..
            } => m.slaves(),
            _ => Vec::new(),
        }
    }

    /// A slave's view of its replication, and the master address it follows.
    pub fn follower_status(&self) -> Option<(FollowerStatus, String)> {
        match &*self.role.read() {
            Role::Slave { follower } => {
                Some((follower.status(), follower.master_address().to_owned()))
            }
            Role::Master { .. } => None,
        }
    }

    /// The master side, when this broker is a master serving a replication port.
    fn master(&self) -> Option<Arc<Master>> {
        match &*self.role.read() {
            Role::Master { master, .. } => master.clone(),
            Role::Slave { .. } => None,
        }
    }

    /// Makes this slave the master of a new epoch that starts at its log end. Refused while
    /// the master still streams to it, or when it lacks bytes the group acknowledged, unless
    /// `force`.
    pub async fn promote(&self, force: bool) -> Result<Promotion, PromoteError> {
        self.promote_inner(force, None).await
    }

    /// [`GroupRole::promote`]; `elected`: the epoch the controller elected this broker for
    /// (it already checked that this replica holds every acknowledged record).
    async fn promote_inner(
        &self,
        force: bool,
        elected: Option<u64>,
    ) -> Result<Promotion, PromoteError> {
        let _one_at_a_time = self.promoting.try_lock().map_err(|_| PromoteError::Busy)?;
        let follower = match &*self.role.read() {
            Role::Slave { follower } => follower.clone(),
            Role::Master { .. } => return Err(PromoteError::NotASlave),
        };
        let status = follower.status();
        if status.connected && !force && elected.is_none() {
            return Err(PromoteError::MasterAlive {
                address: follower.master_address().to_owned(),
                heard_ms: status.last_heard.map_or(0, |t| {
                    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
                }),
            });
        }
        let holds = self.store.log_range().1 .0;
        let lost_bytes = match check_promotable(holds, status.acknowledged_offset) {
            Ok(()) => 0,
            Err(_) if elected.is_some() => 0,
            Err(behind) if force => behind.bytes,
            Err(behind) => {
                return Err(PromoteError::Behind {
                    bytes: behind.bytes,
                    holds,
                    acknowledged: status.acknowledged_offset,
                })
            }
        };
        // From here on nothing is appended from the old master.
        let Some(mut epochs) = follower.stop().await else {
            return Err(PromoteError::Failed(
                "the follower did not stop cleanly; restart the broker and try again".into(),
            ));
        };
        // An install still running on the blocking pool finishes before this returns.
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || state.stop_installing())
            .await
            .map_err(|e| PromoteError::Failed(e.to_string()))?;
        let end = self.store.log_range().1 .0;
        let epoch = elected.unwrap_or_else(|| epochs.history().last().map_or(1, |e| e.epoch + 1));
        let dir = self.identity.store_dir.clone();
        let history = tokio::task::spawn_blocking(move || {
            // A slave elected before it caught up holds entries of its master's history that
            // start past its log end: they describe bytes it never got.
            epochs.truncate_to(end).map_err(|e| e.to_string())?;
            epochs.begin(epoch, end).map_err(|e| e.to_string())?;
            own_epochs::add(&dir, epoch, end).map_err(|e| e.to_string())?;
            Ok::<_, String>(epochs.history().clone())
        })
        .await
        .map_err(|e| PromoteError::Failed(e.to_string()))?
        .map_err(|e| {
            PromoteError::Failed(format!(
                "recording epoch {epoch}: {e}; it no longer follows its master: restart it"
            ))
        })?;
        let role = master_role(
            &self.identity,
            &self.settings,
            &self.store,
            &self.state,
            &self.client_address,
            history,
            &self.shutdown,
        );
        self.store.set_replica(false);
        self.epoch
            .store(epoch, std::sync::atomic::Ordering::Release);
        *self.role.write() = role;
        self.changes.send_modify(|v| *v += 1);
        if force && lost_bytes > 0 {
            tracing::error!(
                epoch,
                start_offset = end,
                lost_bytes,
                "promoted to master by force, without {lost_bytes} bytes the group acknowledged: those messages are lost"
            );
        } else {
            tracing::warn!(
                epoch,
                start_offset = end,
                forced = force,
                "promoted to master"
            );
        }
        Ok(Promotion {
            epoch,
            start_offset: end,
            lost_bytes,
            forced: force,
        })
    }

    /// Stops following (a slave) or fails the sends waiting for slaves (a master): before the
    /// store closes.
    pub async fn stop(&self) {
        let role = self.role.read().clone();
        match role {
            Role::Slave { follower } => {
                follower.stop().await;
            }
            Role::Master {
                master: Some(m), ..
            } => m.step_down(),
            Role::Master { master: None, .. } => {}
        }
    }

    /// The replication port's service: the master's while this broker is one, a refusal
    /// naming the master while it is a slave.
    pub fn service(self: &Arc<Self>) -> LogReplicationServer<ReplicationPort> {
        rocketlog_replication::master::server(ReplicationPort(Arc::clone(self)))
    }

    fn not_master(&self) -> Status {
        let following = self
            .follower_status()
            .map(|(_, address)| address)
            .unwrap_or_default();
        Status::failed_precondition(format!(
            "broker {} of group {} is a slave (it follows {following}); replicate from its master",
            self.identity.broker_id, self.identity.broker_name
        ))
    }
}

fn master_role(
    identity: &Identity,
    settings: &ReplicationSettings,
    store: &Store,
    state: &GroupState,
    client_address: &str,
    history: EpochHistory,
    shutdown: &CancellationToken,
) -> Role {
    let source: Arc<dyn GroupStateSource> = Arc::new(state.clone());
    let master = identity.serves_replication.then(|| {
        Master::new(
            store.clone(),
            MasterSettings {
                cluster_name: identity.cluster_name.clone(),
                broker_name: identity.broker_name.clone(),
                min_in_sync_replicas: if settings.mode == ReplicationMode::Sync {
                    settings.min_in_sync_replicas as usize
                } else {
                    1
                },
                heartbeat_interval: Duration::from_millis(settings.heartbeat_interval_ms),
                state_interval: Duration::from_millis(settings.state_interval_ms),
                client_address: client_address.to_owned(),
            },
            history,
            Some(source),
            shutdown.clone(),
        )
    });
    let sync_timeout = settings
        .needs_slaves()
        .then(|| Duration::from_millis(settings.sync_timeout_ms));
    Role::Master {
        master,
        sync_timeout,
    }
}

/// The replication port: routes each call to the master side while this broker is master.
#[derive(Debug, Clone)]
pub struct ReplicationPort(Arc<GroupRole>);

#[tonic::async_trait]
impl LogReplication for ReplicationPort {
    type FollowStream = FollowStream;

    async fn follow(
        &self,
        request: Request<Streaming<pb::FollowRequest>>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let master = self.0.master().ok_or_else(|| self.0.not_master())?;
        master.handler().follow(request).await
    }

    async fn compare(
        &self,
        request: Request<pb::Hello>,
    ) -> Result<Response<pb::Comparison>, Status> {
        let master = self.0.master().ok_or_else(|| self.0.not_master())?;
        master.handler().compare(request).await
    }
}

/// Readies a freshly opened store for this broker's role, before anything else uses it. A
/// slave refuses local appends from now on; and if its master is reachable, it asks where
/// their logs diverge and cuts its own tail there (a former master rejoining with records
/// the new master never had). Returns the store to use (reopened after a cut).
pub async fn prepare_store(
    identity: &Identity,
    settings: &ReplicationSettings,
    store: Store,
    store_config: StoreConfig,
) -> Result<Store, BrokerError> {
    if !matches!(identity.start_as, StartAs::Slave { .. }) {
        return Ok(store);
    }
    store.set_replica(true);
    let dir = identity.store_dir.clone();
    let epochs = tokio::task::spawn_blocking(move || open_epochs(&dir))
        .await
        .map_err(|e| BrokerError::Task(e.to_string()))??;
    let follower_settings = identity.follower_settings(settings);
    let started = Instant::now();
    let comparison =
        match follower::compare(&follower_settings, &store, &epochs, COMPARE_TIMEOUT).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    master = %follower_settings.master_address,
                    error = %e,
                    "could not compare this log with the master's before following; if the \
                     master refuses it later as divergent, restart this broker once the master \
                     is reachable"
                );
                return Ok(store);
            }
        };
    let end = store.log_range().1 .0;
    let to = comparison.truncate_to;
    if to >= end {
        return Ok(store);
    }
    let dir = identity.store_dir.clone();
    let own = tokio::task::spawn_blocking(move || own_epochs::load(&dir))
        .await
        .map_err(|e| BrokerError::Task(e.to_string()))??;
    // Under a controller the election already made sure the new master holds every
    // acknowledged record: what this log has beyond it was never acknowledged.
    let guard = !settings.controller;
    if let Some(e) = own_epochs::would_lose(&own, epochs.history(), end, to, &comparison.epochs)
        .filter(|_| guard)
    {
        return Err(BrokerError::Replication(format!(
            "this broker was the master of epoch {} (from log offset {}) and acknowledged sends \
             in it, which {} does not have: following it would cut them (offsets {to} to \
             {end}). Start this broker as its group's master (broker_id = 0) and make the \
             other a slave, or, to discard those messages, delete {}",
            e.epoch,
            e.start_offset,
            follower_settings.master_address,
            own_epochs::path(&identity.store_dir).display()
        )));
    }
    tracing::warn!(
        from = to,
        to = end,
        bytes = end - to,
        master = %follower_settings.master_address,
        "this log ends with records the master never had (written by an earlier master and \
         never acknowledged by the group): cutting them before following"
    );
    let cut = tokio::task::spawn_blocking(move || -> Result<Store, BrokerError> {
        store.shutdown()?;
        rocketlog_store::truncate_log(&store_config, PhysicalOffset(to))?;
        let mut epochs = epochs;
        epochs
            .truncate_to(to)
            .map_err(|e| BrokerError::Replication(e.to_string()))?;
        let store = Store::open(store_config)?;
        store.set_replica(true);
        Ok(store)
    })
    .await
    .map_err(|e| BrokerError::Task(e.to_string()))??;
    tracing::info!(
        at = to,
        took_ms = started.elapsed().as_millis() as u64,
        "divergent tail cut; following the master from here"
    );
    Ok(cut)
}

/// The epochs this broker began as master (`store/epochs.own`: one `epoch start_offset` line
/// each). A slave never cuts a tail holding one of them that its master does not have: those
/// bytes were acknowledged by this broker.
mod own_epochs {
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use rocketlog_proto::replication::v1 as pb;
    use rocketlog_replication::{EpochEntry, EpochHistory};

    use crate::error::BrokerError;

    const FILE_NAME: &str = "epochs.own";

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    fn io(what: &'static str, path: &Path, source: std::io::Error) -> BrokerError {
        BrokerError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn load(dir: &Path) -> Result<Vec<EpochEntry>, BrokerError> {
        let path = path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("reading", &path, e)),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut w = l.split_whitespace().map(str::parse::<u64>);
                match (w.next(), w.next(), w.next()) {
                    (Some(Ok(epoch)), Some(Ok(start_offset)), None) => Ok(EpochEntry {
                        epoch,
                        start_offset,
                    }),
                    _ => Err(BrokerError::Replication(format!(
                        "{}: bad line {l:?} (want \"epoch start_offset\")",
                        path.display()
                    ))),
                }
            })
            .collect()
    }

    /// Records that this broker began `epoch` at `start_offset` as master, durably.
    pub fn add(dir: &Path, epoch: u64, start_offset: u64) -> Result<(), BrokerError> {
        let mut all = load(dir)?;
        all.push(EpochEntry {
            epoch,
            start_offset,
        });
        let text: String = all
            .iter()
            .map(|e| format!("{} {}\n", e.epoch, e.start_offset))
            .collect();
        let path = path(dir);
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("renaming", &tmp, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing", dir, e))
    }

    /// The first epoch this broker began whose bytes a cut of the local log from `to` to
    /// `end` would remove while the master (`master`'s epochs) does not have it.
    pub fn would_lose(
        own: &[EpochEntry],
        local: &EpochHistory,
        end: u64,
        to: u64,
        master: &[pb::Epoch],
    ) -> Option<EpochEntry> {
        own.iter().copied().find(|e| {
            let Some(range_end) = local.end_of(e.epoch, end) else {
                // Not in this log's history (cut before): nothing of it is left to lose.
                return false;
            };
            let wrote = e.start_offset < range_end;
            let cut = range_end > to;
            let master_has = master
                .iter()
                .any(|m| m.epoch == e.epoch && m.start_offset == e.start_offset);
            wrote && cut && !master_has
        })
    }
}

fn open_epochs(dir: &Path) -> Result<EpochFile, BrokerError> {
    std::fs::create_dir_all(dir).map_err(|source| BrokerError::Io {
        what: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    EpochFile::open(dir).map_err(|e| BrokerError::Replication(e.to_string()))
}
