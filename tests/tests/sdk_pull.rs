//! Pull consumers through the Rust SDK's `PullConsumer` against a real nameserver and broker:
//! reading assigned queues by offset, committing, resuming from the committed offset after a
//! broker restart, long polling, tag filters, seeking by time, and the typed errors of bad
//! offsets and queues.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context};
use rocketlog_broker::BrokerConfig;
use rocketlog_client::{
    Code, FilterExpression, Message, MessageView, OffsetQuery, Producer, PullConsumer,
    StartPosition, TopicQueue,
};
use rocketlog_tests::{unique_name, MessageType, SdkCluster};

fn tune(c: &mut BrokerConfig) {
    c.receive.max_long_polling_ms = 5_000;
}

async fn producer(cluster: &SdkCluster, topic: &str) -> anyhow::Result<Producer> {
    Producer::builder(cluster.client_config())
        .topics([topic])
        .build()
        .await
        .context("starting the producer")
}

async fn pull_consumer(
    cluster: &SdkCluster,
    group: &str,
    start: StartPosition,
) -> anyhow::Result<PullConsumer> {
    PullConsumer::builder(cluster.client_config(), group)
        .start_position(start)
        .build()
        .await
        .context("starting the pull consumer")
}

/// Sends `n` messages tagged A and B alternately; returns their ids.
async fn send(
    producer: &Producer,
    topic: &str,
    n: usize,
    label: &str,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let tag = if i % 2 == 0 { "A" } else { "B" };
        let message = Message::builder(topic)
            .tag(tag)
            .body(format!("{label}-{i}"))
            .build()?;
        ids.push(producer.send(message).await?.message_id().to_owned());
    }
    Ok(ids)
}

/// The queue ends of `queues` add up to `count` right after `count` acknowledged sends: the
/// broker answers offset queries only once acknowledged appends are in the consume queues.
async fn ends_add_up(
    consumer: &PullConsumer,
    queues: &[TopicQueue],
    count: i64,
) -> anyhow::Result<()> {
    let mut total = 0;
    for q in queues {
        total += consumer.query_offset(q, OffsetQuery::End).await?;
    }
    ensure!(
        total == count,
        "queue ends add up to {total} right after {count} acknowledged sends"
    );
    Ok(())
}

/// Polls until `count` messages came or `limit` passed.
async fn poll_count(
    consumer: &PullConsumer,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Vec<MessageView>> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < count {
        ensure!(
            Instant::now() < deadline,
            "pulled {} of {count} messages within {limit:?}",
            got.len()
        );
        got.extend(consumer.poll(32, Duration::from_secs(1)).await?);
    }
    Ok(got)
}

