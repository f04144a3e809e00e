//! State surviving restarts.

use std::time::Duration;

use rocketlog_common::QueueOffset;

use super::*;

#[tokio::test]
async fn restart_after_shutdown_keeps_acks_and_in_flight_deadlines() {
    let mut e = env();
    for i in 0..4 {
        e.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    e.wait_dispatched(TOPIC, 0, 4).await;
    let d = e.recv(req()).await;
    e.c.ack(GROUP, TOPIC, &d[0].receipt_handle).unwrap();
    e.c.ack(GROUP, TOPIC, &d[2].receipt_handle).unwrap();
    e.c.shutdown().unwrap();
    assert!(matches!(
        e.c.ack(GROUP, TOPIC, &d[1].receipt_handle),
        Err(ConsumeError::ShutDown)
    ));
    e.reopen();
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(1));
    assert!(
        e.recv(req()).await.is_empty(),
        "in-flight messages came back early"
    );
    // Handles from before the restart still work.
    e.c.ack(GROUP, TOPIC, &d[1].receipt_handle).unwrap();
    e.clock.advance(10_000);
    let again = e.recv(req()).await;
    assert_eq!(bodies(&again), ["m3"]);
    assert_eq!(again[0].delivery_attempt, 2);
}

#[tokio::test]
async fn restart_without_shutdown_keeps_acks() {
    let mut e = env();
    for i in 0..3 {
        e.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    e.wait_dispatched(TOPIC, 0, 3).await;
    let d = e.recv(req()).await;
    e.c.ack(GROUP, TOPIC, &d[1].receipt_handle).unwrap();
    let changed =
        e.c.change_invisible_duration(GROUP, TOPIC, &d[2].receipt_handle, Duration::from_secs(100))
            .unwrap();
    // Crash: no shutdown, the old engine is simply dropped.
    e.reopen();
    e.clock.advance(10_000);
    let again = e.recv(req()).await;
    assert_eq!(
        bodies(&again),
        ["m0"],
        "acked or extended message redelivered"
    );
    e.c.ack(GROUP, TOPIC, &changed).unwrap();
    e.c.ack(GROUP, TOPIC, &again[0].receipt_handle).unwrap();
    e.reopen();
    e.clock.advance(1_000_000);
    assert!(e.recv(req()).await.is_empty());
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(3));
}

#[tokio::test]
async fn snapshots_rotate_the_journal_and_restore_state() {
    let mut e = env_with(|c| c.snapshot_after_bytes = 1);
    for i in 0..20 {
        e.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    e.wait_dispatched(TOPIC, 0, 20).await;
    let d = e.recv(req()).await;
    for (i, x) in d.iter().enumerate() {
        if i % 2 == 0 {
            e.c.ack(GROUP, TOPIC, &x.receipt_handle).unwrap();
        }
    }
    let journals = std::fs::read_dir(&e.state_dir)
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("journal.")
        })
        .count();
    assert!(journals <= 2, "{journals} journal generations left behind");
    e.reopen();
    e.clock.advance(10_000);
    let again = e.recv(req()).await;
    let want: Vec<String> = (0..20)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(bodies(&again), want);
}

