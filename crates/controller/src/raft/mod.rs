//! The controller's state replicated with openraft: [`ControllerNode`] runs one member.
//!
//! - [`log_store`]: the Raft log and vote on disk;
//! - [`state_machine`]: applies committed [`Command`]s to the [`ControllerState`] and keeps
//!   its snapshots;
//! - [`network`]: openraft's messages over the `rocketlog.controller.v1.Raft` gRPC service.
//!
//! Membership is static: every member is configured with the same peer map, and the member
//! with the lowest id initializes the cluster the first time (when its storage is empty).

mod durable;
pub mod log_store;
pub mod network;
mod record;
pub mod state_machine;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, RaftError,
};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use parking_lot::RwLock;
use rocketlog_proto::controller::v1::raft_server::RaftServer;
use tokio::sync::watch;

use crate::state::{Command, ControllerState, Outcome};
use log_store::LogStore;
use network::{Network, RaftService};
use state_machine::StateMachineStore;

openraft::declare_raft_types!(
    /// The openraft types of the controller: log entries carry [`Command`]s, applying one
    /// yields an [`Outcome`], and members are `u64` ids reached at `host:port`.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// How long [`ControllerNode::propose`] and [`ControllerNode::ensure_leader`] wait at most.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Snapshot chunk size on the wire; JSON makes a chunk up to four times larger, which must
/// stay below the gRPC message limit.
const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// How one controller member runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// This member's id; must be a key of `peers`.
    pub node_id: u64,
    /// Every member, this one included: id -> `host:port` of its nameserver gRPC port. All
    /// members must be configured with the same map.
    pub peers: BTreeMap<u64, String>,
    /// Where the log, vote and snapshots are kept.
    pub data_dir: PathBuf,
    /// How often the leader heartbeats its followers, in milliseconds (default 100).
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election
    /// (defaults 400 and 800 ms).
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// Entries applied between snapshots (default 1000). The log keeps about as many
    /// entries again before the latest snapshot, for followers that are slightly behind.
    pub snapshot_every: u64,
    /// Signs the messages sent to the other members (their nameservers check signatures when
    /// authentication is on); `None`: unsigned.
    pub credentials: Option<rocketlog_transport::signature::Credentials>,
}

impl RaftSettings {
    /// Settings with the defaults for everything but identity, peers and directory.
    pub fn new(node_id: u64, peers: BTreeMap<u64, String>, data_dir: PathBuf) -> RaftSettings {
        RaftSettings {
            node_id,
            peers,
            data_dir,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_every: 1000,
            credentials: None,
        }
    }

