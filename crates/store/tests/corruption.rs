//! Damaged commit logs: a bad tail is cut on open, a bad middle stops open with the file and
//! offset, and a damaged record is never served.

mod common;

use common::*;
use rocketlog_store::{AppendResult, QueueOffset, Store, StoreConfig, StoreError};
use std::path::Path;

const SEG: u64 = 8192;

fn fill(cfg: &StoreConfig, n: u32) -> Vec<AppendResult> {
    let store = Store::open(cfg.clone()).unwrap();
    let out: Vec<AppendResult> = (0..n)
        .map(|i| {
            let body = format!("{i:0>200}");
            store.append(msg("T", 0, body.as_bytes())).unwrap().result
        })
        .collect();
    wait_dispatched(&store);
    drop(store); // crash: the checkpoint on disk is the one written at open
    out
}

fn zeroes(path: &Path, from: u64, to: u64) -> bool {
    std::fs::read(path).unwrap()[from as usize..to as usize]
        .iter()
        .all(|b| *b == 0)
}

#[test]
fn flipped_bytes_in_the_tail_are_truncated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SEG, async_mode());
    let recs = fill(&cfg, 40);
    let last = recs.last().unwrap();
    let path = segment_path(dir.path(), SEG, last.physical_offset);
    let local = last.physical_offset.0 % SEG;
    flip_byte(&path, local + u64::from(last.size) / 2);

    let store = Store::open(cfg).unwrap();
    assert_eq!(store.log_range().1, last.physical_offset, "torn record cut");
    assert!(
        zeroes(&path, local, local + u64::from(last.size)),
        "and zeroed"
    );
    let all = read_all(&store, "T", 0);
    assert_eq!(all.len(), 39);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, m)| m.body == format!("{i:0>200}").as_bytes()));
    let p = store.append(msg("T", 0, b"after")).unwrap().result;
    assert_eq!(p.queue_offset, QueueOffset(39));
    assert_eq!(p.physical_offset, last.physical_offset);
}

#[test]
fn corruption_in_the_middle_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SEG, async_mode());
    let recs = fill(&cfg, 100); // several segments
    assert!(recs.last().unwrap().physical_offset.0 > 2 * SEG);
    let bad = &recs[5];
    let path = segment_path(dir.path(), SEG, bad.physical_offset);
    let local = bad.physical_offset.0 % SEG;
    flip_byte(&path, local + 70);

    match Store::open(cfg.clone()) {
        Err(StoreError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, path);
            assert_eq!(offset, local);
            assert!(reason.contains("followed by a valid record"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A bad record in the last segment followed by valid ones is the middle too.
    flip_byte(&path, local + 70);
    let bad = &recs[recs.len() - 3];
    let path = segment_path(dir.path(), SEG, bad.physical_offset);
    let local = bad.physical_offset.0 % SEG;
    flip_byte(&path, local + 3); // the length field
    assert!(matches!(
        Store::open(cfg),
        Err(StoreError::Corrupt { offset, .. }) if offset == local
    ));
}

#[test]
fn garbage_after_the_end_is_cut_as_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SEG, async_mode());
    let recs = fill(&cfg, 10);
    let end = recs
        .last()
        .map(|r| r.physical_offset.0 + u64::from(r.size))
        .unwrap();
    let path = segment_path(dir.path(), SEG, recs[0].physical_offset);
    let mut bytes = std::fs::read(&path).unwrap();
    // A half-written record: plausible length and magic, body never finished.
    bytes[end as usize..end as usize + 4].copy_from_slice(&300u32.to_le_bytes());
    bytes[end as usize + 4..end as usize + 8]
        .copy_from_slice(&rocketlog_store::record::MESSAGE_MAGIC.to_le_bytes());
    for (i, b) in bytes[end as usize + 8..end as usize + 150]
        .iter_mut()
        .enumerate()
    {
        *b = (i * 31 + 7) as u8;
    }
    std::fs::write(&path, bytes).unwrap();

    let store = Store::open(cfg).unwrap();
    assert_eq!(store.log_range().1 .0, end);
    assert!(zeroes(&path, end, SEG));
    assert_eq!(read_all(&store, "T", 0).len(), 10);
}

