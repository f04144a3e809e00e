//! The Rust SDK when brokers come and go: retries across a broker restart, route refresh when
//! a topic appears on a second broker group, first sends of a new producer, FIFO order under
//! PushConsumer concurrency, and PushConsumer shutdown without lost acks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use rocketlog_broker::BrokerConfig;
use rocketlog_client::{
    ClientConfig, FilterExpression, Message, MessageView, Producer, PushConsumer,
};
use rocketlog_tests::{poll, unique_name, MessageType, SdkCluster};

fn quick_push(c: &mut BrokerConfig) {
    c.receive.min_long_polling_ms = 500;
    c.receive.max_long_polling_ms = 2_000;
    c.receive.auto_renew_invisible_duration_ms = 3_000;
    c.receive.auto_renew_ahead_ms = 1_000;
    c.receive.auto_renew_period_ms = 500;
}

/// A stopped broker fails sends (after the client's retries); once it is back on the same
/// port and data directory, the same producer sends again, and what was stored before the stop
/// is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_resume_after_a_broker_restart() -> anyhow::Result<()> {
    let mut cluster = SdkCluster::single(|_| {}).await?;
    let topic = unique_name("restart");
    let config = ClientConfig::builder()
        .access_point(cluster.broker().endpoint())
        .request_timeout(Duration::from_secs(1))
        .build()?;
    let producer = Producer::builder(config).topics([&topic]).build().await?;
    let before = producer
        .send(Message::builder(&topic).body("before").build()?)
        .await?;

    cluster.brokers[0].stop().await?;
    let failed = producer
        .send(Message::builder(&topic).body("while down").build()?)
        .await;
    ensure!(failed.is_err(), "a send succeeded with the broker down");

    // A send in flight across the restart: retried until the broker is back.
    let retrying = {
        let producer = producer.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let m = Message::builder(&topic).body("after").build()?;
                match producer.send(m).await {
                    Ok(r) => return anyhow::Ok(r),
                    Err(e) if Instant::now() < deadline => {
                        tracing::info!("send while the broker restarts: {e}");
                        // Pacing between attempts (connection refused fails at once).
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        })
    };
    cluster.brokers[0].restart().await?;
    let after = retrying.await??;
    ensure!(after.message_id() != before.message_id());
    // The restarted broker kept what it stored before the stop.
    let reader = rocketlog_client::SimpleConsumer::builder(
        cluster.client_config(),
        unique_name("grp-restart"),
    )
    .subscribe(&topic, FilterExpression::all())
    .await_duration(Duration::from_secs(2))
    .build()
    .await?;
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(seen.contains(before.message_id()) && seen.contains(after.message_id())) {
        ensure!(
            Instant::now() < deadline,
            "after the restart only {seen:?} came back"
        );
        for m in reader.receive(16, Duration::from_secs(10)).await? {
            seen.insert(m.message_id().to_owned());
        }
    }
    reader.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await
}

/// A topic first served by broker-a, then also created on broker-b: the producer's periodic
/// route refresh picks broker-b up and its sends reach both brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_refresh_finds_a_second_broker_group() -> anyhow::Result<()> {
    let cluster = SdkCluster::start(2, |_| {}).await?;
    let topic = unique_name("two-groups");
    let (a, b) = (&cluster.brokers[0], &cluster.brokers[1]);
    a.create_topic(&topic, 2, &[MessageType::Normal]).await?;
    let config = ClientConfig::builder()
        .access_point(a.endpoint())
        .route_refresh_interval(Duration::from_millis(300))
        .build()?;
    let producer = Producer::builder(config).topics([&topic]).build().await?;
    for _ in 0..4 {
        let r = producer
            .send(Message::builder(&topic).body("a only").build()?)
            .await?;
        ensure!(
            r.endpoint() == a.endpoint(),
            "sent to {} before broker-b had the topic",
            r.endpoint()
        );
    }

    b.create_topic(&topic, 2, &[MessageType::Normal]).await?;
    let reached_b = poll(
        Duration::from_secs(20),
        "a send stored by broker-b",
        || async {
            let r = producer
                .send(Message::builder(&topic).body("either").build().ok()?)
                .await
                .ok()?;
            (r.endpoint() == b.endpoint()).then_some(r)
        },
    )
    .await?;
    ensure!(reached_b.offset() >= 0);
    let mut brokers = HashSet::new();
    for _ in 0..8 {
        let r = producer
            .send(Message::builder(&topic).body("both").build()?)
            .await?;
        brokers.insert(r.endpoint());
    }
    ensure!(brokers.len() == 2, "round robin reached only {brokers:?}");
    producer.shutdown().await;
    cluster.stop().await
}

