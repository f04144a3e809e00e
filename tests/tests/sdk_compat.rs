//! The official-client compatibility scenarios of `tests/python/` (normal_and_tags,
//! redelivery, fifo, fifo_push, dlq, push_consumer, async_batch, large_body, unknown_topic),
//! written with the Rust SDK against a real in-process nameserver and broker.
//!
//! The broker is tuned for short runs: 1 s minimum invisible duration, long polls of 1-2 s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use rocketlog_broker::BrokerConfig;
use rocketlog_client::{
    Code, Error, FilterExpression, Message, MessageView, Producer, PushConsumer, SimpleConsumer,
};
use rocketlog_tests::{poll, unique_name, MessageType, SdkCluster};

/// Invisible duration of simple-consumer receives.
const INVISIBLE: Duration = Duration::from_secs(1);
/// Long-polling wait of simple consumers.
const AWAIT: Duration = Duration::from_secs(1);
/// Deliveries before dead-lettering, in the scenarios that need it.
const MAX_ATTEMPTS: u32 = 2;
/// A message must not come back earlier than its invisible time minus this.
const EARLY_TOLERANCE: Duration = Duration::from_millis(250);

fn tune(c: &mut BrokerConfig) {
    c.receive.min_invisible_duration_ms = 1_000;
    c.receive.min_long_polling_ms = 500;
    c.receive.max_long_polling_ms = 2_000;
    c.receive.auto_renew_invisible_duration_ms = 3_000;
    c.receive.auto_renew_ahead_ms = 1_000;
    c.receive.auto_renew_period_ms = 500;
}

fn tune_dead_letter(c: &mut BrokerConfig) {
    tune(c);
    c.receive.max_delivery_attempts = MAX_ATTEMPTS;
}

async fn producer(cluster: &SdkCluster, topic: &str) -> anyhow::Result<Producer> {
    Producer::builder(cluster.client_config())
        .topics([topic])
        .build()
        .await
        .context("starting the producer")
}

async fn simple_consumer(
    cluster: &SdkCluster,
    group: &str,
    topic: &str,
    filter: &str,
) -> anyhow::Result<SimpleConsumer> {
    SimpleConsumer::builder(cluster.client_config(), group)
        .subscribe(topic, FilterExpression::tag(filter))
        .await_duration(AWAIT)
        .build()
        .await
        .context("starting the simple consumer")
}

/// Receives (acking each message) until `count` messages arrived or `limit` passed.
async fn receive_and_ack(
    consumer: &SimpleConsumer,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Vec<MessageView>> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < count {
        ensure!(
            Instant::now() < deadline,
            "received {} of {count} messages within {limit:?}",
            got.len()
        );
        for m in consumer.receive(32, INVISIBLE).await? {
            consumer.ack(&m).await?;
            got.push(m);
        }
    }
    Ok(got)
}

