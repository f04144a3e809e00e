//! Cutting the log of a closed store back to a record boundary (a former master rejoining its
//! group as a slave): after the next open nothing of the cut tail is visible through queues,
//! lookups or log reads, the queues continue without gaps, and the log continues with the new
//! master's bytes at the same offsets until both logs are identical. Refused offsets change
//! nothing.

mod common;

use common::*;
use rocketlog_store::{
    truncate_log, AppendMessage, FlushMode, PhysicalOffset, QueueOffset, Store, StoreConfig,
    StoreError, TruncateRefusal, Truncated,
};
use std::collections::BTreeMap;
use std::path::Path;

const SEG: u64 = 64 << 10;

/// What a test remembers of one appended message.
#[derive(Debug, Clone)]
struct Written {
    id: String,
    key: String,
    topic: String,
    queue: u32,
    at: PhysicalOffset,
    size: u32,
    queue_offset: QueueOffset,
}

/// Message `i` of a run tagged `tag`: three topics, two queues each, sizes varied so that
/// fillers of many lengths close the segments.
fn message(tag: &str, i: u32, topics: u32) -> AppendMessage {
    let body = vec![b'a' + (i % 26) as u8; 20 + (i as usize * 37) % 700];
    let mut m = msg(&format!("T{}", i % topics), i % 2, &body);
    m.message_id = format!("id-{tag}-{i}");
    m.keys = vec![format!("key-{tag}-{i}")];
    m
}

fn append(store: &Store, m: AppendMessage) -> Written {
    let (id, key, topic, queue) = (
        m.message_id.clone(),
        m.keys[0].clone(),
        m.topic.clone(),
        m.queue_id,
    );
    let r = store.append(m).unwrap().wait_durable().unwrap();
    Written {
        id,
        key,
        topic,
        queue,
        at: r.physical_offset,
        size: r.size,
        queue_offset: r.queue_offset,
    }
}

fn write(store: &Store, tag: &str, n: u32, topics: u32) -> Vec<Written> {
    let out = (0..n)
        .map(|i| append(store, message(tag, i, topics)))
        .collect();
    wait_dispatched(store);
    out
}

fn cfg(dir: &Path, mode: FlushMode) -> StoreConfig {
    config(dir, SEG, mode)
}

fn open(dir: &Path, mode: FlushMode) -> Store {
    Store::open(cfg(dir, mode)).unwrap()
}

/// Ships everything `master` has past `replica`'s end, in chunks of at most `chunk` bytes.
fn ship(master: &Store, replica: &Store, chunk: usize) {
    loop {
        let at = replica.log_range().1;
        let bytes = master.read_log_bytes(at, chunk).unwrap();
        if bytes.is_empty() {
            break;
        }
        replica
            .append_replicated(at, &bytes)
            .unwrap()
            .wait_durable()
            .unwrap();
    }
    wait_dispatched(replica);
}

/// Every log byte of `[from, end)`, read the way a master ships them.
fn log_bytes(store: &Store, from: PhysicalOffset) -> Vec<u8> {
    let end = store.log_range().1;
    let mut out = Vec::new();
    let mut at = from;
    while at < end {
        let chunk = store.read_log_bytes(at, 1 << 20).unwrap();
        assert!(
            !chunk.is_empty(),
            "no bytes at {at:?} below the end {end:?}"
        );
        at = PhysicalOffset(at.0 + chunk.len() as u64);
        out.extend(chunk);
    }
    out
}

/// The ids in a queue, in queue order, checking that queue offsets are dense from 0.
fn queue_ids(store: &Store, topic: &str, queue: u32) -> Vec<String> {
    let all = read_all(store, topic, queue);
    for (i, m) in all.iter().enumerate() {
        assert_eq!(m.queue_offset, QueueOffset(i as u64), "{topic}:{queue}");
    }
    assert_eq!(
        store.queue_range(topic, queue),
        (QueueOffset(0), QueueOffset(all.len() as u64))
    );
    all.into_iter().map(|m| m.message_id).collect()
}

fn expected_ids(written: &[Written], topic: &str, queue: u32) -> Vec<String> {
    written
        .iter()
        .filter(|w| w.topic == topic && w.queue == queue)
        .map(|w| w.id.clone())
        .collect()
}