#[test]
fn clean_restart_skips_the_scan_but_never_serves_a_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SEG, async_mode());
    let store = Store::open(cfg.clone()).unwrap();
    let recs: Vec<AppendResult> = (0..20)
        .map(|i| {
            store
                .append(msg("T", 0, format!("{i:0>200}").as_bytes()))
                .unwrap()
                .result
        })
        .collect();
    store.shutdown().unwrap();
    let bad = &recs[7];
    let path = segment_path(dir.path(), SEG, bad.physical_offset);
    flip_byte(&path, bad.physical_offset.0 % SEG + 100);

    // The clean checkpoint is trusted: no scan, so the store opens.
    let store = Store::open(cfg).unwrap();
    assert_eq!(store.queue_range("T", 0).1, QueueOffset(20));
    assert!(matches!(
        store.read_at(bad.physical_offset),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.get("T", 0, QueueOffset(7)),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.read_queue("T", 0, QueueOffset(5), 10, &|_| true),
        Err(StoreError::Corrupt { .. })
    ));
    let r = store
        .read_queue("T", 0, QueueOffset(8), 100, &|_| true)
        .unwrap();
    assert_eq!(r.messages.len(), 12);
}

#[test]
fn consume_queue_entries_past_the_recovered_end_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64 << 10, async_mode());
    let store = Store::open(cfg.clone()).unwrap();
    for i in 0..20 {
        store
            .append(msg("T", 0, format!("{i}").as_bytes()))
            .unwrap();
    }
    store.shutdown().unwrap();
    let store = Store::open(cfg.clone()).unwrap();
    let recs: Vec<AppendResult> = (20..30)
        .map(|i| {
            store
                .append(msg("T", 0, format!("{i}").as_bytes()))
                .unwrap()
                .result
        })
        .collect();
    wait_dispatched(&store);
    assert_eq!(store.queue_range("T", 0).1, QueueOffset(30));
    drop(store);
    // The OS lost everything from record 25 on (never flushed): zeros on disk.
    let cut = recs[5].physical_offset.0;
    let path = segment_path(dir.path(), 64 << 10, recs[5].physical_offset);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[cut as usize..].fill(0);
    std::fs::write(&path, bytes).unwrap();

    let store = Store::open(cfg).unwrap();
    assert_eq!(store.queue_range("T", 0), (QueueOffset(0), QueueOffset(25)));
    assert!(store.get("T", 0, QueueOffset(27)).unwrap().is_none());
    let p = store.append(msg("T", 0, b"next")).unwrap().result;
    assert_eq!(
        (p.queue_offset, p.physical_offset.0),
        (QueueOffset(25), cut)
    );
    wait_dispatched(&store);
    assert_eq!(read_all(&store, "T", 0).len(), 26);
}

#[test]
fn a_page_lost_in_a_power_loss_is_a_torn_tail_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64 << 10, async_mode());
    let recs = fill(&cfg, 60); // ~44 KiB, none of it flushed as far as the checkpoint knows
                               // The kernel wrote pages back out of order and page 4 never made it: zeros on disk, with
                               // valid (never acknowledged in Sync mode) records after it.
    let path = segment_path(dir.path(), 64 << 10, recs[0].physical_offset);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4 * 4096..5 * 4096].fill(0);
    std::fs::write(&path, bytes).unwrap();
    let first_torn = recs
        .iter()
        .position(|r| r.physical_offset.0 + u64::from(r.size) > 4 * 4096)
        .unwrap();

    let store = Store::open(cfg).unwrap();
    assert_eq!(store.log_range().1, recs[first_torn].physical_offset);
    assert_eq!(read_all(&store, "T", 0).len(), first_torn);
    let end = recs
        .last()
        .map(|r| r.physical_offset.0 + u64::from(r.size))
        .unwrap();
    assert!(
        zeroes(&path, recs[first_torn].physical_offset.0, end),
        "records past the hole are cut"
    );
}
