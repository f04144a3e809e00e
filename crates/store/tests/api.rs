//! The public API end to end on a real data directory.

mod common;

use common::*;
use rocketlog_common::tag_hash;
use rocketlog_store::{
    FaultInjector, FlushMode, IoPoint, PhysicalOffset, QueueOffset, Store, StoreError,
};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn append_then_read_every_way() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 64 << 10, async_mode())).unwrap();
    let mut results = Vec::new();
    for i in 0..300u32 {
        let (topic, q) = if i % 3 == 0 { ("A", 0) } else { ("B", i % 2) };
        let mut m = msg(topic, q, format!("{i}").as_bytes());
        m.properties.push(("n".into(), i.to_string()));
        m.born_timestamp_ms = i64::from(i);
        let p = store.append(m).unwrap();
        results.push((topic, q, p.wait_durable().unwrap()));
    }
    wait_dispatched(&store);
    assert_eq!(
        store.queues(),
        vec![("A".into(), 0), ("B".into(), 0), ("B".into(), 1)]
    );
    let a = read_all(&store, "A", 0);
    assert_eq!(a.len(), 100);
    for (k, m) in a.iter().enumerate() {
        assert_eq!(m.queue_offset, QueueOffset(k as u64));
        assert_eq!(m.body, format!("{}", k * 3).as_bytes());
        assert_eq!(m.tag.as_deref(), Some("TagA"));
        assert_eq!(m.properties[1], ("n".to_string(), (k * 3).to_string()));
        assert_eq!(m.born_timestamp_ms, (k * 3) as i64);
    }
    assert_eq!(
        store.queue_range("B", 1),
        (QueueOffset(0), QueueOffset(100))
    );
    assert_eq!(
        store.queue_range("nope", 0),
        (QueueOffset(0), QueueOffset(0))
    );
    let mut last_ts = 0;
    for (topic, q, r) in &results {
        let m = store.read_at(r.physical_offset).unwrap();
        assert_eq!((m.topic.as_str(), m.queue_id), (*topic, *q));
        assert_eq!((m.queue_offset, m.size), (r.queue_offset, r.size));
        assert_eq!(m.store_timestamp_ms, r.store_timestamp_ms);
        assert!(
            m.store_timestamp_ms >= last_ts,
            "store timestamps never decrease"
        );
        last_ts = m.store_timestamp_ms;
        let g = store.get(topic, *q, r.queue_offset).unwrap().unwrap();
        assert_eq!(g, m);
    }
    assert!(store.get("A", 0, QueueOffset(100)).unwrap().is_none());
    // The log rolled over several segments, each named by its first offset.
    let files: Vec<String> = std::fs::read_dir(dir.path().join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    assert!(files
        .iter()
        .all(|f| f.len() == 20 && f.parse::<u64>().unwrap() % (64 << 10) == 0));
    // scan_log walks every record across segment fillers.
    let mut pos = store.log_range().0;
    let mut scanned = 0;
    while pos < store.log_range().1 {
        let s = store.scan_log(pos, 4096).unwrap();
        assert!(s.next > pos);
        scanned += s.messages.len();
        pos = s.next;
    }
    assert_eq!(scanned, 300);
    store.shutdown().unwrap();
}

#[test]
fn tag_filter_skips_entries_and_advances() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 64 << 10, async_mode())).unwrap();
    for i in 0..20 {
        let mut m = msg("T", 0, format!("{i}").as_bytes());
        m.tag = Some(if i % 4 == 0 { "keep" } else { "drop" }.into());
        store.append(m).unwrap();
    }
    wait_dispatched(&store);
    let keep = tag_hash("keep");
    let r = store
        .read_queue("T", 0, QueueOffset(0), 3, &|h| h == keep)
        .unwrap();
    let offs: Vec<u64> = r.messages.iter().map(|m| m.queue_offset.0).collect();
    assert_eq!(offs, vec![0, 4, 8]);
    assert_eq!(r.next_offset, QueueOffset(9));
    assert_eq!(
        (r.min_offset, r.max_offset),
        (QueueOffset(0), QueueOffset(20))
    );
    let r = store
        .read_queue("T", 0, QueueOffset(17), 3, &|h| h == keep)
        .unwrap();
    assert!(r.messages.is_empty());
    assert_eq!(
        r.next_offset,
        QueueOffset(20),
        "filtered entries are skipped"
    );
    // At the end: empty page, same offset. Past it: an error with the range.
    let r = store
        .read_queue("T", 0, QueueOffset(20), 3, &|_| true)
        .unwrap();
    assert!(r.messages.is_empty());
    assert_eq!(r.next_offset, QueueOffset(20));
    assert!(matches!(
        store.read_queue("T", 0, QueueOffset(21), 3, &|_| true),
        Err(StoreError::OffsetOutOfRange {
            offset: 21,
            min: 0,
            max: 20
        })
    ));
}

