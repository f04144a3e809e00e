//! Every consume queue of the store, by topic and queue id, and the tombstones of deleted
//! topics.
//!
//! A tombstone `(topic, offset)` says: records of `topic` below physical offset `offset` belong
//! to a deleted incarnation of the topic and are never dispatched again (not even by recovery);
//! records at or past it belong to a topic created again since. Tombstones are persisted in
//! `deleted_topics` (one `topic offset` line each) and dropped once retention has removed every
//! log segment below them.

use crate::checkpoint::write_atomically;
use crate::consume_queue::{ConsumeQueue, CqEntry};
use crate::error::StoreError;
use crate::segment::sync_dir;
use parking_lot::{Mutex, RwLock};
use rocketlog_common::validate_topic;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// File name of the tombstone list inside the data directory.
pub const TOMBSTONES_FILE: &str = "deleted_topics";
const TRASH_PREFIX: &str = ".deleted-";

type Queues = HashMap<String, HashMap<u32, Arc<ConsumeQueue>>>;

/// The consume queues.
#[derive(Debug)]
pub(crate) struct QueueRegistry {
    root: PathBuf,
    data_dir: PathBuf,
    per_file: u64,
    queues: RwLock<Queues>,
    tombstones: Mutex<BTreeMap<String, u64>>,
    /// Bumped whenever queues are removed, so the dispatcher drops its cached handles.
    generation: AtomicU64,
}

