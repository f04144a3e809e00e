//! Long polling and concurrency (real clock).

use std::collections::HashSet;
use std::time::Duration;

use super::*;

#[tokio::test]
async fn long_poll_wakes_when_a_message_is_appended() {
    let e = real_time_env();
    let c = e.c.clone();
    let mut r = req();
    r.long_polling_timeout = Duration::from_secs(30);
    let started = std::time::Instant::now();
    let before = e.passes();
    let waiter = tokio::spawn(async move { c.receive(r).await });
    e.wait_parked(before).await;
    e.send(TOPIC, 0, None, None, "late");
    let d = waiter.await.unwrap().unwrap();
    assert_eq!(bodies(&d), ["late"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "woke only at the timeout"
    );
}

#[tokio::test]
async fn long_poll_times_out_empty() {
    let e = real_time_env();
    let mut r = req();
    r.long_polling_timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    assert!(e.recv(r).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn long_poll_wakes_at_in_flight_expiry() {
    let e = real_time_env();
    e.send(TOPIC, 0, None, None, "a");
    e.wait_dispatched(TOPIC, 0, 1).await;
    let mut r = req();
    r.invisible_duration = Duration::from_millis(300);
    assert_eq!(e.recv(r.clone()).await.len(), 1);
    r.long_polling_timeout = Duration::from_secs(30);
    let started = std::time::Instant::now();
    let d = e.recv(r).await;
    assert_eq!(
        (bodies(&d), d[0].delivery_attempt),
        (vec!["a".to_owned()], 2)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn long_poll_wakes_when_an_ack_frees_a_fifo_group() {
    let e = real_time_env();
    e.send(TOPIC, 0, None, Some("A"), "a1");
    e.send(TOPIC, 0, None, Some("A"), "a2");
    e.wait_dispatched(TOPIC, 0, 2).await;
    let mut r = req();
    r.fifo = true;
    r.invisible_duration = Duration::from_secs(3600);
    let d = e.recv(r.clone()).await;
    assert_eq!(bodies(&d), ["a1"]);
    r.long_polling_timeout = Duration::from_secs(30);
    let c = e.c.clone();
    let started = std::time::Instant::now();
    let before = e.passes();
    let waiter = tokio::spawn(async move { c.receive(r).await });
    e.wait_parked(before).await;
    e.c.ack(GROUP, TOPIC, &d[0].receipt_handle).unwrap();
    let d2 = waiter.await.unwrap().unwrap();
    assert_eq!(bodies(&d2), ["a2"]);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn long_poll_wakes_when_a_nack_makes_a_message_visible() {
    let e = real_time_env();
    e.send(TOPIC, 0, None, None, "a");
    e.wait_dispatched(TOPIC, 0, 1).await;
    let mut r = req();
    r.invisible_duration = Duration::from_secs(3600);
    let d = e.recv(r.clone()).await;
    r.long_polling_timeout = Duration::from_secs(30);
    let c = e.c.clone();
    let started = std::time::Instant::now();
    let before = e.passes();
    let waiter = tokio::spawn(async move { c.receive(r).await });
    e.wait_parked(before).await;
    e.c.change_invisible_duration(GROUP, TOPIC, &d[0].receipt_handle, Duration::ZERO)
        .unwrap();
    let d2 = waiter.await.unwrap().unwrap();
    assert_eq!(
        (bodies(&d2), d2[0].delivery_attempt),
        (vec!["a".to_owned()], 2)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consumers_get_each_message_once() {
    let e = real_time_env();
    let total = 200;
    for i in 0..total {
        e.send(TOPIC, i % 4, None, None, &format!("m{i}"));
    }
    for q in 0..4 {
        e.wait_dispatched(TOPIC, q, 50).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = e.c.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut r = req();
            r.queue_count = 4;
            r.batch_size = 7;
            r.invisible_duration = Duration::from_secs(600);
            loop {
                let d = c.receive(r.clone()).await.unwrap();
                if d.is_empty() {
                    break;
                }
                for x in d {
                    let c2 = c.clone();
                    let h = x.receipt_handle.clone();
                    tokio::task::spawn_blocking(move || c2.ack(GROUP, TOPIC, &h))
                        .await
                        .unwrap()
                        .unwrap();
                    got.push(String::from_utf8(x.message.body).unwrap());
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), total as usize, "duplicates or losses");
    assert_eq!(unique.len(), total as usize);
    let lags = e.c.describe_group(GROUP);
    assert!(
        lags.iter().all(|l| l.lag == 0 && l.in_flight == 0),
        "{lags:?}"
    );
}
