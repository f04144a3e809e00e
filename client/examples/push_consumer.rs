//! Sends twenty messages and checks that a push consumer's handler sees each of them; the
//! handler fails every message once, so each one is also redelivered.
//!
//! `ROCKETLOG_ENDPOINT=127.0.0.1:8081 cargo run -p rocketlog-client --example push_consumer` (add
//! `ROCKETLOG_TLS=any` for TLS with any certificate, or `ROCKETLOG_TLS=ca.pem` to verify).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure};
use rocketlog_client::{FilterExpression, Message, MessageView, Producer, PushConsumer};

const COUNT: usize = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = common::config_from_env()?;
    let topic = unique("example-push");
    let group = unique("example-push-group");

    let done: Arc<Mutex<HashSet<String>>> = Arc::default();
    let seen = done.clone();
    let consumer = PushConsumer::builder(config.clone(), &group)
        .subscribe(&topic, FilterExpression::all())
        .concurrency(4)
        .handler(move |message: MessageView| {
            let seen = seen.clone();
            async move {
                if message.delivery_attempt() == 1 {
                    return Err(format!("failing {} once on purpose", message.message_id()));
                }
                println!(
                    "handled {} (attempt {})",
                    message.message_id(),
                    message.delivery_attempt()
                );
                if let Ok(mut seen) = seen.lock() {
                    seen.insert(message.message_id().to_owned());
                }
                Ok(())
            }
        })
        .build()
        .await?;
    let producer = Producer::builder(config).topics([&topic]).build().await?;

    let mut sent = HashSet::new();
    for i in 0..COUNT {
        let receipt = producer
            .send(Message::builder(&topic).body(format!("job {i}")).build()?)
            .await?;
        sent.insert(receipt.message_id().to_owned());
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let handled = done.lock().map(|s| s.len()).unwrap_or(0);
        if handled >= COUNT {
            break;
        }
        if Instant::now() > deadline {
            bail!("handled {handled} of {COUNT} messages in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.shutdown().await;
    producer.shutdown().await;
    let handled = done.lock().map(|s| s.clone()).unwrap_or_default();
    ensure!(handled == sent, "the handler saw other messages than sent");
    println!("ok: {COUNT} messages handled after one redelivery each");
    Ok(())
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}
