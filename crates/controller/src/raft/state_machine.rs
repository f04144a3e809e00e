//! The controller's state machine under openraft: committed entries are applied to the shared
//! [`ControllerState`], and snapshots of it are kept in `snapshot.json`.
//!
//! The state itself is not written per entry: on restart it comes back as the latest
//! snapshot, and openraft re-applies the committed entries after it from the log. A snapshot
//! is therefore the only state file, and it is replaced atomically.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::durable::{read_json, remove_stale_tmp, write_json};
use super::{ControllerError, TypeConfig};
use crate::state::{ControllerState, Outcome};

const SNAPSHOT_FILE: &str = "snapshot.json";

type Membership = StoredMembership<u64, BasicNode>;
type Meta = SnapshotMeta<u64, BasicNode>;

/// A snapshot's data: everything needed to resume applying after `last_applied`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotPayload {
    state: ControllerState,
    last_applied: Option<LogId<u64>>,
    membership: Membership,
}

/// `snapshot.json`: the snapshot's metadata and its data.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: Meta,
    payload: SnapshotPayload,
}

/// The latest snapshot, as openraft hands it out.
#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        }
    }
}

/// The replicated state machine of one controller member.
#[derive(Debug)]
pub struct StateMachineStore {
    dir: PathBuf,
    state: Arc<RwLock<ControllerState>>,
    last_applied: Option<LogId<u64>>,
    membership: Membership,
    /// Shared with snapshot builders, which run on their own task; the lock is held while
    /// the file is written so an older snapshot never replaces a newer one.
    snapshot: Arc<tokio::sync::Mutex<Option<StoredSnapshot>>>,
}

/// Builds a snapshot from a copy of the state taken when openraft asked for the builder.
#[derive(Debug)]
pub struct SnapshotBuilder {
    dir: PathBuf,
    payload: SnapshotPayload,
    snapshot: Arc<tokio::sync::Mutex<Option<StoredSnapshot>>>,
}

impl StateMachineStore {
    /// Opens the state machine in `dir`: the latest snapshot if there is one, else empty.
    pub fn open(dir: &Path) -> Result<StateMachineStore, ControllerError> {
        remove_stale_tmp(dir, SNAPSHOT_FILE)?;
        let file: Option<SnapshotFile> = read_json(dir, SNAPSHOT_FILE)?;
        let mut store = StateMachineStore {
            dir: dir.to_path_buf(),
            state: Arc::default(),
            last_applied: None,
            membership: Membership::default(),
            snapshot: Arc::default(),
        };
        if let Some(SnapshotFile { meta, payload }) = file {
            let data = serde_json::to_vec(&payload).map_err(|e| ControllerError::CorruptFile {
                path: dir.join(SNAPSHOT_FILE),
                reason: e.to_string(),
            })?;
            *store.state.write() = payload.state;
            store.last_applied = meta.last_log_id;
            store.membership = meta.last_membership.clone();
            store.snapshot = Arc::new(tokio::sync::Mutex::new(Some(StoredSnapshot { meta, data })));
        }
        Ok(store)
    }

    /// The applied state, shared: it changes as entries are applied.
    pub fn shared_state(&self) -> Arc<RwLock<ControllerState>> {
        Arc::clone(&self.state)
    }

    /// Whether a snapshot was found on open or taken since.
    pub async fn has_snapshot(&self) -> bool {
        self.snapshot.lock().await.is_some()
    }
}

/// Writes `snapshot.json` unless a newer snapshot is already stored, and makes the written one
/// current. Returns the snapshot that is current afterwards.
async fn store_snapshot(
    dir: &Path,
    slot: &tokio::sync::Mutex<Option<StoredSnapshot>>,
    meta: Meta,
    payload: SnapshotPayload,
) -> Result<StoredSnapshot, StorageError<u64>> {
    let signature = meta.signature();
    let sto_err = |verb, e| {
        StorageError::from_io_error(ErrorSubject::Snapshot(Some(signature.clone())), verb, e)
    };
    let data = serde_json::to_vec(&payload).map_err(|e| sto_err(ErrorVerb::Write, e.into()))?;
    let mut current = slot.lock().await;
    if let Some(cur) = current.as_ref() {
        if cur.meta.last_log_id > meta.last_log_id {
            return Ok(cur.clone());
        }
    }
    let dir = dir.to_path_buf();
    let file = SnapshotFile {
        meta: meta.clone(),
        payload,
    };
    tokio::task::spawn_blocking(move || write_json(&dir, SNAPSHOT_FILE, &file))
        .await
        .map_err(|e| sto_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))?
        .map_err(|e| sto_err(ErrorVerb::Write, e))?;
    let stored = StoredSnapshot { meta, data };
    *current = Some(stored.clone());
    Ok(stored)
}