fn found(store: &Store, w: &Written) -> bool {
    let by_id = store.lookup_message_id(&w.id).unwrap();
    let by_key = store.lookup_key(&w.topic, &w.key, 10).unwrap();
    assert_eq!(by_id, by_key, "{} by id and by key", w.id);
    assert!(by_id.len() <= 1, "{}: {by_id:?}", w.id);
    by_id.first().is_some_and(|m| m.physical_offset == w.at)
}

/// Checks that `store` holds exactly `kept` (and nothing of `cut`) through every read path.
fn assert_holds_exactly(store: &Store, kept: &[Written], cut: &[Written], topics: u32) {
    for t in 0..topics {
        let topic = format!("T{t}");
        for q in 0..2 {
            assert_eq!(
                queue_ids(store, &topic, q),
                expected_ids(kept, &topic, q),
                "{topic}:{q}"
            );
        }
    }
    for w in kept {
        assert!(found(store, w), "{} should be found", w.id);
        assert_eq!(store.read_at(w.at).unwrap().message_id, w.id);
    }
    for w in cut {
        assert!(!found(store, w), "{} was cut", w.id);
    }
}

/// Every file of the data directory but the lock and commit-log segments at or past `end`
/// (files preallocated ahead, which any open deletes), with its bytes.
fn snapshot(dir: &Path, end: PhysicalOffset) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let ahead = rel
                .strip_prefix("commitlog/")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|base| base > end.0);
            if rel != "LOCK" && !ahead {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn segment_names(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn truncation_keeps_exactly_the_records_before_the_cut() {
    // After a clean shutdown (the checkpoint trusted the old end) and after a crash.
    for clean in [true, false] {
        let dir = fast_tempdir();
        let store = open(dir.path(), async_mode());
        let written = write(&store, "a", 600, 3);
        let end = store.log_range().1;
        if clean {
            store.shutdown().unwrap();
        } else {
            drop(store);
        }
        let k = 377;
        let x = written[k].at;
        let t = truncate_log(&cfg(dir.path(), async_mode()), x).unwrap();
        assert_eq!(
            t,
            Truncated {
                from: end.0,
                to: x.0,
                bytes: end.0 - x.0
            }
        );

        let store = open(dir.path(), async_mode());
        assert_eq!(store.log_range().1, x);
        let (kept, cut) = written.split_at(k);
        assert_holds_exactly(&store, kept, cut, 3);
        assert!(store.read_log_bytes(x, 1 << 20).unwrap().is_empty());
        assert!(matches!(
            store.read_at(x),
            Err(StoreError::OffsetOutOfRange { .. })
        ));
        let scan = store.scan_log(PhysicalOffset(0), usize::MAX).unwrap();
        assert_eq!(scan.messages.len(), k);
        assert_eq!(scan.next, x);

        // New appends continue the log at the cut and every queue after its last entry.
        let first = append(&store, message("new", 0, 3));
        assert_eq!(first.at, x);
        let mut after = vec![first];
        after.extend((1..12).map(|i| append(&store, message("new", i, 3))));
        for w in &after {
            let before = kept
                .iter()
                .filter(|k| k.topic == w.topic && k.queue == w.queue)
                .count()
                + after
                    .iter()
                    .take_while(|a| a.at < w.at)
                    .filter(|a| a.topic == w.topic && a.queue == w.queue)
                    .count();
            assert_eq!(w.queue_offset, QueueOffset(before as u64), "{}", w.id);
        }
        wait_dispatched(&store);
        // And it all survives a crash.
        drop(store);
        let store = open(dir.path(), async_mode());
        let all: Vec<Written> = kept.iter().chain(&after).cloned().collect();
        assert_holds_exactly(&store, &all, cut, 3);
    }
}

#[test]
fn the_new_master_ships_its_bytes_from_the_cut_and_the_logs_become_identical() {
    for mode in [FlushMode::Sync, async_mode()] {
        let (old_dir, new_dir) = (fast_tempdir(), fast_tempdir());
        let old = open(old_dir.path(), mode);
        let new = open(new_dir.path(), mode);
        // A shared prefix: the new master was the old one's slave.
        let prefix = write(&old, "p", 150, 3);
        new.set_replica(true);
        ship(&old, &new, 8192);
        let x = old.log_range().1;
        assert_eq!(new.log_range().1, x);
        // The old master wrote records nobody got (one more topic too), the new master others.
        let lost = write(&old, "lost", 200, 4);
        new.set_replica(false);
        let theirs = write(&new, "theirs", 260, 3);
        assert_ne!(lost[0].size, theirs[0].size, "the records should differ");
        old.shutdown().unwrap();

        let t = truncate_log(&cfg(old_dir.path(), mode), x).unwrap();
        assert_eq!((t.to, t.bytes), (x.0, t.from - x.0));
        let old = open(old_dir.path(), mode);
        old.set_replica(true);
        ship(&new, &old, 5000);

        assert_eq!(old.log_range(), new.log_range());
        assert!(
            log_bytes(&old, PhysicalOffset(0)) == log_bytes(&new, PhysicalOffset(0)),
            "the logs differ ({mode:?})"
        );
        let kept: Vec<Written> = prefix.iter().chain(&theirs).cloned().collect();
        assert_holds_exactly(&old, &kept, &lost, 3);
        assert_eq!(
            old.queue_range("T3", 0),
            (QueueOffset(0), QueueOffset(0)),
            "the old master's own topic is empty"
        );

        // Segment by segment, the files are the same up to the end.
        let end = new.log_range().1;
        new.shutdown().unwrap();
        old.shutdown().unwrap();
        for base in segment_names(new_dir.path()) {
            if base >= end.0 {
                continue; // created ahead: holds nothing yet
            }
            let name = format!("commitlog/{base:020}");
            assert!(
                std::fs::read(old_dir.path().join(&name)).unwrap()
                    == std::fs::read(new_dir.path().join(&name)).unwrap(),
                "{name} differs ({mode:?})"
            );
        }

        // Promoted again, the old master continues the new master's queues.
        let old = open(old_dir.path(), mode);
        let next = append(&old, message("later", 0, 3));
        let queue = kept.iter().filter(|w| w.topic == "T0" && w.queue == 0);
        assert_eq!(next.queue_offset, QueueOffset(queue.count() as u64));
    }
}

#[test]
fn truncation_across_segments_at_a_filler_and_at_a_segment_start() {
    let dir = fast_tempdir();
    let store = open(dir.path(), async_mode());
    let written = write(&store, "a", 700, 3);
    let end = store.log_range().1;
    store.shutdown().unwrap();
    let segments = segment_names(dir.path());
    assert!(
        segments.iter().filter(|b| **b < end.0).count() >= 5,
        "{segments:?}"
    );

    // The filler closing the second segment: the last record there ends where it starts.
    let k = written.iter().position(|w| w.at.0 >= 2 * SEG).unwrap();
    let filler = PhysicalOffset(written[k - 1].at.0 + u64::from(written[k - 1].size));
    assert!(filler.0 < 2 * SEG, "{filler:?}");
    let t = truncate_log(&cfg(dir.path(), async_mode()), filler).unwrap();
    assert_eq!(t.bytes, end.0 - filler.0);
    assert_eq!(segment_names(dir.path()), vec![0, SEG]);
    let store = open(dir.path(), async_mode());
    assert_eq!(store.log_range().1, filler);
    let (kept, cut) = written.split_at(k);
    assert_holds_exactly(&store, kept, cut, 3);
    store.shutdown().unwrap();

    // Again, to the first record of the second segment.
    let j = written.iter().position(|w| w.at.0 == SEG).unwrap();
    let t = truncate_log(&cfg(dir.path(), async_mode()), PhysicalOffset(SEG)).unwrap();
    assert_eq!((t.from, t.to), (filler.0, SEG));
    let store = open(dir.path(), async_mode());
    assert_eq!(store.log_range().1, PhysicalOffset(SEG));
    let (kept, cut) = written.split_at(j);
    assert_holds_exactly(&store, kept, cut, 3);
    // The log goes on from the segment start, into new segments.
    let more: Vec<Written> = (0..300)
        .map(|i| append(&store, message("more", i, 3)))
        .collect();
    assert_eq!(more[0].at, PhysicalOffset(SEG));
    assert!(store.log_range().1 .0 > 3 * SEG);
    wait_dispatched(&store);
    drop(store);
    let store = open(dir.path(), async_mode());
    let all: Vec<Written> = kept.iter().chain(&more).cloned().collect();
    assert_holds_exactly(&store, &all, cut, 3);
}

#[test]
fn refused_offsets_change_nothing() {
    let dir = fast_tempdir();
    let store = open(dir.path(), async_mode());
    let written = write(&store, "a", 500, 3);
    let end = store.log_range().1;
    let c = cfg(dir.path(), async_mode());

    // While the store is open.
    let err = truncate_log(&c, written[100].at).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert_eq!(store.log_range().1, end);
    store.shutdown().unwrap();

    // Retention deletes the oldest segments (the disk is always "too full" at ratio 0).
    let mut full = c.clone();
    full.disk_use_ratio_limit = 0.0;
    let store = Store::open(full).unwrap();
    let start = store.run_retention_now().unwrap().log_min;
    assert!(start.0 >= SEG, "{start:?}");
    store.shutdown().unwrap();

    let before = snapshot(dir.path(), end);
    let inside = written.iter().find(|w| w.at >= start).unwrap();
    let cases = [
        (
            PhysicalOffset(inside.at.0 + 1),
            TruncateRefusal::NotRecordStart {
                before: inside.at.0,
                after: inside.at.0 + u64::from(inside.size),
            },
        ),
        (
            PhysicalOffset(start.0 - 1),
            TruncateRefusal::BelowLogStart { log_start: start.0 },
        ),
        (
            PhysicalOffset(end.0 + 1),
            TruncateRefusal::BeyondLogEnd { log_end: end.0 },
        ),
    ];
    for (offset, why) in cases {
        let err = truncate_log(&c, offset).unwrap_err();
        match &err {
            StoreError::BadTruncation { offset: o, why: w } => {
                assert_eq!((*o, *w), (offset.0, why), "{err}");
            }
            other => panic!("{offset:?}: {other}"),
        }
        assert!(err.to_string().contains(&offset.0.to_string()), "{err}");
        assert!(snapshot(dir.path(), end) == before, "{err} changed files");
    }
    assert!(truncate_log(&c, PhysicalOffset(inside.at.0 + 1))
        .unwrap_err()
        .to_string()
        .contains("not the start of a record"),);

    // The store is as it was.
    let store = open(dir.path(), async_mode());
    assert_eq!(store.log_range(), (start, end));
    let kept: Vec<Written> = written.iter().filter(|w| w.at >= start).cloned().collect();
    for w in &kept {
        assert!(found(&store, w), "{}", w.id);
    }
    for t in 0..3 {
        for q in 0..2 {
            let topic = format!("T{t}");
            let (_, max) = store.queue_range(&topic, q);
            let n = written
                .iter()
                .filter(|w| w.topic == topic && w.queue == q)
                .count();
            assert_eq!(max, QueueOffset(n as u64), "{topic}:{q}");
        }
    }
}

#[test]
fn truncating_to_the_end_is_a_no_op() {
    let dir = fast_tempdir();
    let store = open(dir.path(), async_mode());
    let written = write(&store, "a", 200, 3);
    let end = store.log_range().1;
    store.shutdown().unwrap();
    let before = snapshot(dir.path(), end);
    let t = truncate_log(&cfg(dir.path(), async_mode()), end).unwrap();
    assert_eq!(
        t,
        Truncated {
            from: end.0,
            to: end.0,
            bytes: 0
        }
    );
    assert!(snapshot(dir.path(), end) == before, "files changed");
    let store = open(dir.path(), async_mode());
    assert_eq!(store.log_range().1, end);
    assert_holds_exactly(&store, &written, &[], 3);

    // An empty log ends at 0.
    let empty = fast_tempdir();
    Store::open(cfg(empty.path(), async_mode()))
        .unwrap()
        .shutdown()
        .unwrap();
    let t = truncate_log(&cfg(empty.path(), async_mode()), PhysicalOffset(0)).unwrap();
    assert_eq!(t.bytes, 0);
}

#[test]
fn a_topic_deleted_past_the_cut_comes_back_as_it_was_at_the_cut() {
    let dir = fast_tempdir();
    let store = open(dir.path(), async_mode());
    let written = write(&store, "a", 300, 3);
    let k = 180;
    store.delete_topic("T1").unwrap();
    assert_eq!(store.queue_range("T1", 0), (QueueOffset(0), QueueOffset(0)));
    store.shutdown().unwrap();

    truncate_log(&cfg(dir.path(), async_mode()), written[k].at).unwrap();
    let store = open(dir.path(), async_mode());
    let (kept, cut) = written.split_at(k);
    assert_holds_exactly(&store, kept, cut, 3);
    // Its queues continue where they were at the cut.
    let next = append(&store, msg("T1", 1, b"again"));
    assert_eq!(
        next.queue_offset,
        QueueOffset(expected_ids(kept, "T1", 1).len() as u64)
    );
}
