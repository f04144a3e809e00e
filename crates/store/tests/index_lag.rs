//! The index may fall behind the consume queues (no room for a new index file): messages stay
//! readable, lookups stay complete, and the index catches up from the log once it can, with
//! or without a restart in between.

mod common;

use common::*;
use rocketlog_store::{FaultInjector, IoPoint, Store, StoreConfig};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A config whose index files cannot be created while `full` is set (ENOSPC), except the
/// first one so that the index has something to lag behind with.
fn config_with_full_index(dir: &std::path::Path, full: &Arc<AtomicBool>) -> StoreConfig {
    let mut cfg = config(dir, 64 << 10, async_mode());
    // 256 entries per file, two per message (id and key): a new file every 128 messages.
    let f = full.clone();
    cfg.faults = FaultInjector::new(move |p| match p {
        IoPoint::CreateIndexFile { begin } if begin > 0 && f.load(Ordering::SeqCst) => {
            Some(io::Error::from_raw_os_error(28)) // ENOSPC
        }
        _ => None,
    });
    cfg
}

fn append_n(store: &Store, from: u32, n: u32) {
    for i in from..from + n {
        store
            .append(msg("T", i % 2, format!("{i}").as_bytes()))
            .unwrap();
    }
}

fn assert_lookups(store: &Store, ids: impl IntoIterator<Item = u32>) {
    for i in ids {
        let by_id = store.lookup_message_id(&format!("id-T-{i}")).unwrap();
        assert_eq!(by_id.len(), 1, "message {i} by id");
        let by_key = store.lookup_key("T", &format!("key-{i}"), 10).unwrap();
        assert_eq!(by_key, by_id, "message {i} by key");
    }
}

#[test]
fn queues_go_on_without_the_index_and_it_catches_up_without_a_restart() {
    let dir = fast_tempdir();
    let full = Arc::new(AtomicBool::new(true));
    let store = Store::open(config_with_full_index(dir.path(), &full)).unwrap();
    append_n(&store, 0, 500);
    wait_dispatched(&store);
    // Every message is readable although the index stopped after its first file.
    assert_eq!(
        read_all(&store, "T", 0).len() + read_all(&store, "T", 1).len(),
        500
    );
    let status = store.index_status();
    assert!(status.lag_bytes() > 0, "{status:?}");
    assert!(
        status
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("disk full")),
        "{status:?}"
    );
    // Lookups cover the part the index lacks by reading it.
    assert_lookups(&store, [0, 127, 128, 300, 499]);

    full.store(false, Ordering::SeqCst);
    wait_until("index caught up", || store.index_status().lag_bytes() == 0);
    assert_eq!(store.index_status().problem, None);
    assert_lookups(&store, [0, 128, 300, 499]);
    // New messages are indexed as they come again.
    append_n(&store, 500, 10);
    wait_dispatched(&store);
    assert_eq!(store.index_status().lag_bytes(), 0);
    assert_lookups(&store, 500..510);
    store.shutdown().unwrap();
}

#[test]
fn a_lagging_index_survives_a_clean_restart_and_a_crash() {
    let dir = fast_tempdir();
    let full = Arc::new(AtomicBool::new(true));
    let cfg = config_with_full_index(dir.path(), &full);
    let store = Store::open(cfg.clone()).unwrap();
    append_n(&store, 0, 400);
    wait_dispatched(&store);
    let lag = store.index_status().lag_bytes();
    assert!(lag > 0);
    store.shutdown().unwrap();

    // Clean restart, still no room: the checkpoint kept the lag, nothing is lost.
    let store = Store::open(cfg.clone()).unwrap();
    let status = store.index_status();
    assert_eq!(status.lag_bytes(), lag, "{status:?}");
    assert_lookups(&store, [5, 200, 399]);
    append_n(&store, 400, 100);
    wait_dispatched(&store);
    // A crash while the index lags (no final checkpoint): the next open replays.
    drop(store);

    full.store(false, Ordering::SeqCst);
    let store = Store::open(cfg).unwrap();
    assert_eq!(
        read_all(&store, "T", 0).len() + read_all(&store, "T", 1).len(),
        500
    );
    wait_until("index caught up", || store.index_status().lag_bytes() == 0);
    assert_lookups(&store, [0, 5, 200, 399, 400, 499]);
    store.shutdown().unwrap();
}
