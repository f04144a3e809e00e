//! Merging a slave's acks back into its master (`merge_finished`): the slave served consumers
//! from its last installed copy while the master was down, then sent its state back.

use std::time::Duration;

use rocketlog_common::QueueOffset;

use super::transfer::{is_invalid_image, queues};
use super::*;
use crate::consumption::journal::StateKey;
use crate::consumption::snapshot::{QueueSnapshot, Snapshot};

/// A master and a slave whose consumers went separate ways over m0..m11 on queue 0.
struct Diverged {
    m: Env,
    s: Env,
    /// The master's copy the slave installed before they parted.
    copy: Vec<u8>,
    /// The master's deliveries of m0..m3, before the copy.
    first: Vec<Delivery>,
    /// The master's deliveries of m4..m8, after the copy.
    second: Vec<Delivery>,
}

/// Newly finished offsets when the slave of [`diverged`] is merged into its master: m2, m4,
/// m5, m7, m9 of GROUP, and m0..m2 and m4 of "fresh".
const MERGED: u64 = 5 + 4;

/// - Before the copy, the master delivered m0..m3 to GROUP and acked m0 and m1.
/// - On the slave, GROUP acked m2 and m3 (with the master's handles), m4 and m5, and out of
///   order m7 and m9 (slave: committed 6, m6 and m8 in flight); group "fresh", which the
///   master never saw, took all twelve and acked m0..m2 and m4 (committed 3).
/// - On the master meanwhile, GROUP acked m3, then 1 s later took m4..m8 and acked m6
///   (master: committed 2, m2 in flight until T0 + 10 s, m4, m5, m7, m8 until T0 + 11 s).
async fn diverged() -> Diverged {
    let m = env();
    for i in 0..12 {
        m.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    m.wait_dispatched(TOPIC, 0, 12).await;
    let mut r = req();
    r.batch_size = 4;
    let first = m.recv(r).await;
    assert_eq!(bodies(&first), ["m0", "m1", "m2", "m3"]);
    m.c.ack(GROUP, TOPIC, &first[0].receipt_handle).unwrap();
    m.c.ack(GROUP, TOPIC, &first[1].receipt_handle).unwrap();
    let copy = m.c.export_state();
    let s = replica(&m);
    s.c.install_state(&copy).unwrap();

    s.c.ack(GROUP, TOPIC, &first[2].receipt_handle).unwrap();
    s.c.ack(GROUP, TOPIC, &first[3].receipt_handle).unwrap();
    let mut r = req();
    r.batch_size = 6;
    let on_slave = s.recv(r).await;
    assert_eq!(bodies(&on_slave), ["m4", "m5", "m6", "m7", "m8", "m9"]);
    for i in [0, 1, 3, 5] {
        s.c.ack(GROUP, TOPIC, &on_slave[i].receipt_handle).unwrap();
    }
    assert_eq!(s.lag(TOPIC, 0).committed_offset, QueueOffset(6));
    let mut fresh = req();
    fresh.group = "fresh".into();
    let all = s.recv(fresh).await;
    assert_eq!(all.len(), 12);
    for i in [0, 1, 2, 4] {
        s.c.ack("fresh", TOPIC, &all[i].receipt_handle).unwrap();
    }

    m.c.ack(GROUP, TOPIC, &first[3].receipt_handle).unwrap();
    m.clock.advance(1_000);
    let mut r = req();
    r.batch_size = 5;
    let second = m.recv(r).await;
    assert_eq!(bodies(&second), ["m4", "m5", "m6", "m7", "m8"]);
    m.c.ack(GROUP, TOPIC, &second[2].receipt_handle).unwrap();
    assert_eq!(m.lag(TOPIC, 0).committed_offset, QueueOffset(2));
    Diverged {
        m,
        s,
        copy,
        first,
        second,
    }
}

fn committed(e: &Env, group: &str) -> QueueOffset {
    e.c.describe_group(group)
        .into_iter()
        .find(|l| l.topic == TOPIC && l.queue_id == 0)
        .unwrap()
        .committed_offset
}

/// Bytes in the journal generations of the state directory.
fn journal_bytes(e: &Env) -> u64 {
    std::fs::read_dir(&e.state_dir)
        .unwrap()
        .map(Result::unwrap)
        .filter(|f| f.file_name().to_string_lossy().starts_with("journal."))
        .map(|f| f.metadata().unwrap().len())
        .sum()
}

#[tokio::test]
async fn a_merge_finishes_what_either_side_acked_and_nothing_else() {
    let Diverged {
        m,
        s,
        first,
        second,
        ..
    } = diverged().await;
    let version = m.c.state_version();
    assert_eq!(m.c.merge_finished(&s.c.export_state()).unwrap(), MERGED);
    assert!(m.c.state_version() > version);
    // m0..m5 and m7 came from the slave, m3 and m6 from the master: 0..8 is contiguous.
    assert_eq!(committed(&m, GROUP), QueueOffset(8));
    assert_eq!(committed(&m, "fresh"), QueueOffset(3));
    // In flight on the master, acked on the slave: gone, so the handles are stale.
    for d in [&first[2], &second[0], &second[1], &second[3]] {
        assert!(is_invalid_handle(m.c.ack(GROUP, TOPIC, &d.receipt_handle)));
    }

    // Acked on neither: the unread ones now, the master's in-flight m8 at its own deadline.
    let unread = m.recv(req()).await;
    assert_eq!(bodies(&unread), ["m10", "m11"]);
    for d in &unread {
        m.c.ack(GROUP, TOPIC, &d.receipt_handle).unwrap();
    }
    m.clock.advance(9_000);
    assert!(m.recv(req()).await.is_empty(), "m2 came back (T0 + 10 s)");
    m.clock.advance(999);
    assert!(m.recv(req()).await.is_empty(), "m8 came back early");
    m.clock.advance(1);
    let again = m.recv(req()).await;
    assert_eq!(bodies(&again), ["m8"]);
    assert_eq!(again[0].delivery_attempt, 2);
    m.c.ack(GROUP, TOPIC, &again[0].receipt_handle).unwrap();
    assert_eq!(committed(&m, GROUP), QueueOffset(12));

    // The group only the slave served carries on after what it acked there.
    let mut fresh = req();
    fresh.group = "fresh".into();
    let rest = m.recv(fresh.clone()).await;
    assert_eq!(
        bodies(&rest),
        ["m3", "m5", "m6", "m7", "m8", "m9", "m10", "m11"]
    );
    m.clock.advance(1_000_000);
    assert_eq!(m.recv(fresh).await.len(), 8, "in flight comes back whole");
    assert!(m.recv(req()).await.is_empty(), "an acked message came back");
}

#[tokio::test]
async fn merging_the_same_or_an_older_image_changes_nothing() {
    let Diverged { m, s, copy, .. } = diverged().await;
    let before_merge = m.c.export_state();
    let image = s.c.export_state();
    assert_eq!(m.c.merge_finished(&image).unwrap(), MERGED);
    let merged = m.c.export_state();
    let version = m.c.state_version();
    // Again; the copy the slave started from; the master's own state from before.
    for (i, old) in [&image, &copy, &before_merge].into_iter().enumerate() {
        assert_eq!(m.c.merge_finished(old).unwrap(), 0, "image {i}");
    }
    assert_eq!(m.c.export_state(), merged);
    assert_eq!(m.c.state_version(), version);
    // The other way round is a merge too: the slave learns the master's m6 (m3 it acked
    // itself), which joins its m0..m5 and m7.
    assert_eq!(s.c.merge_finished(&merged).unwrap(), 1);
    assert_eq!(committed(&s, GROUP), QueueOffset(8));
}

#[tokio::test]
async fn a_merged_state_survives_reopening() {
    let Diverged { mut m, s, .. } = diverged().await;
    m.c.merge_finished(&s.c.export_state()).unwrap();
    let merged = queues(&m.c.export_state());
    // A crash (no shutdown): the journal alone brings the merge back.
    m.reopen();
    assert_eq!(queues(&m.c.export_state()), merged);
    assert_eq!(committed(&m, GROUP), QueueOffset(8));
    let unread = m.recv(req()).await;
    assert_eq!(bodies(&unread), ["m10", "m11"]);
    for d in &unread {
        m.c.ack(GROUP, TOPIC, &d.receipt_handle).unwrap();
    }
    m.clock.advance(10_000);
    assert_eq!(bodies(&m.recv(req()).await), ["m8"]);
    assert_eq!(m.c.merge_finished(&s.c.export_state()).unwrap(), 0);
}

#[tokio::test]
async fn bad_images_are_refused_by_a_merge_and_change_nothing() {
    let Diverged { m, s, .. } = diverged().await;
    let good = s.c.export_state();
    let before = m.c.export_state();
    let version = m.c.state_version();
    let mut flipped = good.clone();
    flipped[20] ^= 1;
    let mut twice = Snapshot::decode(&good).unwrap();
    twice.queues.push(twice.queues[0].clone());
    let mut far = Snapshot::decode(&good).unwrap();
    far.queues[0].committed = u64::MAX;
    let mut reversed = Snapshot::decode(&good).unwrap();
    reversed.queues[0].done.push((9, 7));
    let bad = [
        Vec::new(),
        b"garbage".to_vec(),
        good[..good.len() - 1].to_vec(),
        flipped,
        twice.encode(),
        far.encode(),
        reversed.encode(),
    ];
    for (i, image) in bad.iter().enumerate() {
        assert!(is_invalid_image(m.c.merge_finished(image)), "image {i}");
    }
    assert_eq!(m.c.export_state(), before);
    assert_eq!(m.c.state_version(), version);
    assert_eq!(m.c.merge_finished(&good).unwrap(), MERGED);

    m.c.shutdown().unwrap();
    assert!(matches!(
        m.c.merge_finished(&good),
        Err(ConsumeError::ShutDown)
    ));
}

#[tokio::test]
async fn a_merge_wakes_a_long_poll_waiting_on_a_fifo_group() {
    let m = env();
    m.send(TOPIC, 0, None, Some("A"), "a1");
    m.send(TOPIC, 0, None, Some("A"), "a2");
    m.wait_dispatched(TOPIC, 0, 2).await;
    let s = replica(&m);
    let mut r = req();
    r.fifo = true;
    let on_slave = s.recv(r.clone()).await;
    assert_eq!(bodies(&on_slave), ["a1"]);
    s.c.ack(GROUP, TOPIC, &on_slave[0].receipt_handle).unwrap();
    // On the master a1 is in flight for 10 s (manual clock) and holds a2 back: a poll parks.
    assert_eq!(bodies(&m.recv(r.clone()).await), ["a1"]);
    r.long_polling_timeout = Duration::from_secs(30);
    let c = m.c.clone();
    let before = m.passes();
    let started = std::time::Instant::now();
    let waiter = tokio::spawn(async move { c.receive(r).await });
    m.wait_parked(before).await;
    assert_eq!(m.c.merge_finished(&s.c.export_state()).unwrap(), 1);
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(bodies(&got), ["a2"]);
    // Unwoken, the poll would have looked again only at a1's deadline (10 s).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woke only at a deadline"
    );
}