/// Every queue's messages come in offset order without gaps from where it started.
fn check_queue_order(messages: &[MessageView]) -> anyhow::Result<()> {
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for m in messages {
        let offset = m
            .queue_offset()
            .context("a pulled message without a queue offset")?;
        if let Some(prev) = last.insert(m.queue_id(), offset) {
            ensure!(
                offset == prev + 1,
                "queue {}: offset {offset} after {prev}",
                m.queue_id()
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_consumer_commits_and_resumes_after_a_broker_restart() -> anyhow::Result<()> {
    let mut cluster = SdkCluster::single(tune).await?;
    let topic = unique_name("pull");
    let group = unique_name("grp-pull");
    cluster
        .broker()
        .create_topic(&topic, 2, &[MessageType::Normal])
        .await?;
    let producer = producer(&cluster, &topic).await?;
    let first = send(&producer, &topic, 40, "first").await?;

    let consumer = pull_consumer(&cluster, &group, StartPosition::Beginning).await?;
    let queues = consumer.queues(&topic).await?;
    ensure!(queues.len() == 2, "queues of a 2-queue topic: {queues:?}");
    for q in &queues {
        ensure!(
            consumer.committed(q).await?.is_none(),
            "a new group has no committed offset on {q}"
        );
    }
    consumer.assign(queues.clone()).await?;
    let got = poll_count(&consumer, 40, Duration::from_secs(20)).await?;
    let ids: HashSet<&str> = got.iter().map(MessageView::message_id).collect();
    ensure!(
        got.len() == 40 && ids.len() == 40,
        "40 distinct messages, got {}",
        got.len()
    );
    ensure!(
        first.iter().all(|id| ids.contains(id.as_str())),
        "every sent message pulled"
    );
    check_queue_order(&got)?;
    ensure!(
        consumer
            .poll(32, Duration::from_millis(300))
            .await?
            .is_empty(),
        "nothing past the end"
    );
    consumer.commit().await?;
    let mut total = 0;
    for q in &queues {
        let position = consumer.position(q).context("a position after polling")?;
        ensure!(
            consumer.committed(q).await? == Some(position),
            "{q}: committed offset is the position {position}"
        );
        total += position;
    }
    ensure!(total == 40, "positions add up to the 40 messages: {total}");
    consumer.shutdown().await;
    producer.shutdown().await;

    // The committed offsets are durable: a restarted broker keeps them.
    cluster.brokers[0].restart().await?;
    let producer = self::producer(&cluster, &topic).await?;
    let resumed = pull_consumer(&cluster, &group, StartPosition::Beginning).await?;
    resumed.assign(resumed.queues(&topic).await?).await?;
    ensure!(
        resumed
            .poll(32, Duration::from_millis(500))
            .await?
            .is_empty(),
        "a consumer of the group resumes at the committed offsets, not at the beginning"
    );
    let later = send(&producer, &topic, 6, "later").await?;
    let got = poll_count(&resumed, 6, Duration::from_secs(20)).await?;
    let got_ids: HashSet<&str> = got.iter().map(MessageView::message_id).collect();
    ensure!(
        got.len() == 6 && later.iter().all(|id| got_ids.contains(id.as_str())),
        "exactly the 6 new messages after the restart, got {:?}",
        got.iter().map(|m| m.body().clone()).collect::<Vec<_>>()
    );
    resumed.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_long_polls_filters_by_tag_and_seeks_by_time() -> anyhow::Result<()> {
    let cluster = SdkCluster::single(tune).await?;
    let topic = unique_name("pull-wait");
    cluster
        .broker()
        .create_topic(&topic, 1, &[MessageType::Normal])
        .await?;
    let producer = producer(&cluster, &topic).await?;
    let consumer = PullConsumer::builder(cluster.client_config(), unique_name("grp-wait"))
        .filter(&topic, FilterExpression::tag("A"))
        .build()
        .await?;
    let queue = consumer.queues(&topic).await?.remove(0);
    let end = consumer.query_offset(&queue, OffsetQuery::End).await?;
    ensure!(end == 0, "an empty queue ends at 0, not {end}");

    // A pull waiting at the end gets the message sent while it waits.
    let waiting = {
        let (consumer, queue) = (consumer.clone(), queue.clone());
        tokio::spawn(async move { consumer.pull(&queue, 0, 8, Duration::from_secs(4)).await })
    };
    let sent = producer
        .send(Message::builder(&topic).tag("A").body("awaited").build()?)
        .await?;
    let batch = waiting.await??;
    ensure!(
        batch.messages.len() == 1 && batch.messages[0].message_id() == sent.message_id(),
        "the long poll returns the message sent meanwhile: {:?}",
        batch.messages
    );
    ensure!(
        batch.next_offset == 1,
        "next offset after it: {}",
        batch.next_offset
    );

    // An empty long poll answers after its wait with the same offset.
    let started = Instant::now();
    let empty = consumer
        .pull(&queue, 1, 8, Duration::from_millis(600))
        .await?;
    ensure!(empty.messages.is_empty() && empty.next_offset == 1);
    ensure!(
        started.elapsed() >= Duration::from_millis(500),
        "an empty pull waits for its long-polling time, returned after {:?}",
        started.elapsed()
    );

    // The tag filter skips B messages, and the next offset moves past them too.
    let split = SystemTime::now();
    send(&producer, &topic, 10, "mixed").await?;
    let batch = consumer.pull(&queue, 1, 32, Duration::ZERO).await?;
    ensure!(
        batch.messages.len() == 5 && batch.messages.iter().all(|m| m.tag() == Some("A")),
        "5 A messages through the filter, got {:?}",
        batch
            .messages
            .iter()
            .map(MessageView::tag)
            .collect::<Vec<_>>()
    );
    ensure!(
        batch.next_offset == 11,
        "past all 10, got {}",
        batch.next_offset
    );

    // Seeking by time lands on the first message stored at or after it.
    consumer.assign([queue.clone()]).await?;
    let at = consumer.seek_to(&queue, OffsetQuery::Time(split)).await?;
    ensure!(
        at == 1,
        "the first message stored after the split is offset 1, got {at}"
    );
    let from_time = consumer.poll(32, Duration::ZERO).await?;
    ensure!(
        from_time.len() == 5,
        "5 A messages from the split, got {}",
        from_time.len()
    );
    ensure!(consumer.position(&queue) == Some(11));
    ensure!(consumer.seek_to(&queue, OffsetQuery::Beginning).await? == 0);
    ensure!(consumer.seek_to(&queue, OffsetQuery::End).await? == 11);

    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offsets_and_queues_get_typed_errors() -> anyhow::Result<()> {
    let cluster = SdkCluster::single(tune).await?;
    let topic = unique_name("pull-bad");
    cluster
        .broker()
        .create_topic(&topic, 2, &[MessageType::Normal])
        .await?;
    let producer = producer(&cluster, &topic).await?;
    send(&producer, &topic, 4, "bad").await?;
    let consumer = pull_consumer(&cluster, &unique_name("grp-bad"), StartPosition::End).await?;
    let queues = consumer.queues(&topic).await?;
    ends_add_up(&consumer, &queues, 4).await?;
    let queue = queues[0].clone();
    let end = consumer.query_offset(&queue, OffsetQuery::End).await?;

    let past = consumer.pull(&queue, end + 5, 8, Duration::ZERO).await;
    ensure!(
        past.as_ref().err().and_then(|e| e.code()) == Some(Code::IllegalOffset),
        "pulling past the end: {past:?}"
    );
    let negative = consumer.pull(&queue, -1, 8, Duration::ZERO).await;
    ensure!(negative.as_ref().err().and_then(|e| e.code()) == Some(Code::IllegalOffset));
    let commit = consumer.commit_offset(&queue, end + 1).await;
    ensure!(
        commit.as_ref().err().and_then(|e| e.code()) == Some(Code::IllegalOffset),
        "committing past the end: {commit:?}"
    );
    let missing = TopicQueue::new(&topic, queue.broker(), 7);
    let bad_queue = consumer.pull(&missing, 0, 8, Duration::ZERO).await;
    ensure!(
        bad_queue.is_err(),
        "a queue the route does not have: {bad_queue:?}"
    );

    // A position retention or a mistake put outside the queue moves back inside on poll.
    consumer.assign([queue.clone()]).await?;
    consumer.seek(&queue, end + 100)?;
    ensure!(consumer.poll(8, Duration::ZERO).await?.is_empty());
    ensure!(
        consumer.position(&queue) == Some(end),
        "moved to the end {end}: {:?}",
        consumer.position(&queue)
    );
    // The broker still serves.
    consumer.commit_offset(&queue, 0).await?;
    ensure!(consumer.committed(&queue).await? == Some(0));
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}