#[test]
fn index_lookups_survive_clean_and_crash_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64 << 10, async_mode());
    let store = Store::open(cfg.clone()).unwrap();
    for i in 0..400 {
        let mut m = msg("T", i % 4, format!("{i}").as_bytes());
        m.keys = vec![format!("order-{}", i % 10), format!("k{i}")];
        store.append(m).unwrap();
    }
    // A duplicate message id (a producer retry).
    store.append(msg("T", 0, b"7")).unwrap();
    wait_dispatched(&store);
    let check = |s: &Store| {
        let dup = s.lookup_message_id("id-T-7").unwrap();
        assert_eq!(dup.len(), 2);
        assert!(dup[0].physical_offset < dup[1].physical_offset);
        let by_key = s.lookup_key("T", "order-3", 1000).unwrap();
        assert_eq!(by_key.len(), 40);
        assert!(by_key
            .iter()
            .all(|m| m.keys.contains(&"order-3".to_string())));
        let newest = s.lookup_key("T", "order-3", 5).unwrap();
        assert_eq!(newest, by_key[35..].to_vec());
        assert!(s.lookup_key("Other", "order-3", 10).unwrap().is_empty());
        assert!(s.lookup_message_id("missing").unwrap().is_empty());
    };
    check(&store);
    store.shutdown().unwrap();
    let store = Store::open(cfg.clone()).unwrap();
    check(&store);
    // More data, then a crash (no shutdown): replay rebuilds what the index lacked.
    for i in 400..450 {
        let mut m = msg("T", 1, format!("{i}").as_bytes());
        m.keys = vec!["order-3".into()];
        store.append(m).unwrap();
    }
    wait_dispatched(&store);
    drop(store);
    let store = Store::open(cfg).unwrap();
    assert_eq!(store.lookup_key("T", "order-3", 1000).unwrap().len(), 90);
    assert_eq!(store.lookup_message_id("id-T-7").unwrap().len(), 2);
    store.shutdown().unwrap();
}

#[test]
fn offset_at_time_finds_the_first_message_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 64 << 10, async_mode())).unwrap();
    let mut stamps = Vec::new();
    for i in 0..30 {
        let p = store
            .append(msg("T", 0, format!("{i}").as_bytes()))
            .unwrap();
        stamps.push(p.result.store_timestamp_ms);
        if i % 10 == 9 {
            // Let the clock move so there are distinct timestamps to search.
            let t = p.result.store_timestamp_ms;
            wait_until("clock tick", || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64
                    > t + 1
            });
        }
    }
    wait_dispatched(&store);
    for (k, ts) in stamps.iter().enumerate() {
        let first = stamps.iter().position(|s| s >= ts).unwrap();
        assert_eq!(
            store.queue_offset_at_time("T", 0, *ts).unwrap(),
            QueueOffset(first as u64),
            "entry {k}"
        );
    }
    assert_eq!(
        store.queue_offset_at_time("T", 0, 0).unwrap(),
        QueueOffset(0)
    );
    assert_eq!(
        store.queue_offset_at_time("T", 0, i64::MAX).unwrap(),
        QueueOffset(30)
    );
}

