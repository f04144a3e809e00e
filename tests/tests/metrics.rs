//! Prometheus metrics of a real broker and nameserver: a known load through the Rust SDK
//! (50 messages to one topic, 20 to another, 30 of the first received and acked by a group),
//! then `GET /metrics` over HTTP/1.1, parsed as Prometheus text, checked value by value.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use prometheus_parse::{Sample, Scrape, Value};
use rocketlog_client::{FilterExpression, Message, Producer, SimpleConsumer};
use rocketlog_tests::cluster::{test_broker_config, test_nameserver_config};
use rocketlog_tests::{poll, unique_name, BrokerNode, MessageType, NameserverNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const INVISIBLE: Duration = Duration::from_secs(30);

/// `GET path` over a new connection: the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .context("the metrics port did not answer in time")??;
    let text = String::from_utf8(raw)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of the response head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status code")?;
    // The body of a response with Connection: close; chunked encoding is not used for it.
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "unexpected chunked response"
    );
    Ok((status, body.to_owned()))
}

async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<Scrape> {
    let (status, body) = get(addr, "/metrics").await?;
    ensure!(status == 200, "GET /metrics answered {status}: {body}");
    Ok(Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))?)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => Some(*x),
        _ => None,
    }
}

fn matching<'a>(
    s: &'a Scrape,
    metric: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a Sample> + 'a {
    s.samples.iter().filter(move |x| {
        x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
    })
}