    fn check(&self) -> Result<(), ControllerError> {
        if self.peers.is_empty() {
            return Err(ControllerError::NoPeers);
        }
        if !self.peers.contains_key(&self.node_id) {
            return Err(ControllerError::NotAPeer {
                node_id: self.node_id,
                peers: self.peers.keys().copied().collect(),
            });
        }
        for (id, addr) in &self.peers {
            if !is_host_port(addr) {
                return Err(ControllerError::BadPeerAddress {
                    node_id: *id,
                    addr: addr.clone(),
                });
            }
        }
        if self.snapshot_every == 0 {
            return Err(ControllerError::Settings(
                "snapshot_every must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn openraft_config(&self) -> Result<Config, ControllerError> {
        let config = Config {
            cluster_name: "rocketlog-controller".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.election_timeout_max_ms.max(1000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.snapshot_every,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| ControllerError::Settings(e.to_string()))
    }
}

/// `host:port` with a non-empty host and a numeric port.
fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Reading or writing a storage file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The log file holds a damaged record that is not its last: refusing to guess.
    #[error("{}: corrupt log record at byte {offset}: {reason}", path.display())]
    CorruptLog {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A storage file written atomically does not parse.
    #[error("{}: unreadable: {reason}", path.display())]
    CorruptFile { path: PathBuf, reason: String },
    /// The peer map is empty.
    #[error("no controller peers are configured")]
    NoPeers,
    /// This member's id is not in the peer map.
    #[error("node {node_id} is not one of the controller peers {peers:?}")]
    NotAPeer { node_id: u64, peers: Vec<u64> },
    /// A peer's address is not `host:port`.
    #[error("controller peer {node_id} has address {addr:?}, not host:port")]
    BadPeerAddress { node_id: u64, addr: String },
    /// The timing or snapshot settings are inconsistent.
    #[error("invalid raft settings: {0}")]
    Settings(String),
    /// openraft refused to start or to initialize the cluster.
    #[error("starting raft: {0}")]
    Init(String),
}

/// Why a proposal (or a leadership check) did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This member is not the leader; `leader` is the one it knows of (id, address), if any.
    #[error(
        "this controller member is not the leader (leader: {})",
        describe_leader(leader)
    )]
    NotLeader { leader: Option<(u64, String)> },
    /// Anything else: no quorum within the timeout, or the member is shutting down. A timed
    /// out proposal may still be applied later.
    #[error("{0}")]
    Failed(String),
}

fn describe_leader(leader: &Option<(u64, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("{id} at {addr}"),
        None => "unknown".into(),
    }
}

/// One member's view of the controller group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// This member's id.
    pub node_id: u64,
    /// The leader this member follows (id, address), if it knows one.
    pub leader: Option<(u64, String)>,
    /// The Raft term this member is in.
    pub term: u64,
    /// Index of the last applied entry; 0 before any (index 0 is the initial membership).
    pub last_applied_index: u64,
    /// Every member (id, address), from the membership this member has seen (empty on a new
    /// member until the group's first leader contacts it).
    pub members: Vec<(u64, String)>,
}

/// A running controller member: its Raft, its applied state and its leadership.
///
/// Cloning is cheap; clones share the member.
#[derive(Clone)]
pub struct ControllerNode {
    node_id: u64,
    peers: Arc<BTreeMap<u64, String>>,
    raft: Raft<TypeConfig>,
    state: Arc<RwLock<ControllerState>>,
    leadership: watch::Receiver<Option<u64>>,
}

impl std::fmt::Debug for ControllerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerNode")
            .field("node_id", &self.node_id)
            .field("leader", &*self.leadership.borrow())
            .finish_non_exhaustive()
    }
}

impl ControllerNode {
    /// Opens the storage in `settings.data_dir` and starts the member. On empty storage the
    /// lowest-id peer initializes the cluster with every peer as a voter; the others wait to
    /// be contacted. A member with existing storage resumes from it and never initializes.
    pub async fn start(settings: RaftSettings) -> Result<ControllerNode, ControllerError> {
        settings.check()?;
        let config = Arc::new(settings.openraft_config()?);
        let log = LogStore::open(&settings.data_dir)?;
        let state_machine = StateMachineStore::open(&settings.data_dir)?;
        let fresh = log.is_fresh() && !state_machine.has_snapshot().await;
        let state = state_machine.shared_state();
        let raft = Raft::new(
            settings.node_id,
            config,
            Network::new(settings.node_id, settings.credentials.clone()),
            log,
            state_machine,
        )
        .await
        .map_err(|e| ControllerError::Init(e.to_string()))?;

        let lowest = settings.peers.keys().next().copied();
        if fresh && lowest == Some(settings.node_id) {
            if let Err(e) = initialize(&raft, &settings.peers).await {
                if let Err(join) = raft.shutdown().await {
                    tracing::warn!("stopping raft after a failed initialization: {join}");
                }
                return Err(e);
            }
        }
        let leadership = watch_leadership(&raft);
        tracing::info!(
            node_id = settings.node_id,
            fresh,
            peers = ?settings.peers,
            "controller raft member started"
        );
        Ok(ControllerNode {
            node_id: settings.node_id,
            peers: Arc::new(settings.peers),
            raft,
            state,
            leadership,
        })
    }

    /// The gRPC service the other members send their Raft messages to; serve it on the port
    /// given for this member in the peer map.
    pub fn raft_service(&self) -> RaftServer<RaftService> {
        RaftService::new(self.raft.clone()).into_server()
    }