/// Fails if anything arrives for `quiet`.
async fn expect_nothing(
    consumer: &SimpleConsumer,
    quiet: Duration,
    why: &str,
) -> anyhow::Result<()> {
    let until = Instant::now() + quiet;
    while Instant::now() < until {
        let got = consumer.receive(32, INVISIBLE).await?;
        if let Some(m) = got.first() {
            bail!(
                "{why}: got {} (attempt {})",
                m.message_id(),
                m.delivery_attempt()
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_and_tags() -> anyhow::Result<()> {
    let cluster = SdkCluster::single(tune).await?;
    let topic = unique_name("normal");
    let producer = producer(&cluster, &topic).await?;
    let mut sent: HashMap<String, (usize, Message)> = HashMap::new();
    let sent_at = std::time::SystemTime::now();
    for i in 0..10 {
        let tag = if i % 2 == 0 { "A" } else { "B" };
        let mut b = Message::builder(&topic)
            .body(format!("normal-{i}"))
            .tag(tag)
            .key(format!("key-{i}"))
            .property("index", i.to_string())
            .property("scenario", "normal_and_tags");
        if i % 3 == 0 {
            b = b.key(format!("second-key-{i}"));
        }
        if i % 4 == 0 {
            b = b.property("unicode", "值-ü-é-🚀");
        }
        let message = b.build()?;
        let receipt = producer.send(message.clone()).await?;
        sent.insert(receipt.message_id().to_owned(), (i, message));
    }
    for (filter, want_tags) in [("A", &["A"][..]), ("*", &["A", "B"]), ("B||C", &["B"])] {
        let group = unique_name("grp-normal");
        let consumer = simple_consumer(&cluster, &group, &topic, filter).await?;
        let want: HashSet<&String> = sent
            .iter()
            .filter(|(_, (_, m))| m.tag().is_some_and(|t| want_tags.contains(&t)))
            .map(|(id, _)| id)
            .collect();
        let got = receive_and_ack(&consumer, want.len(), Duration::from_secs(20)).await?;
        let mut seen = HashSet::new();
        for m in &got {
            let Some((i, original)) = sent.get(m.message_id()) else {
                bail!("filter {filter}: a message never sent: {}", m.message_id());
            };
            ensure!(
                want.contains(&m.message_id().to_owned()),
                "filter {filter} let message {i} through"
            );
            ensure!(
                seen.insert(m.message_id().to_owned()),
                "message {i} delivered twice"
            );
            ensure!(
                m.topic() == topic && m.body() == original.body(),
                "message {i}: topic or body differ"
            );
            ensure!(m.tag() == original.tag(), "message {i}: tag {:?}", m.tag());
            let mut keys = m.keys().to_vec();
            keys.sort();
            let mut want_keys = original.keys().to_vec();
            want_keys.sort();
            ensure!(
                keys == want_keys,
                "message {i}: keys {keys:?}, want {want_keys:?}"
            );
            ensure!(
                m.properties() == original.properties(),
                "message {i}: properties {:?}, want exactly {:?}",
                m.properties(),
                original.properties()
            );
            ensure!(
                m.delivery_attempt() == 1,
                "message {i}: attempt {}",
                m.delivery_attempt()
            );
            ensure!(
                m.message_group().is_none(),
                "message {i} has a message group"
            );
            let born = m.born_time().context("no born time")?;
            ensure!(
                born + Duration::from_secs(2) >= sent_at,
                "message {i}: born time is not the send time"
            );
        }
        expect_nothing(
            &consumer,
            INVISIBLE + Duration::from_secs(1),
            "after acking everything",
        )
        .await?;
        consumer.shutdown().await;
    }
    producer.shutdown().await;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery() -> anyhow::Result<()> {
    let cluster = SdkCluster::single(tune).await?;
    let topic = unique_name("redelivery");
    let producer = producer(&cluster, &topic).await?;
    let sent = producer
        .send(
            Message::builder(&topic)
                .body("redelivery")
                .tag("R")
                .property("scenario", "redelivery")
                .build()?,
        )
        .await?;
    let consumer = simple_consumer(&cluster, &unique_name("grp-redelivery"), &topic, "*").await?;
    let (first, handed_out) = poll(Duration::from_secs(15), "the first delivery", || async {
        let started = Instant::now();
        consumer
            .receive(1, INVISIBLE)
            .await
            .ok()?
            .pop()
            .map(|m| (m, started))
    })
    .await?;
    ensure!(first.message_id() == sent.message_id() && first.delivery_attempt() == 1);
    let mut second = poll(
        INVISIBLE + Duration::from_secs(15),
        "the redelivery",
        || async { consumer.receive(1, INVISIBLE).await.ok()?.pop() },
    )
    .await?;
    ensure!(
        handed_out.elapsed() + EARLY_TOLERANCE >= INVISIBLE,
        "the message came back {:?} after it was handed out, before its invisible time",
        handed_out.elapsed()
    );
    ensure!(
        second.message_id() == sent.message_id(),
        "another message came back"
    );
    ensure!(
        second.delivery_attempt() == 2,
        "redelivery attempt {}",
        second.delivery_attempt()
    );
    ensure!(second.body() == first.body() && second.properties() == first.properties());
    consumer
        .change_invisible_duration(&mut second, INVISIBLE)
        .await
        .context("change invisible duration")?;
    consumer
        .ack(&second)
        .await
        .context("ack with the new receipt handle")?;
    expect_nothing(
        &consumer,
        INVISIBLE + Duration::from_secs(1),
        "after the ack",
    )
    .await?;
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}

fn parse_seq(m: &MessageView) -> anyhow::Result<(usize, usize)> {
    let text = std::str::from_utf8(m.body()).context("body is not text")?;
    let parts: Vec<&str> = text.split(':').collect();
    match parts[..] {
        [_, g, s] => Ok((g.parse()?, s.parse()?)),
        _ => bail!("unexpected body {text:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo() -> anyhow::Result<()> {
    const GROUPS: usize = 3;
    const PER_GROUP: usize = 4;
    let cluster = SdkCluster::single(tune).await?;
    let topic = unique_name("fifo");
    cluster
        .broker()
        .create_topic(&topic, 4, &[MessageType::Fifo])
        .await?;
    let producer = producer(&cluster, &topic).await?;
    let groups: Vec<String> = (0..GROUPS)
        .map(|g| unique_name(&format!("mg{g}")))
        .collect();
    for seq in 0..PER_GROUP {
        for (g, name) in groups.iter().enumerate() {
            let m = Message::builder(&topic)
                .body(format!("fifo:{g}:{seq}"))
                .message_group(name)
                .build()?;
            producer.send(m).await?;
        }
    }
    let consumer = simple_consumer(&cluster, &unique_name("grp-fifo"), &topic, "*").await?;
    // Phase 1: one at a time without acking until nothing more comes: only each group's head.
    let mut heads = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while heads.len() < GROUPS && Instant::now() < deadline {
        heads.extend(consumer.receive(1, Duration::from_secs(20)).await?);
    }
    for m in &heads {
        let (g, seq) = parse_seq(m)?;
        ensure!(
            seq == 0,
            "group {g} delivered message {seq} while its head was in flight"
        );
        ensure!(
            m.message_group() == Some(groups[g].as_str()),
            "wrong message group"
        );
    }
    ensure!(heads.len() == GROUPS, "got {} group heads", heads.len());
    let more = consumer.receive(1, Duration::from_secs(20)).await?;
    ensure!(
        more.is_empty(),
        "a later message was released while every head was in flight"
    );
    for m in &heads {
        consumer.ack(m).await?;
    }
    // Phase 2: everything else, in order per group.
    let mut next = [1usize; GROUPS];
    let rest = GROUPS * (PER_GROUP - 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut count = 0;
    while count < rest {
        ensure!(
            Instant::now() < deadline,
            "only {count} of {rest} later messages arrived"
        );
        for m in consumer.receive(32, Duration::from_secs(20)).await? {
            let (g, seq) = parse_seq(&m)?;
            ensure!(
                seq == next[g],
                "group {g}: got message {seq}, want {}",
                next[g]
            );
            next[g] += 1;
            count += 1;
            consumer.ack(&m).await?;
        }
    }
    expect_nothing(&consumer, Duration::from_secs(1), "after the last message").await?;
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_push() -> anyhow::Result<()> {
    const GROUPS: usize = 2;
    const PER_GROUP: usize = 4;
    const FAIL: (usize, usize) = (0, 1);
    let cluster = SdkCluster::single(tune_dead_letter).await?;
    let topic = unique_name("fifopush");
    cluster
        .broker()
        .create_topic(&topic, 4, &[MessageType::Fifo])
        .await?;
    let producer = producer(&cluster, &topic).await?;
    let names: Vec<String> = (0..GROUPS)
        .map(|g| unique_name(&format!("pmg{g}")))
        .collect();
    let mut failing_id = String::new();
    for seq in 0..PER_GROUP {
        for (g, name) in names.iter().enumerate() {
            let m = Message::builder(&topic)
                .body(format!("fifopush:{g}:{seq}"))
                .message_group(name)
                .build()?;
            let receipt = producer.send(m).await?;
            if (g, seq) == FAIL {
                failing_id = receipt.message_id().to_owned();
            }
        }
    }
    let group = unique_name("grp-fifopush");
    let calls: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let recorder = calls.clone();
    let consumer = PushConsumer::builder(cluster.client_config(), &group)
        .subscribe(&topic, FilterExpression::all())
        .concurrency(4)
        .handler(move |m: MessageView| {
            let parsed = parse_seq(&m);
            let recorder = recorder.clone();
            async move {
                let (g, seq) = parsed.map_err(|e| e.to_string())?;
                recorder.lock().map_err(|e| e.to_string())?.push((g, seq));
                if (g, seq) == FAIL {
                    return Err("this message always fails".to_owned());
                }
                Ok(())
            }
        })
        .build()
        .await?;
    let total = GROUPS * PER_GROUP + MAX_ATTEMPTS as usize - 1;
    poll(Duration::from_secs(40), "every listener call", || async {
        (calls.lock().ok()?.len() >= total).then_some(())
    })
    .await?;
    let snapshot = calls.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    for g in 0..GROUPS {
        let got: Vec<usize> = snapshot
            .iter()
            .filter(|(x, _)| *x == g)
            .map(|(_, s)| *s)
            .collect();
        let mut want = Vec::new();
        for seq in 0..PER_GROUP {
            let n = if (g, seq) == FAIL {
                MAX_ATTEMPTS as usize
            } else {
                1
            };
            want.extend(std::iter::repeat_n(seq, n));
        }
        ensure!(got == want, "group {g}: calls {got:?}, want {want:?}");
    }
    let dlq = simple_consumer(
        &cluster,
        &unique_name("grp-dlq-reader"),
        &format!("%DLQ%{group}"),
        "*",
    )
    .await?;
    let dead = receive_and_ack(&dlq, 1, Duration::from_secs(20)).await?;
    ensure!(
        dead[0].message_id() == failing_id,
        "the dead-letter queue holds {}",
        dead[0].message_id()
    );
    ensure!(dead[0].body().as_ref() == b"fifopush:0:1");
    consumer.shutdown().await;
    dlq.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq() -> anyhow::Result<()> {
    let cluster = SdkCluster::single(tune_dead_letter).await?;
    let topic = unique_name("dlq");
    let group = unique_name("grp-dlq");
    let producer = producer(&cluster, &topic).await?;
    let original = Message::builder(&topic)
        .body("dead-letter")
        .tag("D")
        .key("dlq-key")
        .property("scenario", "dlq")
        .build()?;
    let id = producer
        .send(original.clone())
        .await?
        .message_id()
        .to_owned();
    let consumer = simple_consumer(&cluster, &group, &topic, "*").await?;
    for attempt in 1..=MAX_ATTEMPTS {
        let m = poll(
            INVISIBLE + Duration::from_secs(15),
            "a delivery",
            || async { consumer.receive(1, INVISIBLE).await.ok()?.pop() },
        )
        .await?;
        ensure!(
            m.message_id() == id,
            "unexpected message {}",
            m.message_id()
        );
        ensure!(
            m.delivery_attempt() == attempt,
            "delivery attempt {}, want {attempt}",
            m.delivery_attempt()
        );
    }
    let reader = simple_consumer(
        &cluster,
        &unique_name("grp-dlq-reader"),
        &format!("%DLQ%{group}"),
        "*",
    )
    .await?;
    // The group keeps asking (and must get nothing) while the message moves to the DLQ.
    let deadline = Instant::now() + INVISIBLE + Duration::from_secs(25);
    let d = loop {
        ensure!(
            Instant::now() < deadline,
            "the message did not reach the dead-letter queue"
        );
        let again = consumer.receive(1, INVISIBLE).await?;
        ensure!(
            again.is_empty(),
            "the group got the message after its last attempt"
        );
        if let Some(m) = reader.receive(1, INVISIBLE).await?.pop() {
            reader.ack(&m).await?;
            break m;
        }
    };
    let d = &d;
    ensure!(d.message_id() == id && d.topic() == format!("%DLQ%{group}"));
    ensure!(d.body() == original.body() && d.tag() == Some("D") && d.keys() == ["dlq-key"]);
    ensure!(
        d.properties() == original.properties(),
        "properties {:?}",
        d.properties()
    );
    expect_nothing(
        &consumer,
        INVISIBLE + Duration::from_secs(1),
        "after the message was dead-lettered",
    )
    .await?;
    expect_nothing(
        &reader,
        INVISIBLE,
        "from the dead-letter queue after the ack",
    )
    .await?;
    consumer.shutdown().await;
    reader.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_consumer() -> anyhow::Result<()> {
    const N: usize = 6;
    let cluster = SdkCluster::single(tune).await?;
    let topic = unique_name("push");
    let producer = producer(&cluster, &topic).await?;
    let mut ids = Vec::new();
    for i in 0..N {
        let m = Message::builder(&topic)
            .body(format!("push-{i}"))
            .tag("P")
            .build()?;
        ids.push(producer.send(m).await?.message_id().to_owned());
    }
    let fail_id = ids[2].clone();
    type Log = Vec<(Instant, String, u32)>;
    let log: Arc<Mutex<Log>> = Arc::default();
    let recorder = log.clone();
    let consumer = PushConsumer::builder(cluster.client_config(), unique_name("grp-push"))
        .subscribe(&topic, FilterExpression::all())
        .handler(move |m: MessageView| {
            let recorder = recorder.clone();
            let fail = m.message_id() == fail_id && m.delivery_attempt() == 1;
            async move {
                recorder.lock().map_err(|e| e.to_string())?.push((
                    Instant::now(),
                    m.message_id().to_owned(),
                    m.delivery_attempt(),
                ));
                if fail {
                    return Err("fail the first delivery".to_owned());
                }
                Ok(())
            }
        })
        .build()
        .await?;
    poll(
        Duration::from_secs(30),
        "every message and the retry",
        || async { (log.lock().ok()?.len() > N).then_some(()) },
    )
    .await?;
    // Anything delivered after a success would show up within the auto-renewed invisible time.
    let quiet = Instant::now() + Duration::from_secs(2);
    while Instant::now() < quiet {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.shutdown().await;
    let log = log.lock().map_err(|e| anyhow::anyhow!("{e}"))?.clone();
    let mut per_id: BTreeMap<&str, Vec<(Instant, u32)>> = BTreeMap::new();
    for (t, id, attempt) in &log {
        per_id.entry(id.as_str()).or_default().push((*t, *attempt));
    }
    ensure!(
        per_id.len() == N,
        "{} distinct messages handled, want {N}",
        per_id.len()
    );
    for (id, calls) in &per_id {
        if *id == ids[2] {
            ensure!(
                calls.len() == 2,
                "the failed message was handled {} times",
                calls.len()
            );
            ensure!(calls[1].1 == 2, "its retry has attempt {}", calls[1].1);
        } else {
            ensure!(
                calls.len() == 1,
                "message {id} handled {} times after success",
                calls.len()
            );
        }
    }
    producer.shutdown().await;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_batch() -> anyhow::Result<()> {
    const N: usize = 40;
    const BATCH: u32 = 8;
    let cluster = SdkCluster::single(tune).await?;
    let topic = unique_name("async");
    let producer = producer(&cluster, &topic).await?;
    let sends = (0..N).map(|i| {
        let producer = producer.clone();
        let m = Message::builder(&topic)
            .body(format!("async-{i}"))
            .tag("X")
            .key(format!("k{i}"))
            .build();
        tokio::spawn(async move { producer.send(m?).await.map(|r| (i, r)) })
    });
    let mut sent = HashMap::new();
    for handle in sends.collect::<Vec<_>>() {
        let (i, receipt) = handle.await??;
        sent.insert(receipt.message_id().to_owned(), format!("async-{i}"));
    }
    ensure!(
        sent.len() == N,
        "{} distinct message ids for {N} sends",
        sent.len()
    );
    let consumer = simple_consumer(&cluster, &unique_name("grp-async"), &topic, "*").await?;
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < N {
        ensure!(Instant::now() < deadline, "received {} of {N}", seen.len());
        let batch = consumer.receive(BATCH, Duration::from_secs(20)).await?;
        ensure!(
            batch.len() <= BATCH as usize,
            "a batch of {} for max {BATCH}",
            batch.len()
        );
        for m in batch {
            let body = sent.get(m.message_id()).context("a message never sent")?;
            ensure!(m.body().as_ref() == body.as_bytes(), "body differs");
            ensure!(seen.insert(m.message_id().to_owned()), "delivered twice");
            consumer.ack(&m).await?;
        }
    }
    expect_nothing(
        &consumer,
        INVISIBLE + Duration::from_secs(1),
        "after acking all",
    )
    .await?;
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body() -> anyhow::Result<()> {
    let cluster = SdkCluster::single(tune).await?;
    let max = cluster.broker().config().max_body_size;
    let topic = unique_name("large");
    let producer = producer(&cluster, &topic).await?;
    let large: Vec<u8> = (0..max)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let binary: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    let mut bodies = HashMap::new();
    for body in [large.clone(), binary] {
        let r = producer
            .send(
                Message::builder(&topic)
                    .body(body.clone())
                    .tag("L")
                    .build()?,
            )
            .await?;
        bodies.insert(r.message_id().to_owned(), body);
    }
    let mut too_large = large;
    too_large.push(0);
    let refused = producer
        .send(Message::builder(&topic).body(too_large).build()?)
        .await;
    ensure!(
        matches!(refused, Err(Error::BodyTooLarge { .. })),
        "a body above the limit was not refused by the client: {refused:?}"
    );
    let consumer = simple_consumer(&cluster, &unique_name("grp-large"), &topic, "*").await?;
    for m in receive_and_ack(&consumer, 2, Duration::from_secs(30)).await? {
        let want = bodies.get(m.message_id()).context("unexpected message")?;
        ensure!(!m.is_corrupted(), "the body digest did not match");
        ensure!(
            m.body().as_ref() == want.as_slice(),
            "a body of {} bytes differs",
            want.len()
        );
    }
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic() -> anyhow::Result<()> {
    let cluster = SdkCluster::single(|c| {
        tune(c);
        c.auto_create_topics = false;
    })
    .await?;
    let existing = unique_name("existing");
    let missing = unique_name("missing");
    cluster
        .broker()
        .create_topic(&existing, 4, &[MessageType::Normal])
        .await?;
    let producer = producer(&cluster, &existing).await?;
    producer
        .send(
            Message::builder(&existing)
                .body("control")
                .tag("C")
                .build()?,
        )
        .await?;
    let refused = producer
        .send(Message::builder(&missing).body("lost").build()?)
        .await;
    ensure!(
        refused.as_ref().err().and_then(Error::code) == Some(Code::TopicNotFound),
        "sending to a missing topic: {refused:?}"
    );
    let consumer = SimpleConsumer::builder(cluster.client_config(), unique_name("grp-missing"))
        .subscribe(&missing, FilterExpression::all())
        .await_duration(AWAIT)
        .build()
        .await;
    match consumer {
        Err(e) => ensure!(e.code() == Some(Code::TopicNotFound), "consumer start: {e}"),
        Ok(c) => {
            let r = c.receive(1, INVISIBLE).await;
            ensure!(
                r.as_ref().err().and_then(Error::code) == Some(Code::TopicNotFound),
                "receive from a missing topic: {r:?}"
            );
            c.shutdown().await;
        }
    }
    producer.shutdown().await;
    cluster.stop().await
}
