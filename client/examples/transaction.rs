//! Commits one transactional message and rolls another back, then checks that a consumer
//! receives only the committed one.
//!
//! `ROCKETLOG_ENDPOINT=127.0.0.1:8081 cargo run -p rocketlog-client --example transaction`
//!
//! A topic takes transactional messages only if it accepts the TRANSACTION type (as in Apache
//! RocketMQ, where topics are NORMAL unless created otherwise), so the example first creates
//! its topic through the broker's admin API, like
//! `rocketlog admin --broker 127.0.0.1:8081 topic create <topic> --type transaction`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure};
use rocketlog_client::{
    ClientConfig, FilterExpression, Message, MessageView, SimpleConsumer, TransactionProducer,
    TransactionResolution,
};
use rocketlog_proto::admin::v1 as admin;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoint =
        std::env::var("ROCKETLOG_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".to_owned());
    let config = ClientConfig::new(&endpoint)?;
    let topic = unique("example-tx");
    let group = unique("example-tx-group");
    create_transaction_topic(&endpoint, &topic).await?;

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

/// Creates `topic` accepting TRANSACTION messages through the admin API (same port).
async fn create_transaction_topic(endpoint: &str, topic: &str) -> anyhow::Result<()> {
    let mut client =
        admin::admin_client::AdminClient::connect(format!("http://{endpoint}")).await?;
    client
        .create_or_update_topic(admin::CreateOrUpdateTopicRequest {
            topic: Some(admin::TopicConfig {
                name: topic.to_owned(),
                queue_nums: 4,
                perm: admin::Permission::ReadWrite as i32,
                message_types: vec![admin::MessageType::Transaction as i32],
            }),
        })
        .await?;
    Ok(())
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}