#[test]
fn delete_topic_drops_queues_and_stays_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64 << 10, async_mode());
    let store = Store::open(cfg.clone()).unwrap();
    for i in 0..10 {
        store
            .append(msg("Gone", 0, format!("{i}").as_bytes()))
            .unwrap();
        store
            .append(msg("Kept", 0, format!("{i}").as_bytes()))
            .unwrap();
    }
    wait_dispatched(&store);
    store.delete_topic("Gone").unwrap();
    assert_eq!(store.queues(), vec![("Kept".into(), 0)]);
    assert_eq!(
        store.queue_range("Gone", 0),
        (QueueOffset(0), QueueOffset(0))
    );
    assert!(!dir.path().join("consumequeue").join("Gone").exists());
    // A new incarnation starts at queue offset 0.
    let p = store.append(msg("Gone", 0, b"new")).unwrap();
    assert_eq!(p.result.queue_offset, QueueOffset(0));
    wait_dispatched(&store);
    drop(store); // crash: replay must not resurrect the old incarnation
    let store = Store::open(cfg.clone()).unwrap();
    let all = read_all(&store, "Gone", 0);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].body, b"new");
    assert_eq!(read_all(&store, "Kept", 0).len(), 10);
    store.shutdown().unwrap();
    // Without a checkpoint the whole log is replayed; the tombstone still holds.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let store = Store::open(cfg).unwrap();
    assert_eq!(read_all(&store, "Gone", 0).len(), 1);
    assert_eq!(read_all(&store, "Kept", 0).len(), 10);
}

#[test]
fn limits_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 64 << 10, async_mode());
    cfg.max_message_size = 1000;
    let store = Store::open(cfg).unwrap();
    let big = vec![7u8; 1001];
    assert!(matches!(
        store.append(msg("T", 0, &big)),
        Err(StoreError::MessageTooLarge { max: 1000, .. })
    ));
    assert!(matches!(
        store.append(msg("bad topic", 0, b"x")),
        Err(StoreError::BadTopic(_))
    ));
    let mut m = msg("T", 0, b"x");
    m.born_host = "h".repeat(70_000);
    assert!(matches!(
        store.append(m),
        Err(StoreError::FieldTooLong {
            field: "born_host",
            ..
        })
    ));
    store.shutdown().unwrap();

    // A message within max_message_size but larger than a segment.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 8192, async_mode())).unwrap();
    assert!(matches!(
        store.append(msg("T", 0, &[1u8; 9000])),
        Err(StoreError::MessageTooLarge { .. })
    ));
    // Nothing was written by the refused appends.
    assert_eq!(
        store
            .append(msg("T", 0, b"ok"))
            .unwrap()
            .result
            .queue_offset,
        QueueOffset(0)
    );
}

#[test]
fn sync_mode_acknowledges_after_flush_and_serves_only_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 64 << 10, FlushMode::Sync)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for i in 0..50 {
        let p = store
            .append(msg("T", 0, format!("{i}").as_bytes()))
            .unwrap();
        let end = p.result.physical_offset.0 + u64::from(p.result.size);
        let r = if i % 2 == 0 {
            rt.block_on(p.durable()).unwrap()
        } else {
            p.wait_durable().unwrap()
        };
        assert_eq!(r.queue_offset, QueueOffset(i));
        assert!(store.flushed_offset().0 >= end);
    }
    wait_dispatched(&store);
    assert!(*store.dispatched().borrow() <= store.flushed_offset());
    assert_eq!(read_all(&store, "T", 0).len(), 50);
    // Many concurrent appenders share flushes.
    sync_appends_from_threads(&store, "C", 8, 25);
    wait_dispatched(&store);
    for q in 0..8 {
        assert_eq!(store.queue_range("C", q).1, QueueOffset(25));
    }
    store.shutdown().unwrap();
    assert!(matches!(store.shutdown(), Ok(())), "idempotent");
    assert!(matches!(
        store.append(msg("T", 0, b"x")),
        Err(StoreError::ShutDown)
    ));
    assert!(matches!(
        store.read_at(PhysicalOffset(0)),
        Err(StoreError::ShutDown)
    ));
}

#[test]
fn a_lone_sync_appender_after_a_large_group_is_still_answered() {
    // After rounds that served many appenders the flusher waits for the group to gather
    // again; when only one appender is left, that wait must end by itself.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 1 << 20, FlushMode::Sync)).unwrap();
    sync_appends_from_threads(&store, "G", 16, 30);
    for i in 0..20u64 {
        let p = store
            .append(msg("L", 0, format!("{i}").as_bytes()))
            .unwrap();
        assert_eq!(p.wait_durable().unwrap().queue_offset, QueueOffset(i));
    }
    wait_dispatched(&store);
    for q in 0..16 {
        assert_eq!(store.queue_range("G", q).1, QueueOffset(30));
    }
    assert_eq!(read_all(&store, "L", 0).len(), 20);
    store.shutdown().unwrap();
}