/// The first sends of a new producer are answered on their first attempt: no request of a
/// fresh producer is lost or left waiting for a handshake or route (a regression guard for a
/// reported first-send stall of one request timeout). With a single attempt allowed, a lost
/// first request fails the send instead of being hidden by a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sends_of_a_new_producer_succeed_on_the_first_attempt() -> anyhow::Result<()> {
    let cluster = SdkCluster::single(|_| {}).await?;
    for prepared in [true, false] {
        let topic = unique_name("first-send");
        let mut builder = Producer::builder(cluster.client_config()).max_attempts(1);
        if prepared {
            builder = builder.topics([&topic]);
        }
        let producer = builder.build().await?;
        let sends = (0..8).map(|i| {
            let producer = producer.clone();
            let m = Message::builder(&topic).body(format!("first-{i}")).build();
            tokio::spawn(async move { producer.send(m?).await.map_err(anyhow::Error::from) })
        });
        let mut ids = HashSet::new();
        for s in sends.collect::<Vec<_>>() {
            let receipt = s
                .await?
                .with_context(|| format!("a first send (topics prepared: {prepared})"))?;
            ids.insert(receipt.message_id().to_owned());
        }
        ensure!(
            ids.len() == 8,
            "{} distinct receipts for 8 sends",
            ids.len()
        );
        producer.shutdown().await;
    }
    cluster.stop().await
}

/// Several message groups consumed by a PushConsumer with 8 handlers: each group's messages
/// reach the handler in send order, never two of one group at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_order_under_push_concurrency() -> anyhow::Result<()> {
    const GROUPS: usize = 6;
    const PER_GROUP: usize = 15;
    let cluster = SdkCluster::single(quick_push).await?;
    let topic = unique_name("fifo-push");
    cluster
        .broker()
        .create_topic(&topic, 4, &[MessageType::Fifo])
        .await?;
    let producer = Producer::builder(cluster.client_config())
        .topics([&topic])
        .build()
        .await?;
    let names: Vec<String> = (0..GROUPS).map(|g| unique_name(&format!("g{g}"))).collect();
    for seq in 0..PER_GROUP {
        for (g, name) in names.iter().enumerate() {
            let m = Message::builder(&topic)
                .body(format!("{g}:{seq}"))
                .message_group(name)
                .build()?;
            producer.send(m).await?;
        }
    }

    #[derive(Default)]
    struct State {
        order: HashMap<usize, Vec<usize>>,
        running: HashSet<usize>,
        overlaps: Vec<usize>,
        peak: usize,
    }
    let state: Arc<Mutex<State>> = Arc::default();
    let handler_state = state.clone();
    let consumer = PushConsumer::builder(cluster.client_config(), unique_name("grp-fifo-push"))
        .subscribe(&topic, FilterExpression::all())
        .concurrency(8)
        .handler(move |m: MessageView| {
            let state = handler_state.clone();
            async move {
                let text = String::from_utf8_lossy(m.body()).into_owned();
                let (g, seq) = text
                    .split_once(':')
                    .and_then(|(g, s)| Some((g.parse::<usize>().ok()?, s.parse::<usize>().ok()?)))
                    .ok_or_else(|| format!("bad body {text:?}"))?;
                {
                    let mut s = state.lock().map_err(|e| e.to_string())?;
                    if !s.running.insert(g) {
                        s.overlaps.push(g);
                    }
                    s.peak = s.peak.max(s.running.len());
                    s.order.entry(g).or_default().push(seq);
                }
                // Give other groups' handlers a chance to run meanwhile.
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                state.lock().map_err(|e| e.to_string())?.running.remove(&g);
                Ok::<(), String>(())
            }
        })
        .build()
        .await?;
    poll(Duration::from_secs(60), "every message handled", || async {
        let s = state.lock().ok()?;
        (s.order.values().map(Vec::len).sum::<usize>() >= GROUPS * PER_GROUP).then_some(())
    })
    .await?;
    consumer.shutdown().await;
    {
        let s = state.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(
            s.overlaps.is_empty(),
            "groups handled twice at once: {:?}",
            s.overlaps
        );
        for g in 0..GROUPS {
            let want: Vec<usize> = (0..PER_GROUP).collect();
            ensure!(
                s.order.get(&g) == Some(&want),
                "group {g} order {:?}",
                s.order.get(&g)
            );
        }
        tracing::info!(peak = s.peak, "groups handled at once");
    }
    producer.shutdown().await;
    cluster.stop().await
}

