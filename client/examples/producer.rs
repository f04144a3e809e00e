//! Sends ten messages (one at a time and as concurrent sends from one producer) and checks
//! that each got a receipt with its own message id.
//!
//! `ROCKETLOG_ENDPOINT=127.0.0.1:8081 cargo run -p rocketlog-client --example producer` (add
//! `ROCKETLOG_TLS=any` for TLS with any certificate, or `ROCKETLOG_TLS=ca.pem` to verify).

mod common;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context};
use rocketlog_client::{Message, Producer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let topic = unique("example-producer");
    let producer = Producer::builder(common::config_from_env()?)
        .topics([&topic])
        .build()
        .await
        .context("starting the producer")?;

    let mut ids = HashSet::new();
    for i in 0..5 {
        let message = Message::builder(&topic)
            .body(format!("message {i}"))
            .tag("example")
            .key(format!("key-{i}"))
            .build()?;
        let receipt = producer.send(message).await?;
        println!(
            "sent {} to queue {} at offset {}",
            receipt.message_id(),
            receipt.queue_id(),
            receipt.offset()
        );
        ids.insert(receipt.message_id().to_owned());
    }

    // Clones share the connection; these sends are in flight together.
    let sends = (5..10).map(|i| {
        let producer = producer.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let message = Message::builder(topic)
                .body(format!("message {i}"))
                .build()?;
            producer.send(message).await.map_err(anyhow::Error::from)
        })
    });
    for handle in sends.collect::<Vec<_>>() {
        let receipt = handle.await??;
        ids.insert(receipt.message_id().to_owned());
    }

    producer.shutdown().await;
    ensure!(
        ids.len() == 10,
        "expected 10 distinct message ids, got {}",
        ids.len()
    );
    println!("ok: 10 messages sent to {topic}");
    Ok(())
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}
