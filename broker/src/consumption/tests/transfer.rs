//! Whole-state transfer: a master's export installed on a slave (the same store stands in for
//! the slave's replica of the messages), as after a promotion.

use std::time::Duration;

use rocketlog_common::QueueOffset;

use super::*;
use crate::consumption::receipt::ReceiptHandle;
use crate::consumption::snapshot::{QueueSnapshot, Snapshot};

pub(super) fn queues(image: &[u8]) -> Vec<QueueSnapshot> {
    Snapshot::decode(image).unwrap().queues
}

pub(super) fn is_invalid_image<T: std::fmt::Debug>(r: Result<T, ConsumeError>) -> bool {
    matches!(r, Err(ConsumeError::InvalidStateImage { .. }))
}

fn seq_of(handle: &str) -> u64 {
    ReceiptHandle::decode(handle, TOPIC).unwrap().seq
}

/// The master after six messages: m0..m3 delivered to GROUP, m0 and m2 acked (committed 1,
/// m1 and m3 in flight until T0 + 10 s, m4 and m5 unread); group "audit" took all six and
/// acked them. Returns the GROUP deliveries.
async fn master_with_progress(a: &Env) -> Vec<Delivery> {
    for i in 0..6 {
        a.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    a.wait_dispatched(TOPIC, 0, 6).await;
    let mut r = req();
    r.batch_size = 4;
    let d = a.recv(r).await;
    assert_eq!(bodies(&d), ["m0", "m1", "m2", "m3"]);
    a.c.ack(GROUP, TOPIC, &d[0].receipt_handle).unwrap();
    a.c.ack(GROUP, TOPIC, &d[2].receipt_handle).unwrap();
    let mut audit = req();
    audit.group = "audit".into();
    let all = a.recv(audit).await;
    let handles: Vec<&str> = all.iter().map(|d| d.receipt_handle.as_str()).collect();
    assert!(a
        .c
        .ack_many("audit", TOPIC, &handles)
        .iter()
        .all(Result::is_ok));
    d
}

#[tokio::test]
async fn a_slave_carries_on_where_the_master_left_off() {
    let a = env();
    let d = master_with_progress(&a).await;
    let b = replica(&a);
    // State of the slave's own, all of which the install replaces.
    let mut stale = req();
    stale.group = "stale".into();
    assert_eq!(b.recv(stale.clone()).await.len(), 6);
    let own = b.recv(req()).await;
    assert_eq!(own.len(), 6);

    b.c.install_state(&a.c.export_state()).unwrap();
    for group in [GROUP, "audit", "stale"] {
        assert_eq!(
            b.c.describe_group(group),
            a.c.describe_group(group),
            "{group}"
        );
    }
    assert!(b.c.describe_group("stale").is_empty());
    // The slave's own deliveries are gone: an earlier delivery (m1), or none at all (m4).
    assert!(is_invalid_handle(b.c.ack(
        GROUP,
        TOPIC,
        &own[1].receipt_handle
    )));
    assert!(is_invalid_handle(b.c.ack(
        GROUP,
        TOPIC,
        &own[4].receipt_handle
    )));

    // The master's handles ack on the slave; acked ones stay acked.
    b.c.ack(GROUP, TOPIC, &d[1].receipt_handle).unwrap();
    assert!(is_invalid_handle(b.c.ack(
        GROUP,
        TOPIC,
        &d[0].receipt_handle
    )));
    assert_eq!(b.lag(TOPIC, 0).committed_offset, QueueOffset(3));

    // Unread on the master: delivered at once, with handles above every master sequence.
    let fresh = b.recv(req()).await;
    assert_eq!(bodies(&fresh), ["m4", "m5"]);
    let master_max = d.iter().map(|x| seq_of(&x.receipt_handle)).max().unwrap();
    assert!(fresh.iter().all(|x| seq_of(&x.receipt_handle) > master_max));
    let handles: Vec<&str> = fresh.iter().map(|x| x.receipt_handle.as_str()).collect();
    assert!(b
        .c
        .ack_many(GROUP, TOPIC, &handles)
        .iter()
        .all(Result::is_ok));

    // In flight on the master: back on the slave at the master's deadline, not before.
    b.clock.advance(9_999);
    assert!(b.recv(req()).await.is_empty(), "m3 came back early");
    b.clock.advance(1);
    let again = b.recv(req()).await;
    assert_eq!(bodies(&again), ["m3"]);
    assert_eq!(again[0].delivery_attempt, 2);
    b.c.ack(GROUP, TOPIC, &again[0].receipt_handle).unwrap();
    assert_eq!(b.lag(TOPIC, 0).committed_offset, QueueOffset(6));
    let mut audit = req();
    audit.group = "audit".into();
    b.clock.advance(1_000_000);
    assert!(b.recv(audit).await.is_empty(), "an acked message came back");
    assert!(b.recv(req()).await.is_empty());
}

#[tokio::test]
async fn reopening_after_an_install_recovers_the_installed_state() {
    let a = env();
    let d = master_with_progress(&a).await;
    let mut b = replica(&a);
    let mut stale = req();
    stale.group = "stale".into();
    let own = b.recv(stale).await;
    b.c.ack("stale", TOPIC, &own[0].receipt_handle).unwrap();
    let image = a.c.export_state();
    b.c.install_state(&image).unwrap();
    let installed = b.c.describe_group(GROUP);

    // A crash (no shutdown): the install's snapshot, not the old journal, is what comes back.
    b.reopen();
    assert_eq!(queues(&b.c.export_state()), queues(&image));
    assert_eq!(b.c.describe_group(GROUP), installed);
    assert!(b.c.describe_group("stale").is_empty());
    assert!(Snapshot::decode(&b.c.export_state()).unwrap().max_seq >= seq_of(&d[3].receipt_handle));

    // Changes after the install are journaled on top of it.
    b.c.ack(GROUP, TOPIC, &d[1].receipt_handle).unwrap();
    b.reopen();
    assert_eq!(b.lag(TOPIC, 0).committed_offset, QueueOffset(3));
    b.c.ack(GROUP, TOPIC, &d[3].receipt_handle).unwrap();
    assert_eq!(b.lag(TOPIC, 0).committed_offset, QueueOffset(4));
}

#[tokio::test]
async fn bad_images_are_refused_and_change_nothing() {
    let a = env();
    let d = master_with_progress(&a).await;
    let good = a.c.export_state();
    let before = a.c.export_state();
    let version = a.c.state_version();

    let mut flipped = good.clone();
    flipped[12] ^= 1;
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
        assert!(is_invalid_image(a.c.install_state(image)), "image {i}");
    }
    assert_eq!(a.c.export_state(), before);
    assert_eq!(a.c.state_version(), version);
    a.c.ack(GROUP, TOPIC, &d[1].receipt_handle).unwrap();

    a.c.shutdown().unwrap();
    assert!(matches!(
        a.c.install_state(&good),
        Err(ConsumeError::ShutDown)
    ));
}

