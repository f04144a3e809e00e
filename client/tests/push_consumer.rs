//! PushConsumer against a real in-process broker.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{poll_until, unique, Cluster};
use rocketlog_client::{FilterExpression, Message, MessageView, Producer, PushConsumer};

fn count(set: &Mutex<HashSet<String>>) -> usize {
    set.lock().map(|s| s.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_every_message_within_the_concurrency_bound() {
    let cluster = Cluster::start().await;
    let topic = unique("t-push");
    let handled: Arc<Mutex<HashSet<String>>> = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (h, r, p) = (handled.clone(), running.clone(), peak.clone());
    let consumer = PushConsumer::builder(cluster.config(), unique("g-push"))
        .subscribe(&topic, FilterExpression::all())
        .concurrency(3)
        .handler(move |m: MessageView| {
            let (h, r, p) = (h.clone(), r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                h.lock().unwrap().insert(m.message_id().to_owned());
                r.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), std::io::Error>(())
            }
        })
        .build()
        .await
        .expect("consumer starts");
    let producer = Producer::builder(cluster.config()).build().await.unwrap();
    let mut sent = HashSet::new();
    for i in 0..40 {
        let r = producer
            .send(
                Message::builder(&topic)
                    .body(format!("{i}"))
                    .build()
                    .unwrap(),
            )
            .await
            .unwrap();
        sent.insert(r.message_id().to_owned());
    }
    let all = poll_until(Duration::from_secs(40), || async {
        (count(&handled) >= sent.len()).then_some(())
    })
    .await;
    assert!(
        all.is_some(),
        "handled {} of {}",
        count(&handled),
        sent.len()
    );
    assert_eq!(*handled.lock().unwrap(), sent);
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=3).contains(&peak), "peak concurrency {peak}");
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_messages_are_redelivered_with_a_higher_attempt() {
    let cluster = Cluster::start().await;
    let topic = unique("t-push-retry");
    let attempts: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let a = attempts.clone();
    let consumer = PushConsumer::builder(cluster.config(), unique("g-push-retry"))
        .subscribe(&topic, FilterExpression::all())
        .handler(move |m: MessageView| {
            let a = a.clone();
            async move {
                a.lock()
                    .unwrap()
                    .entry(m.message_id().to_owned())
                    .or_default()
                    .push(m.delivery_attempt());
                if m.delivery_attempt() < 2 {
                    return Err("fail the first delivery");
                }
                Ok(())
            }
        })
        .build()
        .await
        .unwrap();
    let producer = Producer::builder(cluster.config()).build().await.unwrap();
    let sent = producer
        .send(Message::builder(&topic).body("retry me").build().unwrap())
        .await
        .unwrap();
    let id = sent.message_id().to_owned();
    let done = poll_until(Duration::from_secs(40), || async {
        let seen = attempts
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default();
        (seen.len() >= 2).then_some(seen)
    })
    .await;
    assert_eq!(done, Some(vec![1, 2]), "one failure, then the redelivery");
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_running_handlers() {
    let cluster = Cluster::start().await;
    let topic = unique("t-push-stop");
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (s, f) = (started.clone(), finished.clone());
    let consumer = PushConsumer::builder(cluster.config(), unique("g-push-stop"))
        .subscribe(&topic, FilterExpression::all())
        .handler(move |_m: MessageView| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                f.store(true, Ordering::SeqCst);
                Ok::<(), std::io::Error>(())
            }
        })
        .build()
        .await
        .unwrap();
    let producer = Producer::builder(cluster.config()).build().await.unwrap();
    producer
        .send(Message::builder(&topic).body("slow").build().unwrap())
        .await
        .unwrap();
    let running = poll_until(Duration::from_secs(30), || async {
        started.load(Ordering::SeqCst).then_some(())
    })
    .await;
    assert!(running.is_some(), "the handler never started");
    assert!(!finished.load(Ordering::SeqCst));
    consumer.shutdown().await;
    assert!(
        finished.load(Ordering::SeqCst),
        "shutdown returned before the handler finished"
    );
    producer.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_groups_are_handled_in_order_one_at_a_time() {
    let cluster = Cluster::start().await;
    let topic = unique("t-push-fifo");
    cluster.create_fifo_topic(&topic, 4).await;
    let seen: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let overlap = Arc::new(AtomicBool::new(false));
    let failed_once = Arc::new(AtomicBool::new(false));
    let (sn, b, o, fo) = (
        seen.clone(),
        busy.clone(),
        overlap.clone(),
        failed_once.clone(),
    );
    let consumer = PushConsumer::builder(cluster.config(), unique("g-push-fifo"))
        .subscribe(&topic, FilterExpression::all())
        .concurrency(8)
        .handler(move |m: MessageView| {
            let (sn, b, o, fo) = (sn.clone(), b.clone(), o.clone(), fo.clone());
            async move {
                let group = m.message_group().unwrap_or_default().to_owned();
                let seq: u32 = std::str::from_utf8(m.body()).unwrap().parse().unwrap();
                if !b.lock().unwrap().insert(group.clone()) {
                    o.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                b.lock().unwrap().remove(&group);
                // One failure in the middle of a group: the retry must come before the rest.
                if group == "g1" && seq == 2 && !fo.swap(true, Ordering::SeqCst) {
                    return Err("fail once");
                }
                sn.lock().unwrap().entry(group).or_default().push(seq);
                Ok(())
            }
        })
        .build()
        .await
        .unwrap();
    let producer = Producer::builder(cluster.config()).build().await.unwrap();
    for seq in 0..5u32 {
        for g in ["g0", "g1", "g2"] {
            producer
                .send(
                    Message::builder(&topic)
                        .body(seq.to_string())
                        .message_group(g)
                        .build()
                        .unwrap(),
                )
                .await
                .unwrap();
        }
    }
    let total = || seen.lock().unwrap().values().map(Vec::len).sum::<usize>();
    let all = poll_until(Duration::from_secs(40), || async {
        (total() >= 15).then_some(())
    })
    .await;
    assert!(
        all.is_some(),
        "handled {} of 15: {:?}",
        total(),
        seen.lock().unwrap()
    );
    for (g, order) in seen.lock().unwrap().iter() {
        assert_eq!(order, &[0, 1, 2, 3, 4], "group {g}");
    }
    assert!(failed_once.load(Ordering::SeqCst));
    assert!(
        !overlap.load(Ordering::SeqCst),
        "two messages of one group ran at once"
    );
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}
