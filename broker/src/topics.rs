//! The broker's topic table: which topics exist here, how many queues each has, its permission
//! and the message types it accepts. Persisted as one JSON file replaced atomically (write a
//! temporary file, fsync, rename, fsync the directory), so a crash leaves the old or the new
//! table, never a torn one. Every change bumps a version on a watch channel; the nameserver
//! registration task re-registers when it moves.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rocketlog_common::NameError;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

const FILE_NAME: &str = "topics.json";
const FORMAT_VERSION: u32 = 1;

/// Largest queue count of one topic on one broker.
pub const MAX_QUEUE_COUNT: u32 = 1024;

/// A kind of message a topic accepts (`apache.rocketmq.v2.MessageType` without the
/// unspecified value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TopicMessageType {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

impl TopicMessageType {
    /// Upper-case name as in the protocol enum.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicMessageType::Normal => "NORMAL",
            TopicMessageType::Fifo => "FIFO",
            TopicMessageType::Delay => "DELAY",
            TopicMessageType::Transaction => "TRANSACTION",
        }
    }

    /// Parses the upper- or lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "NORMAL" => Some(TopicMessageType::Normal),
            "FIFO" => Some(TopicMessageType::Fifo),
            "DELAY" => Some(TopicMessageType::Delay),
            "TRANSACTION" => Some(TopicMessageType::Transaction),
            _ => None,
        }
    }
}

/// Read/write permission of a topic's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    None,
    Read,
    Write,
    #[default]
    ReadWrite,
}

impl Permission {
    pub fn readable(self) -> bool {
        matches!(self, Permission::Read | Permission::ReadWrite)
    }

    pub fn writable(self) -> bool {
        matches!(self, Permission::Write | Permission::ReadWrite)
    }
}

/// One topic on this broker. Queue ids are `0..queue_count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub name: String,
    pub queue_count: u32,
    #[serde(default)]
    pub permission: Permission,
    pub message_types: BTreeSet<TopicMessageType>,
}

impl TopicConfig {
    /// A read-write topic accepting `types`.
    pub fn new(
        name: impl Into<String>,
        queue_count: u32,
        types: impl IntoIterator<Item = TopicMessageType>,
    ) -> Self {
        TopicConfig {
            name: name.into(),
            queue_count,
            permission: Permission::ReadWrite,
            message_types: types.into_iter().collect(),
        }
    }

    pub fn accepts(&self, t: TopicMessageType) -> bool {
        self.message_types.contains(&t)
    }

    fn validate(&self) -> Result<(), TopicError> {
        rocketlog_common::validate_topic(&self.name)?;
        if self.queue_count == 0 || self.queue_count > MAX_QUEUE_COUNT {
            return Err(TopicError::InvalidQueueCount {
                topic: self.name.clone(),
                count: self.queue_count,
                max: MAX_QUEUE_COUNT,
            });
        }
        if self.message_types.is_empty() {
            return Err(TopicError::NoMessageTypes {
                topic: self.name.clone(),
            });
        }
        Ok(())
    }
}

/// Why a topic operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic {topic:?} does not exist")]
    NotFound { topic: String },
    #[error("topic {topic:?} already exists")]
    AlreadyExists { topic: String },
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("topic {topic:?}: queue count {count} is outside 1..={max}")]
    InvalidQueueCount { topic: String, count: u32, max: u32 },
    #[error("topic {topic:?} must accept at least one message type")]
    NoMessageTypes { topic: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid topic table: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TopicError + '_ {
    move |source| TopicError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Serialize, Deserialize)]
struct TopicFile {
    version: u32,
    topics: Vec<TopicConfig>,
}

/// Stands in for a file path in errors about an [`TopicManager::install`] input (which comes
/// from the master, not from a file).
const EXPORT_SOURCE: &str = "<replicated topic table>";

/// Decodes and validates a [`TopicManager::export`].
fn decode_export(bytes: &[u8]) -> Result<BTreeMap<String, TopicConfig>, TopicError> {
    let corrupt = |reason: String| TopicError::Corrupt {
        path: PathBuf::from(EXPORT_SOURCE),
        reason,
    };
    let file: TopicFile = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.version != FORMAT_VERSION {
        return Err(corrupt(format!("unknown format version {}", file.version)));
    }
    let mut topics = BTreeMap::new();
    for t in file.topics {
        t.validate()?;
        let name = t.name.clone();
        if topics.insert(name.clone(), t).is_some() {
            return Err(corrupt(format!("topic {name:?} is listed twice")));
        }
    }
    Ok(topics)
}

/// Retry (`%RETRY%`) and dead-letter (`%DLQ%`) topics belong to the broker: a producer's send
/// or a route query never creates one.
fn is_broker_owned(name: &str) -> bool {
    name.starts_with(rocketlog_common::names::RETRY_TOPIC_PREFIX)
        || name.starts_with(rocketlog_common::names::DLQ_TOPIC_PREFIX)
}