#[test]
fn sync_appends_not_yet_flushed_are_unreadable_then_all_arrive_across_segments() {
    // Sync appends wait in the log's write buffer until a flush round writes them: a
    // reader never sees them early (no zeros, no torn record), and appenders that run
    // ahead of the flusher, past segment ends and past the buffer's limit, lose nothing.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 256 << 10, FlushMode::Sync)).unwrap();
    let body = vec![7u8; 3000];
    let mut pending = Vec::new();
    for i in 0..2000u32 {
        let mut b = body.clone();
        b[..4].copy_from_slice(&i.to_be_bytes());
        let p = store.append(msg("B", 0, &b)).unwrap();
        // Whatever the reader can see is a whole record.
        let (_, end) = store.log_range();
        assert!(end <= PhysicalOffset(p.result.physical_offset.0 + u64::from(p.result.size)));
        pending.push(p);
    }
    for p in pending {
        p.wait_durable().unwrap();
    }
    wait_dispatched(&store);
    let all = read_all(&store, "B", 0);
    assert_eq!(all.len(), 2000);
    for (i, m) in all.iter().enumerate() {
        assert_eq!(m.queue_offset, QueueOffset(i as u64));
        assert_eq!(&m.body[..4], &(i as u32).to_be_bytes());
        assert_eq!(m.body.len(), 3000);
    }
    store.shutdown().unwrap();
    let store = Store::open(config(dir.path(), 256 << 10, FlushMode::Sync)).unwrap();
    assert_eq!(read_all(&store, "B", 0).len(), 2000);
}

#[test]
fn failed_flush_fails_waiters_and_makes_the_store_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Arc::new(AtomicBool::new(false));
    let b2 = broken.clone();
    let mut cfg = config(dir.path(), 64 << 10, FlushMode::Sync);
    cfg.faults = FaultInjector::new(move |p| {
        (p == IoPoint::FlushLog && b2.load(Ordering::SeqCst))
            .then(|| io::Error::other("injected EIO"))
    });
    let store = Store::open(cfg.clone()).unwrap();
    store
        .append(msg("T", 0, b"ok"))
        .unwrap()
        .wait_durable()
        .unwrap();
    broken.store(true, Ordering::SeqCst);
    let p = store.append(msg("T", 0, b"lost")).unwrap();
    assert!(matches!(
        p.wait_durable(),
        Err(StoreError::FlushFailed { .. })
    ));
    let e = store.append(msg("T", 0, b"refused")).unwrap_err();
    assert!(
        matches!(&e, StoreError::ReadOnly { reason } if reason.contains("injected EIO")),
        "{e}"
    );
    // Consumers never see the record whose flush failed.
    wait_dispatched_to(&store, store.flushed_offset());
    assert_eq!(store.queue_range("T", 0).1, QueueOffset(1));
    assert!(store.shutdown().is_err(), "shutdown reports the failure");
    drop(store);
    // A restart recovers; the unflushed record is still in the page cache and is valid.
    broken.store(false, Ordering::SeqCst);
    let store = Store::open(cfg).unwrap();
    let all = read_all(&store, "T", 0);
    assert_eq!(
        all.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
        vec![b"ok".to_vec(), b"lost".to_vec()]
    );
    store
        .append(msg("T", 0, b"again"))
        .unwrap()
        .wait_durable()
        .unwrap();
}

/// `threads` threads, thread `t` appending `each` records to queue `t` of `topic` and waiting
/// for each to be durable.
fn sync_appends_from_threads(store: &Store, topic: &'static str, threads: u32, each: u32) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                for i in 0..each {
                    s.append(msg(topic, t, format!("{t}-{i}").as_bytes()))
                        .unwrap()
                        .wait_durable()
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn wait_dispatched_to(store: &Store, target: PhysicalOffset) {
    wait_until("dispatch", || *store.dispatched().borrow() >= target);
}

#[test]
fn disk_full_refuses_appends_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(true));
    let f2 = full.clone();
    let mut cfg = config(dir.path(), 16 << 10, async_mode());
    cfg.faults = FaultInjector::new(move |p| match p {
        IoPoint::PreallocateSegment { base } if base > 0 && f2.load(Ordering::SeqCst) => {
            Some(io::Error::from_raw_os_error(28)) // ENOSPC
        }
        _ => None,
    });
    let store = Store::open(cfg.clone()).unwrap();
    let mut ok = 0u64;
    // Each record is ~1.6 KiB (body, id and key each hold the 500 bytes).
    let err = loop {
        match store.append(msg("T", 0, &[b'x'; 500])) {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        assert!(ok < 1000, "the first segment must fill up");
    };
    assert!(
        matches!(err, StoreError::DiskFull { needed, .. } if needed == 16 << 10),
        "{err}"
    );
    assert!(matches!(
        store.append(msg("T", 0, &[b'x'; 500])),
        Err(StoreError::DiskFull { .. })
    ));
    wait_dispatched(&store);
    assert_eq!(
        read_all(&store, "T", 0).len() as u64,
        ok,
        "the store stays readable"
    );
    full.store(false, Ordering::SeqCst);
    let p = store.append(msg("T", 0, &[b'z'; 500])).unwrap();
    assert_eq!(
        p.result.queue_offset,
        QueueOffset(ok),
        "no queue offset was burnt"
    );
    assert_eq!(p.result.physical_offset, PhysicalOffset(16 << 10));
    wait_dispatched(&store);
    assert_eq!(read_all(&store, "T", 0).len() as u64, ok + 1);
    drop(store);
    let store = Store::open(cfg).unwrap();
    assert_eq!(read_all(&store, "T", 0).len() as u64, ok + 1);
}

