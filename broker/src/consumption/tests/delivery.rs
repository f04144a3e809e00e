//! Receive, ack, redelivery, dead-lettering, filters and resets.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rocketlog_common::names::dlq_topic;
use rocketlog_common::QueueOffset;

use super::*;

#[tokio::test]
async fn acks_with_gaps_advance_committed_offset() {
    let e = env();
    for i in 0..5 {
        e.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    e.wait_dispatched(TOPIC, 0, 5).await;
    let d = e.recv(req()).await;
    assert_eq!(bodies(&d), ["m0", "m1", "m2", "m3", "m4"]);
    assert!(d.iter().all(|d| d.delivery_attempt == 1));
    assert!(d.iter().all(|d| d.invisible_until_ms == T0 + 10_000));
    let handles: HashSet<_> = d.iter().map(|d| d.receipt_handle.clone()).collect();
    assert_eq!(handles.len(), 5);
    // Everything is in flight: nothing more to take.
    assert!(e.recv(req()).await.is_empty());
    assert_eq!(e.lag(TOPIC, 0).in_flight, 5);

    e.c.ack(GROUP, TOPIC, &d[1].receipt_handle).unwrap();
    e.c.ack(GROUP, TOPIC, &d[3].receipt_handle).unwrap();
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(0));
    e.c.ack(GROUP, TOPIC, &d[0].receipt_handle).unwrap();
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(2));
    e.c.ack(GROUP, TOPIC, &d[4].receipt_handle).unwrap();
    e.c.ack(GROUP, TOPIC, &d[2].receipt_handle).unwrap();
    let lag = e.lag(TOPIC, 0);
    assert_eq!(lag.committed_offset, QueueOffset(5));
    assert_eq!(
        (lag.max_offset, lag.lag, lag.in_flight),
        (QueueOffset(5), 0, 0)
    );
}

#[tokio::test]
async fn ack_many_reports_each_entry() {
    let e = env();
    for i in 0..3 {
        e.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    e.wait_dispatched(TOPIC, 0, 3).await;
    let d = e.recv(req()).await;
    let h: Vec<&str> = d.iter().map(|d| d.receipt_handle.as_str()).collect();
    let results = e.c.ack_many(GROUP, TOPIC, &[h[0], "junk", h[2], h[0]]);
    assert!(results[0].is_ok() && results[2].is_ok());
    assert!(matches!(
        results[1],
        Err(ConsumeError::InvalidReceiptHandle { .. })
    ));
    assert!(matches!(
        results[3],
        Err(ConsumeError::InvalidReceiptHandle { .. })
    ));
    let lag = e.lag(TOPIC, 0);
    assert_eq!((lag.committed_offset, lag.in_flight), (QueueOffset(1), 1));
    assert!(e.c.ack_many(GROUP, TOPIC, &[h[1]])[0].is_ok());
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(3));
}

#[tokio::test]
async fn stale_garbage_and_foreign_handles_are_refused() {
    let e = env();
    e.send(TOPIC, 0, None, None, "a");
    e.wait_dispatched(TOPIC, 0, 1).await;
    let d = e.recv(req()).await;
    let h = &d[0].receipt_handle;
    assert!(is_invalid_handle(e.c.ack("other-group", TOPIC, h)));
    assert!(is_invalid_handle(e.c.ack(GROUP, "other-topic", h)));
    assert!(is_invalid_handle(e.c.ack(GROUP, TOPIC, "garbage")));
    assert!(is_invalid_handle(e.c.ack(GROUP, TOPIC, "")));
    e.c.ack(GROUP, TOPIC, h).unwrap();
    assert!(is_invalid_handle(e.c.ack(GROUP, TOPIC, h)));
    assert!(is_invalid_handle(e.c.change_invisible_duration(
        GROUP,
        TOPIC,
        h,
        Duration::ZERO
    )));
    assert!(is_invalid_handle(e.c.forward_to_dlq(GROUP, TOPIC, h)));
}

#[tokio::test]
async fn redelivery_after_deadline_has_next_attempt_and_new_handle() {
    let e = env();
    e.send(TOPIC, 0, None, None, "a");
    e.wait_dispatched(TOPIC, 0, 1).await;
    let first = e.recv(req()).await;
    e.clock.advance(9_999);
    assert!(
        e.recv(req()).await.is_empty(),
        "redelivered before its deadline"
    );
    e.clock.advance(1);
    let second = e.recv(req()).await;
    assert_eq!(bodies(&second), ["a"]);
    assert_eq!(second[0].delivery_attempt, 2);
    assert_ne!(second[0].receipt_handle, first[0].receipt_handle);
    assert!(is_invalid_handle(e.c.ack(
        GROUP,
        TOPIC,
        &first[0].receipt_handle
    )));
    e.c.ack(GROUP, TOPIC, &second[0].receipt_handle).unwrap();
    e.clock.advance(60_000);
    assert!(e.recv(req()).await.is_empty(), "acked message came back");
}