    /// Replicates `cmd` and returns what applying it did, once a quorum holds it. Waits at
    /// most [`PROPOSE_TIMEOUT`].
    pub async fn propose(&self, cmd: Command) -> Result<Outcome, ProposeError> {
        let write = self.raft.client_write(cmd);
        match tokio::time::timeout(PROPOSE_TIMEOUT, write).await {
            Err(_) => Err(ProposeError::Failed(format!(
                "the proposal was not committed within {PROPOSE_TIMEOUT:?}"
            ))),
            Ok(Ok(reply)) => Ok(reply.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(self.not_leader(f))
            }
            Ok(Err(e)) => Err(ProposeError::Failed(format!("proposal failed: {e}"))),
        }
    }

    /// Confirms with a quorum that this member is still the leader (and has applied every
    /// entry committed before the call). Waits at most [`PROPOSE_TIMEOUT`].
    pub async fn ensure_leader(&self) -> Result<(), ProposeError> {
        let check = self.raft.ensure_linearizable();
        match tokio::time::timeout(PROPOSE_TIMEOUT, check).await {
            Err(_) => Err(ProposeError::Failed(format!(
                "leadership not confirmed within {PROPOSE_TIMEOUT:?}"
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(self.not_leader(f))
            }
            Ok(Err(e)) => Err(ProposeError::Failed(format!(
                "leadership not confirmed: {e}"
            ))),
        }
    }

    fn not_leader(&self, f: ForwardToLeader<u64, BasicNode>) -> ProposeError {
        let leader = f.leader_id.map(|id| {
            let addr = f
                .leader_node
                .map(|n| n.addr)
                .unwrap_or_else(|| self.address_of(id));
            (id, addr)
        });
        ProposeError::NotLeader { leader }
    }

    /// The address of member `id`: from the applied membership, else the configured peers.
    fn address_of(&self, id: u64) -> String {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .or_else(|| self.peers.get(&id).cloned())
            .unwrap_or_default()
    }

    /// A copy of the state as applied on this member (a follower's may lag the leader's).
    pub fn state(&self) -> ControllerState {
        self.state.read().clone()
    }

    /// The leader this member knows of (id, address), if any.
    pub fn leader(&self) -> Option<(u64, String)> {
        let id = self.raft.metrics().borrow().current_leader?;
        Some((id, self.address_of(id)))
    }

    /// Whether this member believes it is the leader. Not confirmed with a quorum: use
    /// [`ControllerNode::ensure_leader`] before acting on it.
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// The leader's id as this member sees it. A new value is sent whenever the leader or the
    /// term changes, so a member re-elected in a later term is woken too; a slow reader may
    /// see only the latest value.
    pub fn leadership(&self) -> watch::Receiver<Option<u64>> {
        self.leadership.clone()
    }

    /// This member's id, leader, term, progress and membership.
    pub fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let leader = m.current_leader;
        let term = m.current_term;
        let last_applied_index = m.last_applied.map_or(0, |l| l.index);
        drop(m);
        NodeStatus {
            node_id: self.node_id,
            leader: leader.map(|id| (id, self.address_of(id))),
            term,
            last_applied_index,
            members,
        }
    }

    /// Stops the member: no more messages are sent or answered. Its storage stays as it is,
    /// so starting again from the same directory resumes.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(
                node_id = self.node_id,
                "controller raft did not stop cleanly: {e}"
            );
        }
    }
}

/// Makes every peer a voter of a new cluster.
async fn initialize(
    raft: &Raft<TypeConfig>,
    peers: &BTreeMap<u64, String>,
) -> Result<(), ControllerError> {
    let nodes: BTreeMap<u64, BasicNode> = peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr)))
        .collect();
    match raft.initialize(nodes).await {
        Ok(()) => {
            tracing::info!(members = ?peers.keys().collect::<Vec<_>>(), "initialized the controller group");
            Ok(())
        }
        // A peer reached us first: the group already exists.
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
            tracing::info!("not initializing the controller group: {e}");
            Ok(())
        }
        Err(e) => Err(ControllerError::Init(e.to_string())),
    }
}

