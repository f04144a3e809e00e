//! `admin broker drain` for rolling restarts, with two broker groups and the Rust SDK: a
//! draining broker registers its queues read-only, so new sends go to the other group and
//! succeed; what it stored stays readable; `resume` takes sends again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::ensure;
use rocketlog_client::{FilterExpression, Message, Producer, SimpleConsumer};
use rocketlog_proto::nameserver::v1 as ns;
use rocketlog_tests::{unique_name, MessageType, SdkCluster};

async fn send(
    producer: &Producer,
    topic: &str,
    n: usize,
    label: &str,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let m = Message::builder(topic)
            .body(format!("{label}-{i}"))
            .build()?;
        ids.push(producer.send(m).await?.message_id().to_owned());
    }
    Ok(ids)
}

/// Waits until the nameserver lists broker-a's queues of `topic` with `perm`.
async fn wait_for_permission(
    cluster: &SdkCluster,
    topic: &str,
    perm: ns::Permission,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let route = cluster.nameserver.topic_route(topic).await?;
        let now = route
            .groups
            .iter()
            .find(|g| g.broker_name == "broker-a")
            .and_then(|g| g.topic.as_ref())
            .map(|t| t.perm);
        if now == Some(perm as i32) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "broker-a's queues of {topic} are registered with {now:?}, not {perm:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_broker_takes_no_sends_and_keeps_serving_reads() -> anyhow::Result<()> {
    let cluster = SdkCluster::start(2, |c| c.receive.min_long_polling_ms = 500).await?;
    let topic = unique_name("drain");
    for b in &cluster.brokers {
        b.create_topic(&topic, 2, &[MessageType::Normal]).await?;
    }
    wait_for_permission(&cluster, &topic, ns::Permission::ReadWrite).await?;
    let producer = Producer::builder(cluster.client_config())
        .topics([topic.as_str()])
        .build()
        .await?;
    let mut sent: HashSet<String> = send(&producer, &topic, 20, "before")
        .await?
        .into_iter()
        .collect();
    producer.shutdown().await;

    let r = cluster.broker().drain(false).await?;
    ensure!(r.draining && !r.was_draining, "{r:?}");
    wait_for_permission(&cluster, &topic, ns::Permission::Read).await?;

    // A producer started now sees broker-a read-only and sends to broker-b only; a send that
    // still reaches broker-a is refused retriably and resent.
    let producer = Producer::builder(cluster.client_config())
        .topics([topic.as_str()])
        .build()
        .await?;
    sent.extend(send(&producer, &topic, 20, "draining").await?);

    // Everything is readable, broker-a's messages from before the drain included.
    let consumer = SimpleConsumer::builder(cluster.client_config(), unique_name("grp-drain"))
        .subscribe(&topic, FilterExpression::all())
        .await_duration(Duration::from_secs(1))
        .build()
        .await?;
    let mut got = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < sent.len() {
        ensure!(
            Instant::now() < deadline,
            "received {} of {} messages",
            got.len(),
            sent.len()
        );
        for m in consumer.receive(32, Duration::from_secs(30)).await? {
            consumer.ack(&m).await?;
            got.insert(m.message_id().to_owned());
        }
    }
    ensure!(got == sent, "received exactly what was sent");

    let r = cluster.broker().drain(true).await?;
    ensure!(!r.draining && r.was_draining, "{r:?}");
    wait_for_permission(&cluster, &topic, ns::Permission::ReadWrite).await?;
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}
