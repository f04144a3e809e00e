//! Sends a message to be delivered three seconds later and checks that it arrives, and not
//! before its time.
//!
//! `ROCKETLOG_ENDPOINT=127.0.0.1:8081 cargo run -p rocketlog-client --example delay` (add
//! `ROCKETLOG_TLS=any` for TLS with any certificate, or `ROCKETLOG_TLS=ca.pem` to verify).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure};
use rocketlog_client::{FilterExpression, Message, Producer, SimpleConsumer};

const DELAY: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = common::config_from_env()?;
    let topic = unique("example-delay");
    let group = unique("example-delay-group");

    let consumer = SimpleConsumer::builder(config.clone(), &group)
        .subscribe(&topic, FilterExpression::all())
        .await_duration(Duration::from_secs(5))
        .build()
        .await?;
    let producer = Producer::builder(config).topics([&topic]).build().await?;

    let due = SystemTime::now() + DELAY;
    let receipt = producer
        .send(
            Message::builder(&topic)
                .body("later")
                .delivery_time(due)
                .build()?,
        )
        .await?;
    println!(
        "sent {} for delivery in {DELAY:?} (recall handle: {})",
        receipt.message_id(),
        receipt.recall_handle().unwrap_or("none")
    );

    let deadline = Instant::now() + DELAY + Duration::from_secs(30);
    loop {
        if Instant::now() > deadline {
            bail!("the delayed message did not arrive in time");
        }
        let messages = consumer.receive(1, Duration::from_secs(30)).await?;
        let Some(message) = messages.first() else {
            continue;
        };
        let now = SystemTime::now();
        // Allow for clock granularity between this host and the broker.
        ensure!(
            now + Duration::from_millis(200) >= due,
            "delivered {:?} early",
            due.duration_since(now).unwrap_or_default()
        );
        ensure!(
            message.message_id() == receipt.message_id(),
            "another message arrived"
        );
        println!(
            "arrived {} ms after its delivery time",
            now.duration_since(due).unwrap_or_default().as_millis()
        );
        consumer.ack(message).await?;
        break;
    }

    producer.shutdown().await;
    consumer.shutdown().await;
    println!("ok: the delayed message arrived on time");
    Ok(())
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}