#[tokio::test]
async fn change_invisible_duration_replaces_handle_and_zero_nacks() {
    let e = env();
    e.send(TOPIC, 0, None, None, "a");
    e.wait_dispatched(TOPIC, 0, 1).await;
    let d = e.recv(req()).await;
    let old = &d[0].receipt_handle;
    let longer =
        e.c.change_invisible_duration(GROUP, TOPIC, old, Duration::from_secs(60))
            .unwrap();
    assert_ne!(&longer, old);
    assert!(is_invalid_handle(e.c.ack(GROUP, TOPIC, old)));
    e.clock.advance(30_000);
    assert!(e.recv(req()).await.is_empty(), "extension ignored");
    let nacked =
        e.c.change_invisible_duration(GROUP, TOPIC, &longer, Duration::ZERO)
            .unwrap();
    let again = e.recv(req()).await;
    assert_eq!(bodies(&again), ["a"]);
    assert_eq!(again[0].delivery_attempt, 2);
    assert!(is_invalid_handle(e.c.ack(GROUP, TOPIC, &nacked)));
    assert!(matches!(
        e.c.change_invisible_duration(
            GROUP,
            TOPIC,
            &again[0].receipt_handle,
            Duration::from_secs(13 * 3600)
        ),
        Err(ConsumeError::IllegalInvisibleTime { .. })
    ));
}

#[tokio::test]
async fn dead_letter_after_max_attempts() {
    let e = env();
    e.send(TOPIC, 0, Some("tagX"), None, "poison");
    e.send(TOPIC, 0, None, None, "fine");
    e.wait_dispatched(TOPIC, 0, 2).await;
    let mut r = req();
    r.retry_policy = RetryPolicy { max_attempts: 2 };
    let d = e.recv(r.clone()).await;
    assert_eq!(bodies(&d), ["poison", "fine"]);
    e.c.ack(GROUP, TOPIC, &d[1].receipt_handle).unwrap();
    e.clock.advance(10_000);
    let d2 = e.recv(r.clone()).await;
    assert_eq!(
        (bodies(&d2), d2[0].delivery_attempt),
        (vec!["poison".to_owned()], 2)
    );
    e.clock.advance(10_000);
    // A third delivery would exceed max_attempts: the message moves to the DLQ instead.
    assert!(e.recv(r.clone()).await.is_empty());
    assert!(is_invalid_handle(e.c.ack(
        GROUP,
        TOPIC,
        &d2[0].receipt_handle
    )));
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(2));

    let dlq = dlq_topic(GROUP);
    e.wait_dispatched(&dlq, 0, 1).await;
    let copy = e.store.get(&dlq, 0, QueueOffset(0)).unwrap().unwrap();
    assert_eq!(copy.body, b"poison");
    assert_eq!(copy.message_id, "id-poison");
    assert_eq!(copy.reconsume_times, 2);
    assert_eq!(copy.tag.as_deref(), Some("tagX"));
    let props: HashMap<_, _> = copy.properties.iter().cloned().collect();
    assert_eq!(props[DLQ_ORIGIN_TOPIC_PROPERTY], TOPIC);
    assert_eq!(props[DLQ_ORIGIN_MESSAGE_ID_PROPERTY], "id-poison");
    assert_eq!(props["user"], "prop");
    // The DLQ topic is consumable like any other.
    let mut from_dlq = req();
    from_dlq.topic = dlq.clone();
    assert_eq!(bodies(&e.recv(from_dlq).await), ["poison"]);
}

#[tokio::test]
async fn dead_letter_with_a_sync_flushing_store() {
    let e = env_full(|s| s.flush_mode = rocketlog_store::FlushMode::Sync, |_| {});
    e.send(TOPIC, 0, None, None, "a");
    e.wait_dispatched(TOPIC, 0, 1).await;
    let mut r = req();
    r.retry_policy = RetryPolicy { max_attempts: 1 };
    assert_eq!(e.recv(r.clone()).await.len(), 1);
    e.clock.advance(10_000);
    assert!(e.recv(r).await.is_empty());
    e.wait_dispatched(&dlq_topic(GROUP), 0, 1).await;
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(1));
}

