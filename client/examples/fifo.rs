//! Sends three message groups of five FIFO messages each, interleaved, and checks that a
//! consumer sees every group in the order it was sent.
//!
//! `ROCKETLOG_ENDPOINT=127.0.0.1:8081 cargo run -p rocketlog-client --example fifo` (add
//! `ROCKETLOG_TLS=any` for TLS with any certificate, or `ROCKETLOG_TLS=ca.pem` to verify).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use rocketlog_client::{FilterExpression, Message, Producer, SimpleConsumer};

const GROUPS: usize = 3;
const PER_GROUP: usize = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = common::config_from_env()?;
    let topic = unique("example-fifo");
    let group = unique("example-fifo-group");

    let consumer = SimpleConsumer::builder(config.clone(), &group)
        .subscribe(&topic, FilterExpression::all())
        .await_duration(Duration::from_secs(5))
        .build()
        .await?;
    let producer = Producer::builder(config).topics([&topic]).build().await?;

    for seq in 0..PER_GROUP {
        for g in 0..GROUPS {
            let message = Message::builder(&topic)
                .body(format!("{seq}"))
                .message_group(format!("group-{g}"))
                .build()?;
            producer.send(message).await?;
        }
    }

    let mut next: HashMap<String, usize> = HashMap::new();
    let total = GROUPS * PER_GROUP;
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received < total {
        if Instant::now() > deadline {
            bail!("received {received} of {total} messages in time");
        }
        for message in consumer.receive(16, Duration::from_secs(30)).await? {
            let group = message
                .message_group()
                .context("a FIFO message without its group")?;
            let seq: usize = std::str::from_utf8(message.body())?.parse()?;
            let expected = next.entry(group.to_owned()).or_insert(0);
            ensure!(seq == *expected, "{group}: got {seq}, expected {expected}");
            *expected += 1;
            received += 1;
            println!("{group}: {seq}");
            consumer.ack(&message).await?;
        }
    }

    producer.shutdown().await;
    consumer.shutdown().await;
    println!("ok: {GROUPS} groups of {PER_GROUP} messages arrived in order");
    Ok(())
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}
