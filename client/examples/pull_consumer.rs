//! Sends ten messages, reads them back by offset with a pull consumer, commits, and checks
//! that a second consumer of the same group starts after the committed offsets while a
//! consumer of another group seeks back to the beginning and sees all ten again.
//!
//! `ROCKETLOG_ENDPOINT=127.0.0.1:8081 cargo run -p rocketlog-client --example pull_consumer` (add
//! `ROCKETLOG_TLS=any` for TLS with any certificate, or `ROCKETLOG_TLS=ca.pem` to verify).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure};
use rocketlog_client::{ClientConfig, Message, OffsetQuery, Producer, PullConsumer, StartPosition};

const COUNT: usize = 10;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = common::config_from_env()?;
    let topic = unique("example-pull");
    let group = unique("example-pull-group");

    let producer = Producer::builder(config.clone())
        .topics([&topic])
        .build()
        .await?;
    let mut sent = HashSet::new();
    for i in 0..COUNT {
        let receipt = producer
            .send(
                Message::builder(&topic)
                    .body(format!("entry {i}"))
                    .build()?,
            )
            .await?;
        sent.insert(receipt.message_id().to_owned());
    }

    let first = consumer(&config, &group).await?;
    first.assign(first.queues(&topic).await?).await?;
    let got = read_all(&first, COUNT).await?;
    ensure!(got == sent, "pulled other messages than sent");
    first.commit().await?;
    first.shutdown().await;
    println!("pulled and committed {COUNT} messages");

    let second = consumer(&config, &group).await?;
    second.assign(second.queues(&topic).await?).await?;
    ensure!(
        second.poll(32, Duration::from_secs(1)).await?.is_empty(),
        "the group's next consumer read before its committed offsets"
    );
    second.shutdown().await;

    let replay = consumer(&config, &unique("example-pull-replay")).await?;
    let queues = replay.queues(&topic).await?;
    replay.assign(queues.clone()).await?;
    for q in &queues {
        replay.seek_to(q, OffsetQuery::Beginning).await?;
    }
    ensure!(
        read_all(&replay, COUNT).await? == sent,
        "the replay missed messages"
    );
    replay.shutdown().await;
    producer.shutdown().await;
    println!("ok: the group resumed at its committed offsets; another group replayed all {COUNT}");
    Ok(())
}

async fn consumer(config: &ClientConfig, group: &str) -> anyhow::Result<PullConsumer> {
    Ok(PullConsumer::builder(config.clone(), group)
        .start_position(StartPosition::Beginning)
        .build()
        .await?)
}

async fn read_all(consumer: &PullConsumer, count: usize) -> anyhow::Result<HashSet<String>> {
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < count {
        if Instant::now() > deadline {
            bail!("pulled {} of {count} messages in time", seen.len());
        }
        for m in consumer.poll(32, Duration::from_secs(2)).await? {
            println!(
                "queue {} offset {:?}: {}",
                m.queue_id(),
                m.queue_offset(),
                m.message_id()
            );
            seen.insert(m.message_id().to_owned());
        }
    }
    Ok(seen)
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}
