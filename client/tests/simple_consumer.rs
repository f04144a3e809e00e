//! Producer and SimpleConsumer against a real in-process broker.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{unique, Cluster};
use rocketlog_client::{
    Code, Error, FilterExpression, Message, MessageView, Producer, SimpleConsumer,
};

const INVISIBLE: Duration = Duration::from_secs(30);

async fn consumer(
    cluster: &Cluster,
    group: &str,
    topic: &str,
    filter: FilterExpression,
) -> SimpleConsumer {
    SimpleConsumer::builder(cluster.config(), group)
        .subscribe(topic, filter)
        .await_duration(Duration::from_secs(5))
        .build()
        .await
        .expect("consumer starts")
}

/// Receives until `want` messages arrived (acking each with `ack`), or the deadline passes.
async fn receive_n(c: &SimpleConsumer, want: usize, ack: bool) -> Vec<MessageView> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while got.len() < want && tokio::time::Instant::now() < deadline {
        for m in c.receive(16, INVISIBLE).await.expect("receive") {
            if ack {
                c.ack(&m).await.expect("ack");
            }
            got.push(m);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_receive_ack() {
    let cluster = Cluster::start().await;
    let topic = unique("t-basic");
    let c = consumer(
        &cluster,
        &unique("g-basic"),
        &topic,
        FilterExpression::all(),
    )
    .await;
    let producer = Producer::builder(cluster.config())
        .topics([&topic])
        .build()
        .await
        .expect("producer starts");

    let mut sent = HashMap::new();
    for i in 0..5 {
        let m = Message::builder(&topic)
            .body(format!("body-{i}"))
            .tag("T")
            .key(format!("k{i}"))
            .property("n", i.to_string())
            .build()
            .unwrap();
        let r = producer.send(m).await.expect("send");
        assert_eq!(r.message_id().len(), 34, "official id format");
        assert!(r.offset() >= 0);
        sent.insert(r.message_id().to_owned(), i);
    }

    let got = receive_n(&c, 5, true).await;
    assert_eq!(got.len(), 5, "all messages delivered");
    for m in &got {
        let i = sent[m.message_id()];
        assert_eq!(m.body().as_ref(), format!("body-{i}").as_bytes());
        assert_eq!(m.tag(), Some("T"));
        assert_eq!(m.keys(), [format!("k{i}")]);
        assert_eq!(m.properties()["n"], i.to_string());
        assert_eq!(m.topic(), topic);
        assert_eq!(m.delivery_attempt(), 1);
        assert!(!m.is_corrupted(), "body digest checks out");
    }
    // Acked messages do not come back.
    assert!(c.receive(16, INVISIBLE).await.expect("receive").is_empty());

    producer.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_select_messages() {
    let cluster = Cluster::start().await;
    let topic = unique("t-filter");
    let c = consumer(
        &cluster,
        &unique("g-filter"),
        &topic,
        FilterExpression::tag("a||b"),
    )
    .await;
    let producer = Producer::builder(cluster.config()).build().await.unwrap();
    let mut wanted = HashSet::new();
    for tag in ["a", "c", "b", "c", "a"] {
        let r = producer
            .send(Message::builder(&topic).body(tag).tag(tag).build().unwrap())
            .await
            .unwrap();
        if tag != "c" {
            wanted.insert(r.message_id().to_owned());
        }
    }
    let got = receive_n(&c, wanted.len(), true).await;
    let ids: HashSet<String> = got.iter().map(|m| m.message_id().to_owned()).collect();
    assert_eq!(ids, wanted);
    assert!(got.iter().all(|m| m.tag() != Some("c")));
    producer.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_are_redelivered() {
    let cluster = Cluster::start().await;
    let topic = unique("t-redeliver");
    let c = consumer(
        &cluster,
        &unique("g-redeliver"),
        &topic,
        FilterExpression::all(),
    )
    .await;
    let producer = Producer::builder(cluster.config()).build().await.unwrap();
    let sent = producer
        .send(Message::builder(&topic).body("again").build().unwrap())
        .await
        .unwrap();

    let mut first = receive_n(&c, 1, false).await;
    assert_eq!(first.len(), 1);
    let mut m = first.remove(0);
    assert_eq!(m.message_id(), sent.message_id());
    assert_eq!(m.delivery_attempt(), 1);
    // Extend, then give it back at once.
    c.change_invisible_duration(&mut m, Duration::from_secs(60))
        .await
        .expect("extend");
    c.change_invisible_duration(&mut m, Duration::ZERO)
        .await
        .expect("release");

    let again = receive_n(&c, 1, false).await;
    assert_eq!(again.len(), 1, "the message came back");
    assert_eq!(again[0].message_id(), sent.message_id());
    assert_eq!(again[0].delivery_attempt(), 2);
    // The handle of the first delivery is stale now.
    let stale = c.ack(&m).await.expect_err("stale handle");
    assert_eq!(stale.code(), Some(Code::InvalidReceiptHandle), "{stale}");
    c.ack(&again[0]).await.expect("ack the redelivery");

    producer.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_groups_keep_their_order() {
    let cluster = Cluster::start().await;
    let topic = unique("t-fifo");
    let c = consumer(&cluster, &unique("g-fifo"), &topic, FilterExpression::all()).await;
    let producer = Producer::builder(cluster.config()).build().await.unwrap();
    let groups = ["alpha", "beta", "gamma", "delta"];
    let mut queue_of: HashMap<&str, i32> = HashMap::new();
    for seq in 0..6 {
        for g in groups {
            let r = producer
                .send(
                    Message::builder(&topic)
                        .body(seq.to_string())
                        .message_group(g)
                        .build()
                        .unwrap(),
                )
                .await
                .unwrap();
            let q = *queue_of.entry(g).or_insert(r.queue_id());
            assert_eq!(q, r.queue_id(), "a group always goes to one queue");
        }
    }
    let got = receive_n(&c, 24, true).await;
    assert_eq!(got.len(), 24);
    let mut next: HashMap<String, u32> = HashMap::new();
    for m in got {
        let g = m.message_group().expect("group kept").to_owned();
        let seq: u32 = std::str::from_utf8(m.body()).unwrap().parse().unwrap();
        let want = next.entry(g.clone()).or_insert(0);
        assert_eq!(seq, *want, "group {g} out of order");
        *want += 1;
    }
    producer.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_from_one_producer() {
    let cluster = Cluster::start().await;
    let topic = unique("t-concurrent");
    let c = consumer(
        &cluster,
        &unique("g-concurrent"),
        &topic,
        FilterExpression::all(),
    )
    .await;
    let producer = Producer::builder(cluster.config())
        .topics([&topic])
        .build()
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let p = producer.clone();
        let topic = topic.clone();
        tasks.spawn(async move {
            p.send(
                Message::builder(topic)
                    .body(format!("m{i}"))
                    .build()
                    .unwrap(),
            )
            .await
        });
    }
    let mut ids = HashSet::new();
    let mut queues = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap().expect("send");
        ids.insert(r.message_id().to_owned());
        queues.insert(r.queue_id());
    }
    assert_eq!(ids.len(), 200);
    let got = receive_n(&c, 200, true).await;
    let got_ids: HashSet<String> = got.iter().map(|m| m.message_id().to_owned()).collect();
    assert_eq!(got_ids, ids, "every sent message is delivered once");
    assert!(queues.len() > 1, "round robin spreads sends over queues");

    // Batches come back in order.
    let batch: Vec<Message> = (0..10)
        .map(|i| {
            Message::builder(&topic)
                .body(format!("b{i}"))
                .build()
                .unwrap()
        })
        .collect();
    let receipts = producer.send_batch(batch).await.expect("batch");
    assert_eq!(receipts.len(), 10);
    assert!(receipts
        .windows(2)
        .all(|w| w[0].queue_id() == w[1].queue_id()));
    producer.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_carry_their_code() {
    let cluster = Cluster::start_with(|c| c.max_body_size = 1024).await;
    let topic = unique("t-errors");
    let producer = Producer::builder(cluster.config())
        .topics([&topic])
        .build()
        .await
        .unwrap();

    // The server checks bodies; its code comes back.
    let e = producer
        .send(Message::builder(&topic).build().unwrap())
        .await
        .expect_err("empty body");
    assert_eq!(e.code(), Some(Code::MessageBodyEmpty), "{e}");
    assert!(!e.to_string().is_empty());

    // The body limit was adopted from the settings handshake.
    let e = producer
        .send(
            Message::builder(&topic)
                .body(vec![7u8; 2048])
                .build()
                .unwrap(),
        )
        .await
        .expect_err("too large");
    assert!(
        matches!(
            e,
            Error::BodyTooLarge {
                size: 2048,
                max: 1024
            }
        ),
        "{e}"
    );

    // A delivery time beyond the broker's maximum (40 days): a typed status.
    let e = producer
        .send(
            Message::builder(&topic)
                .body("too late")
                .delivery_time(std::time::SystemTime::now() + Duration::from_secs(41 * 24 * 3600))
                .build()
                .unwrap(),
        )
        .await
        .expect_err("delivery time beyond the maximum");
    assert_eq!(e.code(), Some(Code::IllegalDeliveryTime), "{e}");

    let c = consumer(
        &cluster,
        &unique("g-errors"),
        &topic,
        FilterExpression::all(),
    )
    .await;
    let e = c
        .receive(1, Duration::from_secs(1))
        .await
        .expect_err("invisible duration below the minimum");
    assert_eq!(e.code(), Some(Code::IllegalInvisibleTime), "{e}");

    c.shutdown().await;
    producer.shutdown().await;
    // A shut-down client refuses work.
    let e = producer
        .send(Message::builder(&topic).body("x").build().unwrap())
        .await
        .expect_err("shut down");
    assert!(matches!(e, Error::Shutdown));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_access_point_fails_fast() {
    // Bind and drop a listener: nothing serves the port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = rocketlog_client::ClientConfig::builder()
        .access_point(format!("127.0.0.1:{port}"))
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = tokio::time::timeout(
        Duration::from_secs(10),
        Producer::builder(config).topics(["t"]).build(),
    )
    .await
    .expect("build returns in time");
    let e = started.expect_err("nothing listens");
    assert!(e.code().is_none());
}