/// Follows openraft's metrics and publishes the leader id whenever the leader or term
/// changes. The task ends when the Raft stops (its metrics sender is dropped).
fn watch_leadership(raft: &Raft<TypeConfig>) -> watch::Receiver<Option<u64>> {
    let mut metrics = raft.metrics();
    let (leader, term) = {
        let m = metrics.borrow_and_update();
        (m.current_leader, m.current_term)
    };
    let (tx, rx) = watch::channel(leader);
    tokio::spawn(async move {
        let mut seen = (leader, term);
        while metrics.changed().await.is_ok() {
            let now = {
                let m = metrics.borrow_and_update();
                (m.current_leader, m.current_term)
            };
            if now != seen {
                seen = now;
                tx.send_replace(now.0);
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(ids: &[u64]) -> BTreeMap<u64, String> {
        ids.iter()
            .map(|id| (*id, format!("127.0.0.1:{}", 9000 + id)))
            .collect()
    }

    async fn start_err(settings: RaftSettings) -> ControllerError {
        ControllerNode::start(settings).await.unwrap_err()
    }

    #[tokio::test]
    async fn inconsistent_settings_are_refused_before_touching_storage() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let s = |id, p| RaftSettings::new(id, p, data.clone());

        let err = start_err(s(1, BTreeMap::new())).await;
        assert!(matches!(err, ControllerError::NoPeers), "{err}");
        let err = start_err(s(4, peers(&[1, 2, 3]))).await;
        assert!(
            matches!(err, ControllerError::NotAPeer { node_id: 4, .. }),
            "{err}"
        );
        let mut bad = peers(&[1, 2]);
        bad.insert(3, "no-port".into());
        let err = start_err(s(1, bad)).await;
        assert!(
            matches!(err, ControllerError::BadPeerAddress { node_id: 3, .. }),
            "{err}"
        );
        let err = start_err(RaftSettings {
            election_timeout_min_ms: 100,
            heartbeat_interval_ms: 100,
            ..s(1, peers(&[1]))
        })
        .await;
        assert!(matches!(err, ControllerError::Settings(_)), "{err}");
        let err = start_err(RaftSettings {
            snapshot_every: 0,
            ..s(1, peers(&[1]))
        })
        .await;
        assert!(matches!(err, ControllerError::Settings(_)), "{err}");
        assert!(!data.exists());
    }

    #[test]
    fn peer_addresses_must_be_host_and_port() {
        assert!(is_host_port("127.0.0.1:9876"));
        assert!(is_host_port("ns-1.example:9876"));
        assert!(is_host_port("[::1]:9876"));
        assert!(!is_host_port("127.0.0.1"));
        assert!(!is_host_port(":9876"));
        assert!(!is_host_port("host:99999"));
    }

    #[tokio::test]
    async fn a_single_member_leads_itself_and_recovers_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let settings = RaftSettings::new(1, peers(&[1]), dir.path().to_path_buf());
        let node = ControllerNode::start(settings.clone()).await.unwrap();
        let mut leadership = node.leadership();
        tokio::time::timeout(PROPOSE_TIMEOUT, leadership.wait_for(|l| *l == Some(1)))
            .await
            .unwrap()
            .unwrap();
        let cmd = Command::Register {
            group: "g".into(),
            cluster: "c".into(),
            replica: crate::state::ReplicaInfo {
                id: 1,
                replication_address: "127.0.0.1:1".into(),
                client_address: "127.0.0.1:2".into(),
            },
        };
        assert!(matches!(node.propose(cmd).await, Ok(Outcome::Applied(_))));
        node.ensure_leader().await.unwrap();
        let before = node.state();
        let status = node.status();
        assert_eq!(status.leader, Some((1, "127.0.0.1:9001".into())));
        assert_eq!(status.members, vec![(1, "127.0.0.1:9001".to_string())]);
        node.shutdown().await;

        let again = ControllerNode::start(settings).await.unwrap();
        let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        while again.state() != before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "state not recovered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        again.ensure_leader().await.unwrap();
        assert!(again.status().term >= status.term);
        again.shutdown().await;
    }
}