#[test]
fn retention_by_age_and_by_disk_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 8192, async_mode());
    cfg.retention = Duration::from_millis(50);
    let store = Store::open(cfg.clone()).unwrap();
    for i in 0..60 {
        store
            .append(msg("T", 0, format!("{i:0>500}").as_bytes()))
            .unwrap();
    }
    wait_dispatched(&store);
    let (min0, max0) = store.log_range();
    assert_eq!(min0, PhysicalOffset(0));
    let first = store.get("T", 0, QueueOffset(0)).unwrap().unwrap();
    assert_eq!(store.lookup_message_id(&first.message_id).unwrap().len(), 1);
    // Age: the newest segments' records are younger than 50 ms only for a moment.
    wait_until("retention by age", || {
        store.run_retention_now().unwrap();
        store.log_range().0 .0 / 8192 == max0.0 / 8192
    });
    let (qmin, qmax) = store.queue_range("T", 0);
    assert!(qmin.0 > 0 && qmax == QueueOffset(60), "{qmin} {qmax}");
    assert!(matches!(
        store.read_queue("T", 0, QueueOffset(0), 10, &|_| true),
        Err(StoreError::OffsetOutOfRange { offset: 0, .. })
    ));
    assert!(store
        .lookup_message_id(&first.message_id)
        .unwrap()
        .is_empty());
    assert_eq!(read_all(&store, "T", 0).len() as u64, 60 - qmin.0);
    store.shutdown().unwrap();

    // Disk use: a limit of 0 means "always over": every sealed, dispatched segment goes.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 8192, async_mode());
    cfg.disk_use_ratio_limit = 0.0;
    let store = Store::open(cfg.clone()).unwrap();
    for i in 0..60 {
        store
            .append(msg("T", 0, format!("{i:0>500}").as_bytes()))
            .unwrap();
    }
    wait_dispatched(&store);
    let report = store.run_retention_now().unwrap();
    assert!(report.segments_deleted >= 3, "{report:?}");
    assert_eq!(
        report.log_min.0 / 8192,
        store.log_range().1 .0 / 8192,
        "only the last segment is left"
    );
    store.shutdown().unwrap();
    let store = Store::open(cfg).unwrap();
    assert_eq!(store.log_range().0, report.log_min);
    assert_eq!(store.queue_range("T", 0).1, QueueOffset(60));
}

#[test]
fn one_store_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64 << 10, async_mode());
    let a = Store::open(cfg.clone()).unwrap();
    assert!(matches!(
        Store::open(cfg.clone()),
        Err(StoreError::Locked { .. })
    ));
    a.shutdown().unwrap();
    // The lock is released by shutdown even while the old handle lives.
    let b = Store::open(cfg).unwrap();
    b.shutdown().unwrap();
    drop(a);
}

#[test]
fn dispatched_watch_advances_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 64 << 10, async_mode())).unwrap();
    let mut rx = store.dispatched();
    let start = *rx.borrow_and_update();
    let p = store.append(msg("T", 0, b"x")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        while *rx.borrow_and_update() <= start {
            rx.changed().await.unwrap();
        }
    });
    assert!(rx.borrow().0 >= p.result.physical_offset.0 + u64::from(p.result.size));
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send::<rocketlog_store::PendingAppend>();
    send::<StoreError>();
}
