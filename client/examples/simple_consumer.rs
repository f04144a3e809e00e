//! Sends messages tagged `a`, `b` and `c`, receives with the filter `a||b`, acknowledges each,
//! and checks that exactly the `a` and `b` messages arrived.
//!
//! `ROCKETLOG_ENDPOINT=127.0.0.1:8081 cargo run -p rocketlog-client --example simple_consumer` (add
//! `ROCKETLOG_TLS=any` for TLS with any certificate, or `ROCKETLOG_TLS=ca.pem` to verify).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure};
use rocketlog_client::{FilterExpression, Message, Producer, SimpleConsumer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = common::config_from_env()?;
    let topic = unique("example-simple");
    let group = unique("example-simple-group");

    // Subscribe first so the group starts from the messages sent below.
    let consumer = SimpleConsumer::builder(config.clone(), &group)
        .subscribe(&topic, FilterExpression::tag("a||b"))
        .await_duration(Duration::from_secs(5))
        .build()
        .await?;
    let producer = Producer::builder(config).topics([&topic]).build().await?;

    let mut wanted = HashSet::new();
    for (i, tag) in ["a", "b", "c", "a", "b", "c"].iter().enumerate() {
        let message = Message::builder(&topic)
            .body(format!("{tag} {i}"))
            .tag(*tag)
            .build()?;
        let receipt = producer.send(message).await?;
        if *tag != "c" {
            wanted.insert(receipt.message_id().to_owned());
        }
    }

    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < wanted.len() {
        if Instant::now() > deadline {
            bail!(
                "received {} of {} messages in time",
                seen.len(),
                wanted.len()
            );
        }
        for message in consumer.receive(16, Duration::from_secs(30)).await? {
            ensure!(
                message.tag() != Some("c"),
                "the filter let a 'c' message through"
            );
            println!("received {} tag {:?}", message.message_id(), message.tag());
            consumer.ack(&message).await?;
            seen.insert(message.message_id().to_owned());
        }
    }
    ensure!(seen == wanted, "received other messages than sent");

    producer.shutdown().await;
    consumer.shutdown().await;
    println!(
        "ok: {} filtered messages received and acknowledged",
        seen.len()
    );
    Ok(())
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}