impl QueueRegistry {
    /// Opens every queue under `data_dir/consumequeue` (see [`ConsumeQueue::open`]).
    pub(crate) fn open(
        data_dir: &Path,
        per_file: u64,
        replay_start: u64,
        valid: &dyn Fn(&str, u32, &CqEntry, u64) -> bool,
    ) -> Result<Self, StoreError> {
        let root = data_dir.join("consumequeue");
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
        let tombstones = read_tombstones(&data_dir.join(TOMBSTONES_FILE))?;
        let mut queues = Queues::new();
        for topic_dir in read_dir(&root)? {
            let Some(name) = topic_dir
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            if name.starts_with(TRASH_PREFIX) {
                remove_tree(&topic_dir)?;
                continue;
            }
            if validate_topic(&name).is_err() || !topic_dir.is_dir() {
                continue;
            }
            for queue_dir in read_dir(&topic_dir)? {
                let Some(qid) = queue_dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let check = |e: &CqEntry, i: u64| valid(&name, qid, e, i);
                if let Some(q) = ConsumeQueue::open(queue_dir, replay_start, &check)? {
                    queues
                        .entry(name.clone())
                        .or_default()
                        .insert(qid, Arc::new(q));
                }
            }
        }
        Ok(QueueRegistry {
            root,
            data_dir: data_dir.to_path_buf(),
            per_file,
            queues: RwLock::new(queues),
            tombstones: Mutex::new(tombstones),
            generation: AtomicU64::new(0),
        })
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn get(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        self.queues.read().get(topic)?.get(&queue_id).cloned()
    }

    /// The queue for a record at `phys` with queue offset `first_offset`, created if needed;
    /// `None` if the record belongs to a deleted incarnation of the topic.
    pub(crate) fn get_or_create(
        &self,
        topic: &str,
        queue_id: u32,
        first_offset: u64,
        phys: u64,
    ) -> Result<Option<Arc<ConsumeQueue>>, StoreError> {
        if self.tombstones.lock().get(topic).is_some_and(|&t| phys < t) {
            return Ok(None);
        }
        if let Some(q) = self.get(topic, queue_id) {
            return Ok(Some(q));
        }
        let mut queues = self.queues.write();
        let per_topic = queues.entry(topic.to_owned()).or_default();
        let q = per_topic.entry(queue_id).or_insert_with(|| {
            let dir = self.root.join(topic).join(queue_id.to_string());
            Arc::new(ConsumeQueue::create(dir, self.per_file, first_offset))
        });
        Ok(Some(q.clone()))
    }

    /// Every (topic, queue id) with a consume queue, sorted.
    pub(crate) fn list(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .queues
            .read()
            .iter()
            .flat_map(|(t, qs)| qs.keys().map(move |q| (t.clone(), *q)))
            .collect();
        out.sort();
        out
    }

    /// Every queue with its next offset (to seed the commit log's queue-offset table).
    pub(crate) fn next_offsets(&self) -> Vec<(String, u32, u64)> {
        self.all()
            .into_iter()
            .map(|(t, q, cq)| (t, q, cq.range().1))
            .collect()
    }

    fn all(&self) -> Vec<(String, u32, Arc<ConsumeQueue>)> {
        self.queues
            .read()
            .iter()
            .flat_map(|(t, qs)| qs.iter().map(move |(q, cq)| (t.clone(), *q, cq.clone())))
            .collect()
    }

    /// Flushes every queue.
    pub(crate) fn flush_all(&self) -> Result<(), StoreError> {
        for (_, _, q) in self.all() {
            q.flush()?;
        }
        Ok(())
    }

    /// Releases the resident pages of every queue's older files.
    pub(crate) fn release_resident(&self) -> std::io::Result<()> {
        for (_, _, q) in self.all() {
            q.release_resident()?;
        }
        Ok(())
    }

    /// Retention: drops entries below `log_min` and tombstones no longer needed.
    pub(crate) fn truncate_below(&self, log_min: u64) -> Result<(), StoreError> {
        for (_, _, q) in self.all() {
            q.truncate_below(log_min)?;
        }
        let mut t = self.tombstones.lock();
        let before = t.len();
        t.retain(|_, off| *off > log_min);
        if t.len() != before {
            write_tombstones(&self.data_dir, &t)?;
        }
        Ok(())
    }

    /// Forgets `topic`: persists its tombstone at `log_end` (the caller holds the append lock,
    /// so every older record of the topic lies below it and every newer one above), removes
    /// its queues, and moves their directory aside. Returns that directory for the caller to
    /// delete outside the append lock.
    pub(crate) fn delete_topic(
        &self,
        topic: &str,
        log_end: u64,
    ) -> Result<Option<PathBuf>, StoreError> {
        {
            let mut t = self.tombstones.lock();
            t.insert(topic.to_owned(), log_end);
            write_tombstones(&self.data_dir, &t)?;
        }
        self.queues.write().remove(topic);
        self.generation.fetch_add(1, Ordering::SeqCst);
        let dir = self.root.join(topic);
        if !dir.exists() {
            return Ok(None);
        }
        let trash = self.root.join(format!(
            "{TRASH_PREFIX}{topic}-{}",
            self.generation.load(Ordering::SeqCst)
        ));
        std::fs::rename(&dir, &trash).map_err(|e| StoreError::io(&dir, e))?;
        sync_dir(&self.root)?;
        Ok(Some(trash))
    }
}

/// Deletes a directory tree (moved-aside queues of a deleted topic).
pub(crate) fn remove_tree(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        out.push(entry.map_err(|e| StoreError::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// The tombstones persisted at `path` (none if the file is missing).
pub(crate) fn read_tombstones(path: &Path) -> Result<BTreeMap<String, u64>, StoreError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let mut parts = line.split(' ');
        match (
            parts.next(),
            parts.next().and_then(|o| o.parse().ok()),
            parts.next(),
        ) {
            (Some(topic), Some(off), None) if validate_topic(topic).is_ok() => {
                out.insert(topic.to_owned(), off);
            }
            _ => {
                return Err(StoreError::corrupt(
                    path,
                    n as u64,
                    format!("line {} is not `topic offset`", n + 1),
                ))
            }
        }
    }
    Ok(out)
}

/// Atomically replaces the tombstones of `data_dir`.
pub(crate) fn write_tombstones(
    data_dir: &Path,
    t: &BTreeMap<String, u64>,
) -> Result<(), StoreError> {
    let text: String = t.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    write_atomically(data_dir, TOMBSTONES_FILE, text.as_bytes())
        .map_err(|e| StoreError::io(&data_dir.join(TOMBSTONES_FILE), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_hide_old_records_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let reg = QueueRegistry::open(dir.path(), 8, 0, &|_, _, _, _| true).unwrap();
        let q = reg.get_or_create("T", 0, 0, 0).unwrap().unwrap();
        q.put(
            0,
            CqEntry {
                physical_offset: 0,
                size: 10,
                tag_hash: 0,
            },
        )
        .unwrap();
        assert_eq!(reg.list(), vec![("T".to_string(), 0)]);
        let g = reg.generation();
        let trash = reg.delete_topic("T", 100).unwrap().unwrap();
        remove_tree(&trash).unwrap();
        assert!(reg.generation() > g);
        assert!(reg.list().is_empty());
        assert!(
            reg.get_or_create("T", 0, 0, 50).unwrap().is_none(),
            "old incarnation"
        );
        assert!(
            reg.get_or_create("T", 0, 0, 100).unwrap().is_some(),
            "new incarnation"
        );
        drop(reg);
        let reg = QueueRegistry::open(dir.path(), 8, 0, &|_, _, _, _| true).unwrap();
        assert!(reg.get_or_create("T", 1, 0, 99).unwrap().is_none());
        reg.truncate_below(200).unwrap();
        assert!(
            reg.get_or_create("T", 1, 0, 99).unwrap().is_some(),
            "tombstone expired"
        );
        let text = std::fs::read_to_string(dir.path().join(TOMBSTONES_FILE)).unwrap();
        assert!(text.is_empty());
    }
}