#[tokio::test]
async fn forward_to_dlq_on_demand() {
    let e = env();
    e.send(TOPIC, 0, None, None, "a");
    e.wait_dispatched(TOPIC, 0, 1).await;
    let d = e.recv(req()).await;
    let h = &d[0].receipt_handle;
    e.c.forward_to_dlq(GROUP, TOPIC, h).unwrap();
    assert!(is_invalid_handle(e.c.ack(GROUP, TOPIC, h)));
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(1));
    e.wait_dispatched(&dlq_topic(GROUP), 0, 1).await;
    let copy = e
        .store
        .get(&dlq_topic(GROUP), 0, QueueOffset(0))
        .unwrap()
        .unwrap();
    assert_eq!(copy.reconsume_times, 1);
    e.clock.advance(3_600_000);
    assert!(e.recv(req()).await.is_empty());
}

#[tokio::test]
async fn tag_filter_skips_and_commits_past_non_matching() {
    let e = env();
    for (tag, body) in [
        (Some("a"), "1"),
        (Some("b"), "2"),
        (None, "3"),
        (Some("c"), "4"),
    ] {
        e.send(TOPIC, 0, tag, None, body);
    }
    e.wait_dispatched(TOPIC, 0, 4).await;
    let mut r = req();
    r.filter = FilterExpression::parse("a || c").unwrap();
    let d = e.recv(r.clone()).await;
    assert_eq!(bodies(&d), ["1", "4"]);
    for x in &d {
        e.c.ack(GROUP, TOPIC, &x.receipt_handle).unwrap();
    }
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(4));
    // Skipped messages are consumed for this group: a match-all receive sees nothing.
    assert!(e.recv(req()).await.is_empty());
}

#[tokio::test]
async fn redelivery_under_a_changed_filter_drops_the_message() {
    let e = env();
    e.send(TOPIC, 0, Some("old"), None, "a");
    e.wait_dispatched(TOPIC, 0, 1).await;
    assert_eq!(e.recv(req()).await.len(), 1);
    e.clock.advance(10_000);
    let mut r = req();
    r.filter = FilterExpression::parse("new").unwrap();
    assert!(e.recv(r).await.is_empty());
    let lag = e.lag(TOPIC, 0);
    assert_eq!((lag.committed_offset, lag.in_flight), (QueueOffset(1), 0));
}

#[tokio::test]
async fn round_robin_serves_every_queue_whatever_queue_is_asked() {
    let e = env();
    for q in 0..4 {
        e.send(TOPIC, q, None, None, &format!("q{q}"));
        e.wait_dispatched(TOPIC, q, 1).await;
    }
    let mut r = req();
    r.queue_count = 4;
    r.queue_id = Some(0);
    r.batch_size = 1;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(bodies(&e.recv(r.clone()).await));
    }
    got.sort();
    assert_eq!(got, ["q0", "q1", "q2", "q3"]);
}

#[tokio::test]
async fn reset_offset_by_time_rewinds() {
    let e = env();
    for i in 0..3 {
        e.send(TOPIC, 0, None, None, &format!("m{i}"));
    }
    e.wait_dispatched(TOPIC, 0, 3).await;
    for x in e.recv(req()).await {
        e.c.ack(GROUP, TOPIC, &x.receipt_handle).unwrap();
    }
    assert!(e.recv(req()).await.is_empty());
    let reset = e.c.reset_offset(GROUP, TOPIC, 0).unwrap();
    assert_eq!(reset, vec![(0, QueueOffset(0))]);
    assert_eq!(bodies(&e.recv(req()).await), ["m0", "m1", "m2"]);
}

#[tokio::test]
async fn invalid_requests_are_refused() {
    let e = env();
    let mut r = req();
    r.batch_size = 0;
    assert!(matches!(
        e.c.receive(r).await,
        Err(ConsumeError::IllegalBatchSize { .. })
    ));
    let mut r = req();
    r.invisible_duration = Duration::from_secs(13 * 3600);
    assert!(matches!(
        e.c.receive(r).await,
        Err(ConsumeError::IllegalInvisibleTime { .. })
    ));
    let mut r = req();
    r.queue_count = 0;
    assert!(matches!(
        e.c.receive(r).await,
        Err(ConsumeError::NoQueues { .. })
    ));
}

#[tokio::test]
async fn latest_position_skips_existing_messages() {
    let e = env_with(|c| c.initial_position = InitialPosition::Latest);
    e.send(TOPIC, 0, None, None, "old");
    e.wait_dispatched(TOPIC, 0, 1).await;
    assert!(e.recv(req()).await.is_empty());
    e.send(TOPIC, 0, None, None, "new");
    e.wait_dispatched(TOPIC, 0, 2).await;
    assert_eq!(bodies(&e.recv(req()).await), ["new"]);
}