#[tokio::test]
async fn a_gap_past_the_bound_is_merged_as_ranges() {
    let mut m = env();
    for i in 0..3 {
        m.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    m.wait_dispatched(TOPIC, 0, 3).await;
    let mut r = req();
    r.batch_size = 1;
    let d = m.recv(r).await;
    // A slave that went on for millions of offsets, and one that served another group.
    let queue = |group: &str, committed: u64, done: Vec<(u64, u64)>| QueueSnapshot {
        key: StateKey {
            group: group.into(),
            topic: TOPIC.into(),
        },
        queue_id: 0,
        committed,
        done,
        in_flight: vec![],
    };
    let image = Snapshot {
        journal_gen: 0,
        max_seq: 0,
        queues: vec![
            queue(GROUP, 3_000_000, vec![(3_000_002, 9_000_000)]),
            queue("other", 7_000_000, vec![]),
        ],
    }
    .encode();
    let journal = journal_bytes(&m);
    assert_eq!(
        m.c.merge_finished(&image).unwrap(),
        3_000_000 + 5_999_998 + 7_000_000
    );
    assert!(
        journal_bytes(&m) - journal < 1_000,
        "journaled offset by offset"
    );
    assert!(is_invalid_handle(m.c.ack(
        GROUP,
        TOPIC,
        &d[0].receipt_handle
    )));
    let merged = queues(&m.c.export_state());
    assert_eq!(
        merged
            .iter()
            .map(|q| (q.key.group.as_str(), q.committed, q.done.clone()))
            .collect::<Vec<_>>(),
        [
            (GROUP, 3_000_000, vec![(3_000_002, 9_000_000)]),
            ("other", 7_000_000, vec![]),
        ]
    );
    m.reopen();
    assert_eq!(queues(&m.c.export_state()), merged);
    assert_eq!(m.c.merge_finished(&image).unwrap(), 0);
}
