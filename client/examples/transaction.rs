//! Commits one transactional message and rolls another back, then checks that a consumer
//! receives only the committed one.
//!
//! `ROCKETLOG_ENDPOINT=127.0.0.1:8081 cargo run -p rocketlog-client --example transaction`

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure};
use rocketlog_client::{
    ClientConfig, FilterExpression, Message, MessageView, SimpleConsumer, TransactionProducer,
    TransactionResolution,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoint =
        std::env::var("ROCKETLOG_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".to_owned());
    let config = ClientConfig::new(&endpoint)?;
    let topic = unique("example-tx");
    let group = unique("example-tx-group");

    let consumer = SimpleConsumer::builder(config.clone(), &group)
        .subscribe(&topic, FilterExpression::all())
        .await_duration(Duration::from_secs(5))
        .build()
        .await?;
    // Transactions left open are rolled back when the server asks.
    let checker = |_message: MessageView| async { TransactionResolution::Rollback };
    let producer = TransactionProducer::builder(config, checker)
        .topics([&topic])
        .build()
        .await?;

    let kept = producer
        .send(Message::builder(&topic).body("kept").build()?)
        .await?;
    let kept_id = kept.receipt().message_id().to_owned();
    kept.commit().await?;
    let dropped = producer
        .send(Message::builder(&topic).body("dropped").build()?)
        .await?;
    let dropped_id = dropped.receipt().message_id().to_owned();
    dropped.rollback().await?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got_kept = false;
    // After the committed message arrives, one more poll shows nothing else comes.
    let mut quiet_polls = 0;
    while quiet_polls < 1 {
        if Instant::now() > deadline {
            bail!("the committed message did not arrive in time");
        }
        let messages = consumer.receive(8, Duration::from_secs(30)).await?;
        if messages.is_empty() && got_kept {
            quiet_polls += 1;
        }
        for message in messages {
            ensure!(
                message.message_id() != dropped_id,
                "a rolled-back message was delivered"
            );
            if message.message_id() == kept_id {
                got_kept = true;
            }
            consumer.ack(&message).await?;
        }
    }

    producer.shutdown().await;
    consumer.shutdown().await;
    println!("ok: committed message delivered, rolled-back message not");
    Ok(())
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}