#[tokio::test]
async fn restart_of_store_and_engine_keeps_acks() {
    let mut e = env();
    for i in 0..4 {
        e.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    e.wait_dispatched(TOPIC, 0, 4).await;
    let mut r = req();
    r.batch_size = 3;
    let d = e.recv(r.clone()).await;
    e.c.ack(GROUP, TOPIC, &d[0].receipt_handle).unwrap();
    e.c.ack(GROUP, TOPIC, &d[2].receipt_handle).unwrap();
    e.restart_all();
    e.wait_dispatched(TOPIC, 0, 4).await;
    // m3 was never delivered; m1 is still invisible.
    let fresh = e.recv(r.clone()).await;
    assert_eq!(bodies(&fresh), ["m3"]);
    e.c.ack(GROUP, TOPIC, &fresh[0].receipt_handle).unwrap();
    e.clock.advance(10_000);
    let again = e.recv(r).await;
    assert_eq!(bodies(&again), ["m1"]);
    assert_eq!(again[0].delivery_attempt, 2);
}

/// The journal generations in the state directory.
fn journal_generations(e: &Env) -> Vec<u64> {
    journal::list(&e.state_dir)
        .unwrap()
        .into_iter()
        .map(|(gen, _)| gen)
        .collect()
}

#[tokio::test]
async fn a_failed_journal_write_is_repaired_without_a_restart() {
    let mut e = env();
    for i in 0..3 {
        e.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    e.wait_dispatched(TOPIC, 0, 3).await;
    let d = e.recv(req()).await;
    assert_eq!(d.len(), 3);
    // The next generation is /dev/full: every write to it fails with ENOSPC, as on a full disk.
    let next = journal_generations(&e).last().unwrap() + 1;
    std::os::unix::fs::symlink("/dev/full", journal::journal_path(&e.state_dir, next)).unwrap();
    e.c.snapshot().unwrap();
    // While the disk stays full, a repair cannot write its snapshot either.
    let tmp = e.state_dir.join("snapshot.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();

    let failed = e.c.ack(GROUP, TOPIC, &d[0].receipt_handle);
    assert!(
        matches!(failed, Err(ConsumeError::JournalFailed { .. })),
        "{failed:?}"
    );
    // Every state change now fails fast with the same retriable error; none is half made.
    for _ in 0..3 {
        assert!(matches!(
            e.c.ack(GROUP, TOPIC, &d[1].receipt_handle),
            Err(ConsumeError::JournalFailed { .. })
        ));
        assert!(matches!(
            e.c.receive(req()).await,
            Err(ConsumeError::JournalFailed { .. })
        ));
    }

    // Space returns: the engine repairs the journal by itself (at most a second later).
    std::fs::remove_file(&tmp).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match e.c.ack(GROUP, TOPIC, &d[0].receipt_handle) {
            Ok(()) => break,
            Err(ConsumeError::JournalFailed { .. }) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "journal never repaired"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    e.c.ack(GROUP, TOPIC, &d[1].receipt_handle).unwrap();
    assert!(
        !journal_generations(&e).contains(&next),
        "the failed generation was left behind"
    );
    // A crash after the repair keeps both acks and the delivery still in flight.
    e.reopen();
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(2));
    assert!(e.recv(req()).await.is_empty(), "m2 is still in flight");
    e.clock.advance(10_000);
    assert_eq!(bodies(&e.recv(req()).await), ["m2"]);
}

#[tokio::test]
async fn committed_offsets_survive_a_crash_and_restart_receives_there() {
    let mut e = env();
    for i in 0..5 {
        e.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    e.wait_dispatched(TOPIC, 0, 5).await;
    assert_eq!(e.c.committed_offset(GROUP, TOPIC, 0), None);
    // Something in flight is dropped by a commit.
    let d = e.recv(req()).await;
    assert!(!d.is_empty());
    e.c.commit_offset(GROUP, TOPIC, 0, QueueOffset(3)).unwrap();
    assert_eq!(e.c.committed_offset(GROUP, TOPIC, 0), Some(QueueOffset(3)));
    // Crash: no shutdown.
    e.reopen();
    assert_eq!(e.c.committed_offset(GROUP, TOPIC, 0), Some(QueueOffset(3)));
    assert_eq!(bodies(&e.recv(req()).await), ["m3", "m4"]);
    // Moving back is allowed too (a seek committed by a pull consumer).
    e.c.commit_offset(GROUP, TOPIC, 0, QueueOffset(1)).unwrap();
    e.reopen();
    assert_eq!(e.c.committed_offset(GROUP, TOPIC, 0), Some(QueueOffset(1)));
    assert_eq!(e.c.committed_offset(GROUP, TOPIC, 1), None);
}