#[tokio::test]
async fn state_version_moves_with_every_change_and_only_then() {
    let a = env();
    let b = replica(&a);
    let v = |e: &Env| e.c.state_version();
    let start = v(&a);
    for i in 0..3 {
        a.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    a.wait_dispatched(TOPIC, 0, 3).await;
    let d = a.recv(req()).await;
    let delivered = v(&a);
    assert!(delivered > start);

    // Looking changes nothing: an empty receive, reports, exports, refused calls.
    assert!(a.recv(req()).await.is_empty());
    a.c.describe_group(GROUP);
    let image = a.c.export_state();
    assert!(is_invalid_handle(a.c.ack(GROUP, TOPIC, "garbage")));
    assert!(is_invalid_image(a.c.install_state(b"garbage")));
    assert_eq!(v(&a), delivered);

    a.c.ack(GROUP, TOPIC, &d[0].receipt_handle).unwrap();
    let acked = v(&a);
    assert!(acked > delivered);
    assert!(is_invalid_handle(a.c.ack(
        GROUP,
        TOPIC,
        &d[0].receipt_handle
    )));
    assert_eq!(v(&a), acked);
    a.c.change_invisible_duration(GROUP, TOPIC, &d[1].receipt_handle, Duration::ZERO)
        .unwrap();
    let changed = v(&a);
    assert!(changed > acked);
    a.c.reset_offset(GROUP, TOPIC, 0).unwrap();
    assert!(v(&a) > changed);

    let slave = v(&b);
    b.c.install_state(&image).unwrap();
    let installed = v(&b);
    assert!(installed > slave);
    // The same image again is still an install: the counter moves (the master ships only
    // when its own counter moved, so repeats are rare).
    b.c.install_state(&image).unwrap();
    assert!(v(&b) > installed);
}

#[tokio::test]
async fn new_deliveries_are_numbered_above_the_installed_sequences() {
    let a = env();
    a.send(TOPIC, 0, None, None, "m0");
    a.send(TOPIC, 0, None, None, "m1");
    a.wait_dispatched(TOPIC, 0, 2).await;
    let mut r = req();
    r.batch_size = 1;
    assert_eq!(a.recv(r.clone()).await.len(), 1);
    // A master whose sequences are far ahead (its clock ran ahead), with an in-flight entry
    // above even the recorded maximum.
    let mut image = Snapshot::decode(&a.c.export_state()).unwrap();
    let high = 1u64 << 62;
    image.max_seq = high;
    image.queues[0].in_flight[0].1.seq = high + 5;
    let b = replica(&a);
    b.c.install_state(&image.encode()).unwrap();
    let handle = ReceiptHandle {
        queue_id: 0,
        queue_offset: 0,
        seq: high + 5,
    }
    .encode(TOPIC);
    let fresh = b.recv(r).await;
    assert_eq!(bodies(&fresh), ["m1"]);
    assert!(seq_of(&fresh[0].receipt_handle) > high + 5);
    b.c.ack(GROUP, TOPIC, &handle).unwrap();
    b.c.ack(GROUP, TOPIC, &fresh[0].receipt_handle).unwrap();
    assert_eq!(b.lag(TOPIC, 0).committed_offset, QueueOffset(2));
}

#[tokio::test]
async fn an_install_wakes_a_parked_long_poll() {
    let a = env();
    a.send(TOPIC, 0, None, None, "m0");
    a.send(TOPIC, 0, None, None, "m1");
    a.wait_dispatched(TOPIC, 0, 2).await;
    let d = a.recv(req()).await;
    a.c.ack(GROUP, TOPIC, &d[0].receipt_handle).unwrap();
    // A nack: on the master m1 is deliverable again at once.
    a.c.change_invisible_duration(GROUP, TOPIC, &d[1].receipt_handle, Duration::ZERO)
        .unwrap();

    let b = replica(&a);
    // On the slave both are in flight for 10 s (manual clock): a long poll parks.
    assert_eq!(b.recv(req()).await.len(), 2);
    let mut r = req();
    r.long_polling_timeout = Duration::from_secs(30);
    let c = b.c.clone();
    let before = b.passes();
    let started = std::time::Instant::now();
    let waiter = tokio::spawn(async move { c.receive(r).await });
    b.wait_parked(before).await;
    b.c.install_state(&a.c.export_state()).unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(bodies(&got), ["m1"]);
    assert_eq!(got[0].delivery_attempt, 2);
    // Unwoken, the poll would have looked again only at the slave's own deadline (10 s).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woke only at a deadline"
    );
}