/// Settings of [`TopicManager`].
#[derive(Debug, Clone, Copy)]
pub struct TopicDefaults {
    /// Create unknown topics on demand.
    pub auto_create: bool,
    /// Queue count of auto-created topics.
    pub queue_count: u32,
}

/// The persisted topic table; cheap reads, serialized writes.
#[derive(Debug)]
pub struct TopicManager {
    path: PathBuf,
    defaults: TopicDefaults,
    topics: RwLock<BTreeMap<String, Arc<TopicConfig>>>,
    /// Held across "change the map + persist" so the file always matches some map state.
    write: Mutex<()>,
    version: watch::Sender<u64>,
}

impl TopicManager {
    /// Loads `dir/topics.json` (an absent file is an empty table); creates `dir` if needed.
    pub fn open(dir: &Path, defaults: TopicDefaults) -> Result<TopicManager, TopicError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(FILE_NAME);
        let mut topics = BTreeMap::new();
        match fs::read(&path) {
            Ok(bytes) => {
                let file: TopicFile =
                    serde_json::from_slice(&bytes).map_err(|e| TopicError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.version != FORMAT_VERSION {
                    return Err(TopicError::Corrupt {
                        path,
                        reason: format!("unknown format version {}", file.version),
                    });
                }
                for t in file.topics {
                    t.validate().map_err(|e| TopicError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                    topics.insert(t.name.clone(), Arc::new(t));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        let (version, _) = watch::channel(0);
        Ok(TopicManager {
            path,
            defaults,
            topics: RwLock::new(topics),
            write: Mutex::new(()),
            version,
        })
    }

    /// The topic, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<TopicConfig>> {
        self.topics.read().get(name).cloned()
    }

    /// The topic; when it is missing and auto-creation is on, creates it with the default
    /// queue count accepting `create_types`.
    pub fn get_or_create(
        &self,
        name: &str,
        create_types: &[TopicMessageType],
    ) -> Result<Arc<TopicConfig>, TopicError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        if !self.defaults.auto_create || is_broker_owned(name) {
            return Err(TopicError::NotFound {
                topic: name.to_owned(),
            });
        }
        let config = TopicConfig::new(
            name,
            self.defaults.queue_count,
            create_types.iter().copied(),
        );
        config.validate()?;
        let _w = self.write.lock();
        // Another request may have created it between the read and the lock.
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        let created = Arc::new(config);
        self.commit(|map| {
            map.insert(name.to_owned(), created.clone());
        })?;
        tracing::info!(
            topic = name,
            queues = created.queue_count,
            "auto-created topic"
        );
        Ok(created)
    }

    /// Creates a topic; fails if it exists. Retry and dead-letter topics are made only this
    /// way (by the broker), never by auto-creation.
    pub fn create(&self, config: TopicConfig) -> Result<Arc<TopicConfig>, TopicError> {
        config.validate()?;
        let _w = self.write.lock();
        if self.get(&config.name).is_some() {
            return Err(TopicError::AlreadyExists { topic: config.name });
        }
        let created = Arc::new(config);
        self.commit(|map| {
            map.insert(created.name.clone(), created.clone());
        })?;
        Ok(created)
    }

    /// Creates or replaces a topic.
    pub fn upsert(&self, config: TopicConfig) -> Result<Arc<TopicConfig>, TopicError> {
        config.validate()?;
        let _w = self.write.lock();
        let updated = Arc::new(config);
        self.commit(|map| {
            map.insert(updated.name.clone(), updated.clone());
        })?;
        Ok(updated)
    }

    /// Removes a topic; returns what it was.
    pub fn delete(&self, name: &str) -> Result<Arc<TopicConfig>, TopicError> {
        let _w = self.write.lock();
        let Some(old) = self.get(name) else {
            return Err(TopicError::NotFound {
                topic: name.to_owned(),
            });
        };
        self.commit(|map| {
            map.remove(name);
        })?;
        Ok(old)
    }

    /// Every topic, by name.
    pub fn list(&self) -> Vec<Arc<TopicConfig>> {
        self.topics.read().values().cloned().collect()
    }

    /// Watches the table version (bumped on every change, [`install`](Self::install)
    /// included; starts at 0 on every open). A master ships the table when it moved.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The current table version: the value [`subscribe`](Self::subscribe) watches (bumped on
    /// every change, starts at 0 on every open). Read it before [`export`](Self::export).
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// The whole table, encoded for [`install`](Self::install) on another broker: the JSON
    /// of `topics.json`, topics by name.
    pub fn export(&self) -> Vec<u8> {
        let file = TopicFile {
            version: FORMAT_VERSION,
            topics: self.list().iter().map(|t| (**t).clone()).collect(),
        };
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_vec(&file).unwrap_or_default()
    }

    /// Replaces the whole table with `export` (from [`export`](Self::export)): topics absent
    /// from it are deleted, changed ones updated, new ones created, then the table is persisted
    /// and subscribers see one version bump. An identical table changes nothing (no write, no
    /// bump). Bytes that do not decode, an unknown format version, a topic listed twice or an
    /// invalid topic are refused before anything changes; a decode failure is
    /// [`TopicError::Corrupt`] with the path `<replicated topic table>`.
    pub fn install(&self, export: &[u8]) -> Result<(), TopicError> {
        let next = decode_export(export)?;
        let _w = self.write.lock();
        let current = self.topics.read().clone();
        if current.len() == next.len()
            && next
                .iter()
                .all(|(name, t)| current.get(name).is_some_and(|c| **c == *t))
        {
            return Ok(());
        }
        let (mut created, mut updated) = (0usize, 0usize);
        let table: BTreeMap<String, Arc<TopicConfig>> = next
            .into_iter()
            .map(|(name, t)| {
                let config = match current.get(&name) {
                    // Unchanged topics keep their `Arc`: holders see the same config.
                    Some(c) if **c == t => Arc::clone(c),
                    Some(_) => {
                        updated += 1;
                        Arc::new(t)
                    }
                    None => {
                        created += 1;
                        Arc::new(t)
                    }
                };
                (name, config)
            })
            .collect();
        let deleted = current.keys().filter(|n| !table.contains_key(*n)).count();
        self.commit(|map| *map = table)?;
        tracing::info!(
            created,
            updated,
            deleted,
            "installed a replicated topic table"
        );
        Ok(())
    }

    /// Applies `change` to a copy of the map, persists the copy, then publishes it.
    /// Caller holds `self.write`.
    fn commit(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Arc<TopicConfig>>),
    ) -> Result<(), TopicError> {
        let mut next = self.topics.read().clone();
        change(&mut next);
        self.persist(&next)?;
        *self.topics.write() = next;
        self.version.send_modify(|v| *v += 1);
        Ok(())
    }

    fn persist(&self, map: &BTreeMap<String, Arc<TopicConfig>>) -> Result<(), TopicError> {
        let file = TopicFile {
            version: FORMAT_VERSION,
            topics: map.values().map(|t| (**t).clone()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| TopicError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: TopicDefaults = TopicDefaults {
        auto_create: true,
        queue_count: 4,
    };

    #[test]
    fn survives_reopen_and_bumps_version() {
        let dir = tempfile::tempdir().unwrap();
        let tm = TopicManager::open(dir.path(), DEFAULTS).unwrap();
        let rx = tm.subscribe();
        tm.create(TopicConfig::new("orders", 2, [TopicMessageType::Fifo]))
            .unwrap();
        tm.get_or_create("auto", &[TopicMessageType::Normal])
            .unwrap();
        assert_eq!(*rx.borrow(), 2);
        assert!(matches!(
            tm.create(TopicConfig::new("orders", 2, [TopicMessageType::Fifo])),
            Err(TopicError::AlreadyExists { .. })
        ));
        drop(tm);
        let tm = TopicManager::open(dir.path(), DEFAULTS).unwrap();
        let orders = tm.get("orders").unwrap();
        assert_eq!(orders.queue_count, 2);
        assert!(orders.accepts(TopicMessageType::Fifo));
        assert!(!orders.accepts(TopicMessageType::Normal));
        assert_eq!(tm.get("auto").unwrap().queue_count, 4);
        tm.delete("auto").unwrap();
        assert!(tm.get("auto").is_none());
        assert!(matches!(
            tm.delete("auto"),
            Err(TopicError::NotFound { .. })
        ));
    }

    #[test]
    fn auto_create_off_means_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let tm = TopicManager::open(
            dir.path(),
            TopicDefaults {
                auto_create: false,
                queue_count: 4,
            },
        )
        .unwrap();
        assert!(matches!(
            tm.get_or_create("t", &[TopicMessageType::Normal]),
            Err(TopicError::NotFound { .. })
        ));
    }

    #[test]
    fn retry_and_dead_letter_topics_are_never_auto_created() {
        let dir = tempfile::tempdir().unwrap();
        let tm = TopicManager::open(dir.path(), DEFAULTS).unwrap();
        for name in ["%RETRY%billing", "%DLQ%billing"] {
            assert!(matches!(
                tm.get_or_create(name, &[TopicMessageType::Normal]),
                Err(TopicError::NotFound { .. })
            ));
        }
        assert!(tm.get("%RETRY%billing").is_none());
        // The broker makes a dead-letter topic explicitly; then it is found.
        tm.create(TopicConfig::new(
            "%DLQ%billing",
            1,
            [TopicMessageType::Normal],
        ))
        .unwrap();
        assert!(tm
            .get_or_create("%DLQ%billing", &[TopicMessageType::Normal])
            .is_ok());
    }

    #[test]
    fn invalid_configs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tm = TopicManager::open(dir.path(), DEFAULTS).unwrap();
        assert!(tm
            .create(TopicConfig::new("bad name", 1, [TopicMessageType::Normal]))
            .is_err());
        assert!(tm
            .create(TopicConfig::new("t", 0, [TopicMessageType::Normal]))
            .is_err());
        assert!(tm.create(TopicConfig::new("t", 1, [])).is_err());
    }

    fn open(dir: &Path) -> TopicManager {
        TopicManager::open(dir, DEFAULTS).unwrap()
    }

    #[test]
    fn install_replaces_the_whole_table_and_persists_it() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let master = open(a_dir.path());
        master
            .create(TopicConfig::new("orders", 8, [TopicMessageType::Fifo]))
            .unwrap();
        master
            .create(TopicConfig::new("kept", 2, [TopicMessageType::Normal]))
            .unwrap();
        master
            .create(TopicConfig::new(
                "%DLQ%billing",
                1,
                [TopicMessageType::Normal],
            ))
            .unwrap();

        let slave = open(b_dir.path());
        slave
            .create(TopicConfig::new("orders", 2, [TopicMessageType::Normal]))
            .unwrap();
        slave
            .create(TopicConfig::new("kept", 2, [TopicMessageType::Normal]))
            .unwrap();
        slave
            .create(TopicConfig::new("gone", 1, [TopicMessageType::Normal]))
            .unwrap();
        let kept_before = slave.get("kept").unwrap();
        let mut rx = slave.subscribe();
        rx.borrow_and_update();
        let version = slave.version();
        assert_eq!(version, *rx.borrow());

        slave.install(&master.export()).unwrap();
        assert_eq!(slave.list(), master.list());
        assert!(
            slave.get("gone").is_none(),
            "a topic absent from the export"
        );
        assert_eq!(slave.get("orders").unwrap().queue_count, 8);
        assert!(Arc::ptr_eq(&slave.get("kept").unwrap(), &kept_before));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), version + 1, "one bump per install");
        assert_eq!(slave.version(), version + 1);