/// A PushConsumer shut down mid-stream waits for its running handlers and their acks: a new
/// consumer of the group gets every message the first one did not finish, and none it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_shutdown_loses_no_acks() -> anyhow::Result<()> {
    const N: usize = 60;
    let cluster = SdkCluster::single(quick_push).await?;
    let topic = unique_name("push-shutdown");
    let group = unique_name("grp-push-shutdown");
    let producer = Producer::builder(cluster.client_config())
        .topics([&topic])
        .build()
        .await?;
    let mut all = HashSet::new();
    for i in 0..N {
        let r = producer
            .send(Message::builder(&topic).body(format!("m{i}")).build()?)
            .await?;
        all.insert(r.message_id().to_owned());
    }

    let start_consumer = |done: Arc<Mutex<Vec<String>>>, work: Duration| {
        PushConsumer::builder(cluster.client_config(), &group)
            .subscribe(&topic, FilterExpression::all())
            .concurrency(4)
            .handler(move |m: MessageView| {
                let done = done.clone();
                async move {
                    // Handlers take a while, so several are running when shutdown comes.
                    tokio::time::sleep(work).await;
                    done.lock()
                        .map_err(|e| e.to_string())?
                        .push(m.message_id().to_owned());
                    Ok::<(), String>(())
                }
            })
            .build()
    };
    let first_done: Arc<Mutex<Vec<String>>> = Arc::default();
    let first = start_consumer(first_done.clone(), Duration::from_millis(50)).await?;
    poll(
        Duration::from_secs(20),
        "the first consumer to handle 10 messages",
        || async { (first_done.lock().ok()?.len() >= 10).then_some(()) },
    )
    .await?;
    first.shutdown().await;
    let handled_first: HashSet<String> = first_done
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .cloned()
        .collect();
    ensure!(
        handled_first.len() < N,
        "the first consumer handled everything before shutdown"
    );

    let second_done: Arc<Mutex<Vec<String>>> = Arc::default();
    let second = start_consumer(second_done.clone(), Duration::ZERO).await?;
    let missing = poll(
        Duration::from_secs(40),
        "the rest to be handled",
        || async {
            let done = second_done.lock().ok()?;
            let covered: HashSet<&String> = done.iter().chain(handled_first.iter()).collect();
            (covered.len() >= N).then_some(())
        },
    )
    .await;
    second.shutdown().await;
    let handled_second = second_done
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .clone();
    missing.with_context(|| {
        format!(
            "first handled {}, second {}",
            handled_first.len(),
            handled_second.len()
        )
    })?;
    let again: Vec<&String> = handled_second
        .iter()
        .filter(|id| handled_first.contains(*id))
        .collect();
    ensure!(
        again.is_empty(),
        "{} message(s) acked by the first consumer were delivered again: {again:?}",
        again.len()
    );
    ensure!(handled_second.iter().all(|id| all.contains(id)));
    producer.shutdown().await;
    cluster.stop().await
}
