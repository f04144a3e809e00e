//! A replica appends the bytes its master wrote, at the same offsets: after shipping, both logs
//! are byte-identical segment by segment, the replica's consume queues and index answer as the
//! master's do, and bytes that do not continue the replica's log exactly are refused.

mod common;

use common::*;
use rocketlog_store::{FlushMode, PhysicalOffset, Store, StoreError};

const SEG: u64 = 64 << 10;

/// Ships everything the master has that the replica lacks, in chunks of at most `chunk` bytes.
fn ship(master: &Store, replica: &Store, chunk: usize) -> usize {
    let mut chunks = 0;
    loop {
        let at = replica.log_range().1;
        let bytes = master.read_log_bytes(at, chunk).unwrap();
        if bytes.is_empty() {
            return chunks;
        }
        replica
            .append_replicated(at, &bytes)
            .unwrap()
            .wait_durable()
            .unwrap();
        chunks += 1;
    }
}

fn segments(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn open(dir: &std::path::Path, mode: FlushMode, replica: bool) -> Store {
    let store = Store::open(config(dir, SEG, mode)).unwrap();
    store.set_replica(replica);
    store
}

#[test]
fn shipped_logs_are_identical_and_the_replica_serves_them() {
    for mode in [FlushMode::Sync, async_mode()] {
        let (md, rd) = (fast_tempdir(), fast_tempdir());
        let master = open(md.path(), mode, false);
        let replica = open(rd.path(), mode, true);
        // Enough to fill several segments, in several topics and queues, with varied sizes so
        // that fillers of many lengths close the segments.
        for i in 0..600u32 {
            let body = vec![b'a' + (i % 26) as u8; 10 + (i as usize * 37) % 900];
            let mut m = msg(&format!("T{}", i % 3), i % 4, &body);
            m.message_id = format!("id-{i}");
            m.keys = vec![format!("key-{i}")];
            master.append(m).unwrap().wait_durable().unwrap();
            if i % 97 == 0 && i < 400 {
                // Catch up part way, then fall behind again.
                ship(&master, &replica, 4096);
            }
        }
        let chunks = ship(&master, &replica, 10_000);
        assert!(chunks > 1, "the backlog should take several chunks");
        assert_eq!(replica.log_range(), master.log_range());
        wait_dispatched(&master);
        wait_dispatched(&replica);
        assert!(
            segments(md.path()).len() > 3,
            "the load should roll segments"
        );
        master.shutdown().unwrap();
        replica.shutdown().unwrap();
        assert!(
            segments(md.path()) == segments(rd.path()),
            "master and replica segments differ ({mode:?})"
        );

        // Reopened, the replica serves what the master stored.
        let master = open(md.path(), mode, false);
        let replica = open(rd.path(), mode, true);
        for topic in ["T0", "T1", "T2"] {
            for q in 0..4 {
                assert_eq!(read_all(&master, topic, q), read_all(&replica, topic, q));
            }
        }
        let found = replica.lookup_message_id("id-599").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].keys, vec!["key-599".to_owned()]);
        assert!(matches!(
            replica.append(msg("T0", 0, b"local")),
            Err(StoreError::Replica)
        ));
        // A replica promoted to master continues every queue where its master left off.
        replica.set_replica(false);
        let next = replica
            .append(msg("T0", 0, b"after"))
            .unwrap()
            .wait_durable()
            .unwrap();
        assert_eq!(next.queue_offset, master.queue_range("T0", 0).1);
    }
}

#[test]
fn chunks_that_do_not_continue_the_log_are_refused() {
    let (md, rd) = (fast_tempdir(), fast_tempdir());
    let master = open(md.path(), async_mode(), false);
    let replica = open(rd.path(), async_mode(), true);
    for i in 0..20u32 {
        master
            .append(msg("T", 0, format!("m{i}").as_bytes()))
            .unwrap();
    }
    let all = master.read_log_bytes(PhysicalOffset(0), 1 << 20).unwrap();
    let first_len = u32::from_le_bytes(all[..4].try_into().unwrap()) as usize;

    // Not at the replica's end.
    let err = replica
        .append_replicated(PhysicalOffset(first_len as u64), &all[first_len..])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::BadReplicaChunk { offset, .. } if offset == first_len as u64),
        "{err}"
    );
    // Half a record.
    let err = replica
        .append_replicated(PhysicalOffset(0), &all[..first_len - 1])
        .unwrap_err();
    assert!(matches!(err, StoreError::BadReplicaChunk { .. }), "{err}");
    // One flipped bit.
    let mut bad = all.clone();
    bad[first_len + 70] ^= 1;
    let err = replica
        .append_replicated(PhysicalOffset(0), &bad)
        .unwrap_err();
    assert!(err.to_string().contains("crc"), "{err}");
    // A record shipped to the wrong place: valid bytes, wrong position.
    let second = &all[first_len..];
    let err = replica
        .append_replicated(PhysicalOffset(0), second)
        .unwrap_err();
    assert!(matches!(err, StoreError::BadReplicaChunk { .. }), "{err}");
    // Nothing was written by the refusals; the real thing is accepted.
    assert_eq!(replica.log_range().1, PhysicalOffset(0));
    replica.append_replicated(PhysicalOffset(0), &all).unwrap();
    assert_eq!(replica.log_range(), master.log_range());
    // The same records again (a duplicate chunk) no longer start at the end.
    assert!(replica.append_replicated(PhysicalOffset(0), &all).is_err());
}