/// The sum of the samples of `metric` with `labels` (None if there is none).
fn sum(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = matching(s, metric, labels)
        .filter_map(|x| number(&x.value))
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// `(le, count)` of a histogram, in order.
fn histogram_buckets(
    s: &Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> anyhow::Result<Vec<(f64, f64)>> {
    let sample = matching(s, metric, labels)
        .next()
        .with_context(|| format!("no histogram {metric} {labels:?}"))?;
    match &sample.value {
        Value::Histogram(b) => Ok(b.iter().map(|h| (h.less_than, h.count)).collect()),
        other => bail!("{metric} is not a histogram: {other:?}"),
    }
}

fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
    sum(s, metric, labels).with_context(|| format!("no sample {metric} {labels:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_and_nameserver_metrics() -> anyhow::Result<()> {
    rocketlog_tests::nodes::init_test_logs();
    let data = tempfile::tempdir()?;
    // The nameserver's metrics port: a free port picked by binding 0 (its run binds it).
    let ns_metrics = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let mut ns_config = test_nameserver_config();
    ns_config.metrics_listen = Some(ns_metrics);
    let mut nameserver = NameserverNode::start_with(ns_config).await?;
    let mut config = test_broker_config();
    config.store.segment_size = 16 << 20;
    config.broker_name = "broker-a".into();
    config.data_dir = data.path().join("broker-a");
    config.nameserver_addresses = vec![nameserver.address().to_string()];
    config.metrics_listen = Some("127.0.0.1:0".parse()?);
    let mut broker = BrokerNode::start(config).await?;
    let outcome = exercise(&broker, ns_metrics).await;
    let stopped = broker.stop().await;
    let ns_stopped = nameserver.stop().await;
    outcome?;
    stopped?;
    ns_stopped
}

async fn exercise(broker: &BrokerNode, ns_metrics: std::net::SocketAddr) -> anyhow::Result<()> {
    let metrics = broker
        .metrics_address()
        .context("the broker reported no metrics port")?;
    let (status, _) = get(metrics, "/elsewhere").await?;
    ensure!(status == 404, "another path answered {status}");

    let (topic_a, topic_b) = (unique_name("metrics-a"), unique_name("metrics-b"));
    let group = unique_name("metrics-group");
    // One queue: the group's receives visit it, so its lag row covers all of topic A (lag is
    // reported for the queues a group has state on, as `admin group describe` does).
    broker
        .create_topic(&topic_a, 1, &[MessageType::Normal])
        .await?;
    let producer = Producer::builder(broker.client_config())
        .topics([topic_a.as_str(), topic_b.as_str()])
        .build()
        .await?;
    let mut body_bytes = [0usize; 2];
    for (i, (topic, n)) in [(&topic_a, 50), (&topic_b, 20)].into_iter().enumerate() {
        for k in 0..n {
            let body = format!("{topic}-{k}-{}", "x".repeat(k));
            body_bytes[i] += body.len();
            producer
                .send(Message::builder(topic.as_str()).body(body).build()?)
                .await?;
        }
    }
    let consumer = SimpleConsumer::builder(broker.client_config(), group.as_str())
        .subscribe(topic_a.as_str(), FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = 0u32;
    while received < 30 {
        if Instant::now() > deadline {
            bail!("received {received} of 30 messages in time");
        }
        for m in consumer.receive(30 - received, INVISIBLE).await? {
            consumer.ack(&m).await?;
            received += 1;
        }
    }

    let s = scrape(metrics).await?;
    let a = [("topic", topic_a.as_str())];
    let b = [("topic", topic_b.as_str())];
    ensure!(value(&s, "rocketmq_messages_in_total", &a)? == 50.0);
    ensure!(value(&s, "rocketmq_messages_in_total", &b)? == 20.0);
    ensure!(value(&s, "rocketmq_throughput_in_total", &a)? == body_bytes[0] as f64);
    ensure!(value(&s, "rocketmq_throughput_in_total", &b)? == body_bytes[1] as f64);
    let delivered = [
        ("topic", topic_a.as_str()),
        ("consumer_group", group.as_str()),
    ];
    ensure!(value(&s, "rocketmq_messages_out_total", &delivered)? == 30.0);
    ensure!(value(&s, "rocketmq_throughput_out_total", &delivered)? > 0.0);
    let lag = value(&s, "rocketmq_consumer_lag_messages", &delivered)?;
    ensure!(lag == 20.0, "lag of topic A is {lag}, not 20");
    ensure!(
        matching(&s, "rocketmq_consumer_lag_messages", &delivered)
            .all(|x| x.labels.get("queue_id").is_some()),
        "lag samples carry queue_id"
    );
    ensure!(value(&s, "rocketmq_consumer_inflight_messages", &delivered)? == 0.0);
    let sends = value(
        &s,
        "rocketmq_rpc_latency_seconds_count",
        &[("method", "SendMessage")],
    )?;
    ensure!(sends >= 70.0, "SendMessage latency count {sends}");
    ensure!(
        value(
            &s,
            "rocketmq_rpc_latency_seconds_count",
            &[("method", "ReceiveMessage")]
        )? >= 1.0
    );
    let max = value(&s, "rocketlog_commitlog_max_offset_bytes", &[])?;
    let flushed = value(&s, "rocketlog_commitlog_flushed_offset_bytes", &[])?;
    ensure!(max > 0.0, "commit-log max offset {max}");
    ensure!(
        flushed > 0.0 && flushed <= max,
        "flushed {flushed}, max {max}"
    );
    ensure!(value(&s, "rocketlog_commitlog_dispatched_offset_bytes", &[])? <= max);
    ensure!(value(&s, "rocketmq_storage_size_bytes", &[])? > 0.0);
    let ratio = value(&s, "rocketlog_disk_used_ratio", &[])?;
    ensure!((0.0..=1.0).contains(&ratio), "disk ratio {ratio}");
    let fsyncs = value(&s, "rocketlog_fsync_duration_seconds_count", &[])?;
    ensure!(fsyncs >= 1.0, "fsync count {fsyncs}");
    let all = histogram_buckets(&s, "rocketlog_fsync_duration_seconds", &[])?;
    ensure!(
        all.last().map(|b| b.1) == Some(fsyncs),
        "fsync buckets {all:?} do not end at the count {fsyncs}"
    );
    ensure!(
        all.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative {all:?}"
    );
    let send_buckets = histogram_buckets(
        &s,
        "rocketmq_rpc_latency_seconds",
        &[("method", "SendMessage")],
    )?;
    ensure!(send_buckets.last().map(|b| b.1) == Some(sends));
    ensure!(value(&s, "rocketlog_client_connections", &[])? >= 1.0);
    ensure!(value(&s, "rocketlog_transactions_open", &[])? == 0.0);
    ensure!(value(&s, "rocketlog_delayed_messages", &[])? == 0.0);
    ensure!(value(&s, "process_resident_memory_bytes", &[])? > 0.0);
    ensure!(value(&s, "process_open_fds", &[])? > 0.0);
    ensure!(sum(&s, "process_cpu_seconds_total", &[]).is_some());
    ensure!(
        !s.samples
            .iter()
            .any(|x| x.labels.get("message_id").is_some() || x.labels.get("client_id").is_some()),
        "no per-message or per-client labels"
    );

    // The nameserver: the broker registers (heartbeats) and answers route queries through it.
    let ns = poll(
        Duration::from_secs(20),
        "the nameserver's metrics",
        || async {
            let s = scrape(ns_metrics).await.ok()?;
            let brokers = sum(&s, "rocketlog_nameserver_brokers", &[])?;
            let topics = sum(&s, "rocketlog_nameserver_topics", &[])?;
            (brokers >= 1.0 && topics >= 2.0).then_some(s)
        },
    )
    .await?;
    ensure!(
        value(
            &ns,
            "rocketlog_nameserver_requests_total",
            &[("method", "RegisterBroker")]
        )? >= 1.0
    );
    ensure!(value(&ns, "process_resident_memory_bytes", &[])? > 0.0);
    producer.shutdown().await;
    consumer.shutdown().await;
    Ok(())
}