        // The same table again changes nothing and notifies no one.
        slave.install(&master.export()).unwrap();
        assert!(!rx.has_changed().unwrap());
        assert_eq!(slave.version(), version + 1);

        drop(slave);
        assert_eq!(open(b_dir.path()).list(), master.list());
    }

    #[test]
    fn install_of_an_empty_table_deletes_everything() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let slave = open(b_dir.path());
        slave
            .create(TopicConfig::new("t", 1, [TopicMessageType::Normal]))
            .unwrap();
        slave.install(&open(a_dir.path()).export()).unwrap();
        assert!(slave.list().is_empty());
        drop(slave);
        assert!(open(b_dir.path()).list().is_empty());
    }

    #[test]
    fn bad_exports_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tm = open(dir.path());
        tm.create(TopicConfig::new("t", 3, [TopicMessageType::Normal]))
            .unwrap();
        let before = tm.list();
        let rx = tm.subscribe();
        let version = *rx.borrow();
        let valid = tm.export();
        let t = r#"{"name":"t","queue_count":1,"message_types":["NORMAL"]}"#;
        let bad: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"{not json".to_vec(),
            valid[..valid.len() - 1].to_vec(),
            br#"{"version":2,"topics":[]}"#.to_vec(),
            format!(r#"{{"version":1,"topics":[{t},{t}]}}"#).into_bytes(),
            br#"{"version":1,"topics":[{"name":"t","queue_count":0,"message_types":["NORMAL"]}]}"#
                .to_vec(),
            br#"{"version":1,"topics":[{"name":"bad name","queue_count":1,"message_types":["NORMAL"]}]}"#
                .to_vec(),
        ];
        for b in bad {
            let err = tm.install(&b).unwrap_err();
            assert!(
                matches!(
                    err,
                    TopicError::Corrupt { .. }
                        | TopicError::InvalidQueueCount { .. }
                        | TopicError::InvalidName(_)
                ),
                "{err}"
            );
        }
        assert_eq!(tm.list(), before);
        assert_eq!(*rx.borrow(), version);
        assert_eq!(tm.version(), version);
        drop(tm);
        assert_eq!(open(dir.path()).list(), before);
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let err = TopicManager::open(dir.path(), DEFAULTS).unwrap_err();
        assert!(matches!(err, TopicError::Corrupt { .. }), "{err}");
    }
}