/// A snapshot id unique across restarts: the last included entry plus the wall-clock time.
fn snapshot_id(last: Option<LogId<u64>>) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    match last {
        Some(l) => format!(
            "{}-{}-{}-{millis}",
            l.leader_id.term, l.leader_id.node_id, l.index
        ),
        None => format!("none-{millis}"),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let meta = Meta {
            last_log_id: self.payload.last_applied,
            last_membership: self.payload.membership.clone(),
            snapshot_id: snapshot_id(self.payload.last_applied),
        };
        let stored = store_snapshot(&self.dir, &self.snapshot, meta, self.payload.clone()).await?;
        tracing::info!(snapshot = %stored.meta, "built a controller snapshot");
        Ok(stored.to_snapshot())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        let mut state = self.state.write();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Normal(command) => state.apply(&command),
                // openraft wants one response per entry; nobody waits for these two.
                EntryPayload::Blank => Outcome::Refused("a leader's blank entry".into()),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Outcome::Refused("a membership entry".into())
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            payload: SnapshotPayload {
                state: self.state.read().clone(),
                last_applied: self.last_applied,
                membership: self.membership.clone(),
            },
            snapshot: Arc::clone(&self.snapshot),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let payload: SnapshotPayload = serde_json::from_slice(&data).map_err(|e| {
            StorageError::from_io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        let state = payload.state.clone();
        store_snapshot(&self.dir, &self.snapshot, meta.clone(), payload).await?;
        *self.state.write() = state;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        tracing::info!(snapshot = %meta, "installed a controller snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        Ok(self
            .snapshot
            .lock()
            .await
            .as_ref()
            .map(StoredSnapshot::to_snapshot))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, Membership as RaftMembership};

    use super::*;
    use crate::state::{Command, ReplicaInfo};

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn register(id: u64) -> Command {
        Command::Register {
            group: "g".into(),
            cluster: "c".into(),
            replica: ReplicaInfo {
                id,
                replication_address: format!("127.0.0.1:{}", 20000 + id),
                client_address: format!("127.0.0.1:{}", 10000 + id),
            },
        }
    }

    fn membership() -> RaftMembership<u64, BasicNode> {
        let nodes: BTreeMap<u64, BasicNode> = [(1, BasicNode::new("127.0.0.1:1"))].into();
        RaftMembership::new(vec![[1].into()], nodes)
    }

    #[tokio::test]
    async fn a_snapshot_survives_reopen_and_installs_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let entries = vec![
            Entry {
                log_id: log_id(0),
                payload: EntryPayload::Membership(membership()),
            },
            Entry {
                log_id: log_id(1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2),
                payload: EntryPayload::Normal(register(1)),
            },
        ];
        let out = sm.apply(entries).await.unwrap();
        assert_eq!(out.len(), 3);
        assert!(matches!(out[2], Outcome::Applied(_)));
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(2)));

        let mut reopened = StateMachineStore::open(dir.path()).unwrap();
        let (applied, m) = reopened.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(2)));
        assert_eq!(m.log_id(), &Some(log_id(0)));
        assert_eq!(*reopened.shared_state().read(), *sm.shared_state().read());

        let other = tempfile::tempdir().unwrap();
        let mut follower = StateMachineStore::open(other.path()).unwrap();
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        follower
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(*follower.shared_state().read(), *sm.shared_state().read());
        assert!(
            StateMachineStore::open(other.path())
                .unwrap()
                .has_snapshot()
                .await
        );
    }

    #[tokio::test]
    async fn a_garbled_snapshot_is_refused_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let meta = Meta {
            last_log_id: Some(log_id(5)),
            last_membership: Membership::default(),
            snapshot_id: "x".into(),
        };
        let bad = Box::new(Cursor::new(b"not json".to_vec()));
        assert!(sm.install_snapshot(&meta, bad).await.is_err());
        assert_eq!(sm.applied_state().await.unwrap().0, None);
        assert!(!sm.has_snapshot().await);
    }
}
