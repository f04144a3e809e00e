//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use rocketlog_store::{AppendMessage, FlushMode, PhysicalOffset, Store, StoreConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A temporary directory on tmpfs when there is one: for tests of logic that do many
/// fsyncs (each costs milliseconds on a real disk). Crash tests use the real disk.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Small files everywhere so tests roll segments, queue files and index files quickly.
pub fn config(dir: &Path, segment_size: u64, flush_mode: FlushMode) -> StoreConfig {
    StoreConfig {
        data_dir: dir.to_path_buf(),
        segment_size,
        flush_mode,
        consume_queue_segment_entries: 64,
        index_slots: 101,
        index_entries_per_file: 256,
        // Only the checkpoints a test asks for (open, shutdown) unless it sets its own.
        checkpoint_interval: Duration::from_secs(3600),
        retention_check_interval: Duration::from_secs(3600),
        ..StoreConfig::default()
    }
}

pub fn async_mode() -> FlushMode {
    FlushMode::Async {
        interval: Duration::from_millis(20),
    }
}

pub fn msg(topic: &str, queue_id: u32, body: &[u8]) -> AppendMessage {
    AppendMessage {
        topic: topic.into(),
        queue_id,
        flags: 1,
        tag: Some("TagA".into()),
        keys: vec![format!("key-{}", String::from_utf8_lossy(body))],
        message_id: format!("id-{topic}-{}", String::from_utf8_lossy(body)),
        born_timestamp_ms: 1_700_000_000_000,
        born_host: "127.0.0.1:1000".into(),
        store_host: "127.0.0.1:8081".into(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        properties: vec![("k".into(), "v".into())],
        body: body.to_vec(),
    }
}

/// Polls (with a deadline) until everything written is readable through the queues.
pub fn wait_dispatched(store: &Store) {
    let target = store.log_range().1;
    wait_until("dispatch", || *store.dispatched().borrow() >= target);
}

/// Polls `cond` every millisecond until it holds; panics after 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Path of the commit-log segment holding `offset`.
pub fn segment_path(dir: &Path, segment_size: u64, offset: PhysicalOffset) -> PathBuf {
    let base = offset.0 / segment_size * segment_size;
    dir.join("commitlog").join(format!("{base:020}"))
}

/// Flips one byte of a file.
pub fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5A;
    std::fs::write(path, bytes).unwrap();
}

/// All messages of a queue, read in pages of 7.
pub fn read_all(store: &Store, topic: &str, queue_id: u32) -> Vec<rocketlog_store::StoredMessage> {
    let (min, max) = store.queue_range(topic, queue_id);
    let mut out = Vec::new();
    let mut next = min;
    while next < max {
        let r = store
            .read_queue(topic, queue_id, next, 7, &|_| true)
            .unwrap();
        assert!(r.next_offset > next, "read_queue made no progress");
        next = r.next_offset;
        out.extend(r.messages);
    }
    out
}
