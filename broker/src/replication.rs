//! The broker's role in its group: a master ships its commit log to its slaves (and, in sync
//! mode, acknowledges a send only once enough of them hold it); a slave follows its master's
//! log and never writes its own records. Settings: `[broker.replication]`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rocketlog_replication::epoch_file::EpochFile;
use rocketlog_replication::follower::{Follower, FollowerSettings, FollowerStatus};
use rocketlog_replication::master::{Master, MasterSettings, SlaveStatus, SyncError};
use rocketlog_store::Store;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::BrokerError;

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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        ReplicationSettings {
            mode: ReplicationMode::Async,
            min_in_sync_replicas: 2,
            sync_timeout_ms: 3_000,
            master_address: None,
            heartbeat_interval_ms: 1_000,
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
        if self.heartbeat_interval_ms == 0 {
            return Some((
                "replication.heartbeat_interval_ms",
                "must be positive".into(),
            ));
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

    /// Whether a send must wait for slaves.
    pub fn needs_slaves(&self) -> bool {
        self.mode == ReplicationMode::Sync && self.min_in_sync_replicas > 1
    }
}

/// What this broker is in its group.
#[derive(Debug, Clone)]
pub enum Role {
    /// Broker id 0. `master` is set when it serves a replication port.
    Master {
        master: Option<Arc<Master>>,
        sync_timeout: Option<Duration>,
    },
    /// Broker id 1..: follows the master's log.
    Slave { follower: Follower },
}

impl Role {
    /// Whether this broker writes its own records (clients' sends, timers, transactions).
    pub fn is_master(&self) -> bool {
        matches!(self, Role::Master { .. })
    }

    /// In sync mode, waits until enough slaves hold the log up to `end`.
    pub async fn replicated(&self, end: u64) -> Result<(), SyncError> {
        let Role::Master {
            master: Some(master),
            sync_timeout: Some(timeout),
        } = self
        else {
            return Ok(());
        };
        master.wait_replicated(end, *timeout).await
    }

    /// The slaves a master sees connected.
    pub fn slaves(&self) -> Vec<SlaveStatus> {
        match self {
            Role::Master {
                master: Some(m), ..
            } => m.slaves(),
            _ => Vec::new(),
        }
    }

    /// A slave's view of its replication.
    pub fn follower_status(&self) -> Option<FollowerStatus> {
        match self {
            Role::Slave { follower } => Some(follower.status()),
            Role::Master { .. } => None,
        }
    }
}

/// Who this broker is in its group (from `[broker]`).
#[derive(Debug, Clone)]
pub struct Identity {
    pub cluster_name: String,
    pub broker_name: String,
    pub broker_id: u64,
    /// Where the store keeps its files (the epoch file goes beside the commit log).
    pub store_dir: std::path::PathBuf,
    /// Whether a replication port is configured (a master's `replication_listen`).
    pub serves_replication: bool,
}

/// Sets the store's role and starts the side of replication this broker plays. A master
/// without `replication_listen` replicates to nobody.
pub fn start(
    config: &Identity,
    settings: &ReplicationSettings,
    store: &Store,
    shutdown: CancellationToken,
) -> Result<(Role, Option<tokio::task::JoinHandle<()>>), BrokerError> {
    let epochs = open_epochs(&config.store_dir)?;
    if config.broker_id != 0 {
        store.set_replica(true);
        let master_address = settings.master_address.clone().unwrap_or_default();
        let heartbeat = Duration::from_millis(settings.heartbeat_interval_ms);
        let (follower, task) = Follower::start(
            store.clone(),
            FollowerSettings {
                cluster_name: config.cluster_name.clone(),
                broker_name: config.broker_name.clone(),
                broker_id: config.broker_id,
                master_address,
                connect_timeout: Duration::from_secs(3),
                idle_timeout: heartbeat * 3,
            },
            epochs,
            shutdown,
        );
        return Ok((Role::Slave { follower }, Some(task)));
    }
    store.set_replica(false);
    // Every start as master is a new epoch from the current log end, so that bytes a slave
    // got from an earlier run but this log lost (a machine crash under async flush) show up
    // as a divergence instead of being silently overwritten.
    let mut epochs = epochs;
    let next = epochs.history().last().map_or(1, |e| e.epoch + 1);
    epochs
        .begin(next, store.log_range().1 .0)
        .map_err(|e| BrokerError::Replication(e.to_string()))?;
    let master = config.serves_replication.then(|| {
        Master::new(
            store.clone(),
            MasterSettings {
                cluster_name: config.cluster_name.clone(),
                broker_name: config.broker_name.clone(),
                min_in_sync_replicas: if settings.mode == ReplicationMode::Sync {
                    settings.min_in_sync_replicas as usize
                } else {
                    1
                },
                heartbeat_interval: Duration::from_millis(settings.heartbeat_interval_ms),
            },
            epochs.history().clone(),
            shutdown,
        )
    });
    let sync_timeout = settings
        .needs_slaves()
        .then(|| Duration::from_millis(settings.sync_timeout_ms));
    Ok((
        Role::Master {
            master,
            sync_timeout,
        },
        None,
    ))
}

fn open_epochs(dir: &Path) -> Result<EpochFile, BrokerError> {
    std::fs::create_dir_all(dir).map_err(|source| BrokerError::Io {
        what: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    EpochFile::open(dir).map_err(|e| BrokerError::Replication(e.to_string()))
}
