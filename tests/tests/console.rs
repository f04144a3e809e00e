//! The web console in a real browser: a broker and its nameserver on the test's runtime, the
//! console on the broker's HTTP port (`metrics_listen` on port 0), a known load through the
//! Rust SDK, then `tests/console/console_test.py` (selenium from the test virtualenv driving
//! Debian's headless chromium and chromedriver) opens every page and checks that the values
//! shown are that load; afterwards the admin API confirms what the pages changed (topics
//! created and deleted through the form, the group's offsets reset to the earliest message).
//!
//! - `console_pages_show_the_broker_state`: cluster, topics, groups, group detail (lag chart,
//!   reset offset) and messages pages;
//! - `console_sign_in_with_auth_on`: with authentication on, the sign-in form, a wrong secret,
//!   the super user, a user who is not one, sign-out;
//! - `console_shows_a_master_and_its_slave`: a master and a slave following it, each with its
//!   console: the master's page lists the slave with its log end and lag, the slave's shows
//!   whom it follows and how far behind it is, and the cluster table both replicas.
//!
//! A missing browser or driver fails the tests (`.ci/run` installs both). Screenshots of every
//! page are written to `<target dir>/console-screenshots/` and their paths printed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context};
// Where the broker holds a delayed message until it is due, and a transaction's half message.
use rocketlog_broker::timer::TIMER_TOPIC;
use rocketlog_broker::transaction::HALF_TOPIC;
use rocketlog_broker::BrokerConfig;
use rocketlog_client::{
    Credentials, FilterExpression, Message, MessageView, Producer, SigningInterceptor,
    SimpleConsumer, TransactionProducer, TransactionResolution,
};
use rocketlog_proto::admin::v1 as admin;
use rocketlog_proto::admin::v1::admin_client::AdminClient;
use rocketlog_tests::cluster::{test_broker_config, test_nameserver_config};
use rocketlog_tests::{poll, process, unique_name, venv, MessageType, NameserverNode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Debian's browser and driver, the only ones the checks use.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The whole browser run (every page, every check).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one value may take to show on a page (the pages refresh every 5 s).
const VALUE_TIMEOUT_SECS: u64 = 30;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The known load.
const NORMAL_MESSAGES: usize = 40;
const NORMAL_QUEUES: u32 = 2;
const ACKED: usize = 25;
const IN_FLIGHT: usize = 5;
const FIFO_MESSAGES: usize = 6;
/// Long enough that nothing received becomes visible again during the test.
const INVISIBLE: Duration = Duration::from_secs(600);
const BROKER_NAME: &str = "broker-console";

type Admin = AdminClient<InterceptedService<Channel, SigningInterceptor>>;

/// A broker on the test's runtime, with its console (HTTP) port.
struct ConsoleBroker {
    client: SocketAddr,
    console: SocketAddr,
    /// The bound replication port (`replication_listen`), if any.
    replication: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl ConsoleBroker {
    /// Starts the broker and waits until it serves and has reported its HTTP port.
    async fn start(config: BrokerConfig) -> anyhow::Result<ConsoleBroker> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let client = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                // A dropped sender (a failed test) stops the broker as well.
                let _ = stopped.await;
            };
            rocketlog_broker::run_with_ready(config, listener, shutdown, move |r| {
                let _ = ready_tx.send((r.metrics, r.replication));
            })
            .await
            .map_err(|e| e.to_string())
        });
        let (console, replication) = match tokio::time::timeout(READY_TIMEOUT, ready_rx).await {
            Ok(Ok((Some(addr), replication))) => (addr, replication),
            Ok(Ok((None, _))) => bail!("the broker serves but reported no HTTP (console) port"),
            Ok(Err(_)) => {
                let outcome = tokio::time::timeout(STOP_TIMEOUT, task).await;
                bail!("the broker stopped during startup: {outcome:?}");
            }
            Err(_) => bail!("the broker did not serve within {READY_TIMEOUT:?}"),
        };
        Ok(ConsoleBroker {
            client,
            console,
            replication,
            stop: Some(stop),
            task,
        })
    }

    /// Stops the broker gracefully.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            // The broker may have ended already; then nobody listens.
            let _ = stop.send(());
        }
        match tokio::time::timeout(STOP_TIMEOUT, &mut self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(anyhow!("the broker stopped with an error: {e}")),
            Ok(Err(join)) => Err(anyhow!("the broker task failed: {join}")),
            Err(_) => Err(anyhow!("the broker did not stop within {STOP_TIMEOUT:?}")),
        }
    }

    fn client_config(&self) -> rocketlog_client::ClientConfig {
        rocketlog_client::ClientConfig::builder()
            .access_point(self.client.to_string())
            .build()
            .unwrap_or_else(|e| panic!("a client configuration for {}: {e}", self.client))
    }

    /// The console's address as the browser opens it.
    fn url(&self) -> String {
        format!("http://{}/", self.console)
    }

    /// The admin API (gRPC on the client port), signed with `credentials` when given.
    async fn admin(&self, credentials: Option<Credentials>) -> anyhow::Result<Admin> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.client))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect()
            .await?;
        Ok(AdminClient::with_interceptor(
            channel,
            SigningInterceptor::new(credentials),
        ))
    }
}

/// The broker configuration of these tests: small files, lag sampled every 200 ms so the
/// chart has points within a second.
fn console_config(nameserver: &NameserverNode, data: &Path) -> anyhow::Result<BrokerConfig> {
    let mut config = test_broker_config();
    config.store.segment_size = 16 << 20;
    config.store.consume_queue_segment_entries = 1000;
    config.broker_name = BROKER_NAME.into();
    config.data_dir = data.join(BROKER_NAME);
    config.nameserver_addresses = vec![nameserver.address().to_string()];
    config.metrics_listen = Some("127.0.0.1:0".parse()?);
    config.console.lag_sample_interval_ms = 200;
    // The transaction left open stays open for the whole test.
    config.transaction.first_check_delay_ms = 600_000;
    Ok(config)
}

fn workspace_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().unwrap_or(tests).to_path_buf()
}

/// `<target dir>/console-screenshots`: the target dir from CARGO_TARGET_DIR, else the
/// workspace's `target/`.
fn screenshot_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    };
    target.join("console-screenshots")
}

/// Runs the browser checks with `args` (their JSON argument); fails with the script's output.
fn run_browser_checks(args: &Value) -> anyhow::Result<()> {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        ensure!(
            Path::new(path).exists(),
            "{path} is missing: the console tests need Debian's {package} \
             (apt-get install -y chromium chromium-driver; .ci/run installs them)"
        );
    }
    let python = venv::python().map_err(|e| anyhow!("the Python virtualenv: {e}"))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("console")
        .join("console_test.py");
    // Chromium and fontconfig write caches under HOME: a temporary one, removed afterwards.
    let home = tempfile::tempdir()?;
    let mut cmd = Command::new(python);
    cmd.arg("-u")
        .arg(&script)
        .arg(args.to_string())
        .env("HOME", home.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SE_OFFLINE", "true");
    let done = process::run(&mut cmd, SCRIPT_TIMEOUT)?;
    println!("{}", done.stdout);
    if !done.success() {
        bail!(
            "the console checks failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            done.describe(),
            done.stdout,
            done.stderr
        );
    }
    Ok(())
}

/// The browser checks on a blocking thread, so the broker keeps running on the runtime.
async fn browser_checks(args: Value) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_browser_checks(&args))
        .await
        .context("the browser checks' thread")?
}

/// One message the producer sent.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    queue: u32,
    offset: u64,
    key: String,
    tag: String,
    body: String,
    index: usize,
}

/// Receives `count` messages (fewer per call if fewer are there) until the deadline.
async fn receive_exactly(
    consumer: &SimpleConsumer,
    count: usize,
    ack: bool,
) -> anyhow::Result<Vec<MessageView>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < count {
        ensure!(
            Instant::now() < deadline,
            "received {} of {count} messages in time",
            got.len()
        );
        let want = u32::try_from(count - got.len())?;
        for m in consumer.receive(want, INVISIBLE).await? {
            if ack {
                consumer.ack(&m).await?;
            }
            got.push(m);
        }
    }
    Ok(got)
}

fn queue_of(m: &MessageView) -> anyhow::Result<u32> {
    u32::try_from(m.queue_id()).context("a negative queue id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_show_the_broker_state() -> anyhow::Result<()> {
    rocketlog_tests::nodes::init_test_logs();
    let data = tempfile::Builder::new()
        .prefix("rocketlog-console-")
        .tempdir()?;
    let mut nameserver = NameserverNode::start_with(test_nameserver_config()).await?;
    let broker = ConsoleBroker::start(console_config(&nameserver, data.path())?).await?;
    let outcome = pages(&broker, &nameserver).await;
    let stopped = broker.stop().await;
    let ns_stopped = nameserver.stop().await;
    outcome?;
    stopped?;
    ns_stopped
}

async fn pages(broker: &ConsoleBroker, nameserver: &NameserverNode) -> anyhow::Result<()> {
    poll(
        READY_TIMEOUT,
        "the nameserver to list the broker",
        || async {
            let names = nameserver.broker_names().await.ok()?;
            names.iter().any(|n| n == BROKER_NAME).then_some(())
        },
    )
    .await?;
    let mut admin = broker.admin(None).await?;
    let normal = unique_name("console-orders");
    let fifo = unique_name("console-fifo");
    let delayed = unique_name("console-delayed");
    let transactional = unique_name("console-tx");
    let group = unique_name("console-billing");
    let fifo_group = unique_name("console-fifo-group");
    for (topic, queues, kind) in [
        (&normal, NORMAL_QUEUES, MessageType::Normal),
        (&fifo, 1, MessageType::Fifo),
        (&delayed, 1, MessageType::Delay),
        (&transactional, 1, MessageType::Transaction),
    ] {
        admin
            .create_or_update_topic(admin::CreateOrUpdateTopicRequest {
                topic: Some(admin::TopicConfig {
                    name: topic.clone(),
                    queue_nums: queues,
                    perm: admin::Permission::ReadWrite as i32,
                    message_types: vec![kind as i32],
                }),
            })
            .await
            .with_context(|| format!("creating topic {topic}"))?;
    }

    // The load: keyed, tagged messages with properties on the normal topic; one message
    // group on the FIFO topic.
    let producer = Producer::builder(broker.client_config())
        .topics([normal.as_str(), fifo.as_str(), delayed.as_str()])
        .build()
        .await?;
    let mut sent = Vec::new();
    for i in 0..NORMAL_MESSAGES {
        let (key, tag, body) = (
            format!("order-{i}"),
            if i % 2 == 0 { "created" } else { "paid" }.to_owned(),
            format!("payload-{i} for the console"),
        );
        let receipt = producer
            .send(
                Message::builder(normal.as_str())
                    .body(body.clone())
                    .tag(tag.clone())
                    .key(key.clone())
                    .property("index", i.to_string())
                    .property("source", "console-test")
                    .build()?,
            )
            .await?;
        // The queue and offset are the census's (below): the broker picks the queue.
        sent.push(Sent {
            id: receipt.message_id().to_owned(),
            queue: 0,
            offset: 0,
            key,
            tag,
            body,
            index: i,
        });
    }
    let mut fifo_sent = Vec::new();
    for i in 0..FIFO_MESSAGES {
        let key = format!("step-{i}");
        let body = format!("fifo step {i}");
        let receipt = producer
            .send(
                Message::builder(fifo.as_str())
                    .body(body.clone())
                    .tag("step")
                    .key(key.clone())
                    .message_group("order-1")
                    .build()?,
            )
            .await?;
        fifo_sent.push(Sent {
            id: receipt.message_id().to_owned(),
            queue: 0,
            offset: u64::try_from(receipt.offset())?,
            key,
            tag: "step".into(),
            body,
            index: i,
        });
    }

    // A message delayed by an hour (whole milliseconds, as the protocol carries them).
    let deliver_at_ms = u64::try_from(
        (SystemTime::now() + Duration::from_secs(3600))
            .duration_since(UNIX_EPOCH)?
            .as_millis(),
    )?;
    let later = producer
        .send(
            Message::builder(delayed.as_str())
                .body("due in an hour")
                .key("later-1")
                .delivery_time(UNIX_EPOCH + Duration::from_millis(deliver_at_ms))
                .build()?,
        )
        .await?;
    // Transactions: one committed, one rolled back, one left open (its checks answer
    // "unknown", and the first check is due after the test).
    let tx_producer =
        TransactionProducer::builder(broker.client_config(), |_m: MessageView| async {
            TransactionResolution::Unknown
        })
        .topics([transactional.as_str()])
        .build()
        .await?;
    let mut tx_ids = BTreeMap::new();
    for key in ["tx-committed", "tx-rolled-back", "tx-open"] {
        let tx = tx_producer
            .send(
                Message::builder(transactional.as_str())
                    .body(format!("{key} body"))
                    .key(key)
                    .build()?,
            )
            .await?;
        tx_ids.insert(key, tx.receipt().message_id().to_owned());
        match key {
            "tx-committed" => tx.commit().await?,
            "tx-rolled-back" => tx.rollback().await?,
            _ => {}
        }
    }

    // A census group reads and acks every message once: where each one is stored comes
    // from its delivery (the broker picks the queue; a send receipt names the client's pick).
    let census_group = unique_name("console-census");
    let census = SimpleConsumer::builder(broker.client_config(), census_group.as_str())
        .subscribe(normal.as_str(), FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await?;
    for m in receive_exactly(&census, NORMAL_MESSAGES, true).await? {
        let s = sent
            .iter_mut()
            .find(|s| s.id == m.message_id())
            .with_context(|| format!("the census got {}, which was not sent", m.message_id()))?;
        s.queue = queue_of(&m)?;
        s.offset = u64::try_from(
            m.queue_offset()
                .context("a delivery without queue offset")?,
        )?;
    }
    let mut places: Vec<(u32, u64)> = sent.iter().map(|s| (s.queue, s.offset)).collect();
    places.sort_unstable();
    places.dedup();
    ensure!(
        places.len() == NORMAL_MESSAGES,
        "the census did not see every message once: {places:?}"
    );

    // The group acks ACKED messages, then holds IN_FLIGHT more without acking.
    let consumer = SimpleConsumer::builder(broker.client_config(), group.as_str())
        .subscribe(normal.as_str(), FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await?;
    let acked = receive_exactly(&consumer, ACKED, true).await?;
    let in_flight = receive_exactly(&consumer, IN_FLIGHT, false).await?;
    // The FIFO group holds the head of the message group in flight.
    let fifo_consumer = SimpleConsumer::builder(broker.client_config(), fifo_group.as_str())
        .subscribe(fifo.as_str(), FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await?;
    // Asked for more, the broker reads the message group's later messages but holds them
    // back behind the head: one delivery.
    let deadline = Instant::now() + Duration::from_secs(30);
    let heads = loop {
        let got = fifo_consumer.receive(32, INVISIBLE).await?;
        if !got.is_empty() {
            break got;
        }
        ensure!(Instant::now() < deadline, "the FIFO group received nothing");
    };
    ensure!(
        heads.len() == 1 && heads[0].message_id() == fifo_sent[0].id,
        "the FIFO group got {:?}, not only the head {}",
        heads
            .iter()
            .map(MessageView::message_id)
            .collect::<Vec<_>>(),
        fifo_sent[0].id
    );

    // Per queue: written, acked, in flight.
    let mut queues: BTreeMap<u32, (u64, u64, u64)> = BTreeMap::new();
    for s in &sent {
        queues.entry(s.queue).or_default().0 += 1;
    }
    for m in &acked {
        queues.entry(queue_of(m)?).or_default().1 += 1;
    }
    for m in &in_flight {
        queues.entry(queue_of(m)?).or_default().2 += 1;
    }
    let lag = (NORMAL_MESSAGES - ACKED) as u64;
    // Wait until the broker's view has settled on the same numbers (acks are applied
    // asynchronously to the counters the console reads).
    poll(READY_TIMEOUT, "the group's lag to settle", || {
        let mut admin = admin.clone();
        let group = group.clone();
        async move {
            let d = admin
                .describe_consumer_group(admin::DescribeConsumerGroupRequest { group })
                .await
                .ok()?
                .into_inner();
            (d.total_lag == lag && d.total_inflight == IN_FLIGHT as u64).then_some(())
        }
    })
    .await?;
    let stats = admin
        .broker_stats(admin::BrokerStatsRequest {})
        .await?
        .into_inner();

    let received: Vec<&str> = acked
        .iter()
        .chain(&in_flight)
        .map(|m| m.message_id())
        .collect();
    let by_id = |id: &str| sent.iter().find(|s| s.id == id).cloned();
    let first_acked = by_id(acked[0].message_id()).context("an acked message was not sent")?;
    let first_in_flight =
        by_id(in_flight[0].message_id()).context("an in-flight message was not sent")?;
    let pending = sent
        .iter()
        .find(|s| !received.contains(&s.id.as_str()))
        .cloned()
        .context("every message was received")?;
    let normal_message = |s: &Sent, state: &str| {
        json!({
            "messageId": s.id, "topic": normal, "queueId": s.queue, "queueOffset": s.offset,
            "keys": [s.key], "tag": s.tag, "bodySize": s.body.len(), "bodyText": s.body,
            "reconsumeTimes": 0, "deliveryAttempts": 1, "delayState": "", "transactionState": "",
            "properties": {"index": s.index.to_string(), "source": "console-test"},
            "deliveries": {group.as_str(): state, census_group.as_str(): "acked"},
        })
    };
    let fifo_message = |s: &Sent, state: &str| {
        json!({
            "messageId": s.id, "topic": fifo, "queueId": s.queue, "queueOffset": s.offset,
            "keys": [s.key], "tag": s.tag, "bodySize": s.body.len(), "bodyText": s.body,
            "properties": {}, "deliveries": {fifo_group.as_str(): state},
        })
    };
    let special = |topic: &str, id: &str, key: &str, body: &str, extra: Value| {
        let mut m = json!({
            "messageId": id, "topic": topic, "queueId": 0, "keys": [key], "tag": "",
            "bodySize": body.len(), "bodyText": body, "properties": {}, "deliveries": {},
        });
        if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
            m.extend(extra);
        }
        m
    };
    let kept = unique_name("console-created");
    let deleted = unique_name("console-deleted");
    let args = json!({
        "url": broker.url(),
        "mode": "data",
        "screenshots": screenshot_dir(),
        "timeout": VALUE_TIMEOUT_SECS,
        "cluster": {
            "clusterName": stats.cluster_name, "brokerName": stats.broker_name,
            "brokerId": stats.broker_id, "role": stats.role, "version": stats.version,
            "flushMode": stats.flush_mode, "minLogOffset": stats.min_log_offset,
            "maxLogOffset": stats.max_log_offset, "nameserver": nameserver.address().to_string(),
        },
        "topics": [
            {"name": normal, "queues": NORMAL_QUEUES, "perm": "READ_WRITE", "types": ["NORMAL"],
             "messagesIn": NORMAL_MESSAGES, "stored": NORMAL_MESSAGES, "groups": 2},
            {"name": fifo, "queues": 1, "perm": "READ_WRITE", "types": ["FIFO"],
             "messagesIn": FIFO_MESSAGES, "stored": FIFO_MESSAGES, "groups": 1},
        ],
        "invalidTopicName": "not a valid topic name!",
        "create": {
            "kept": {"name": kept, "queues": 3, "perm": "READ", "types": ["NORMAL", "DELAY"]},
            "deleted": {"name": deleted, "queues": 1, "perm": "READ_WRITE", "types": ["NORMAL"]},
        },
        "groups": [
            {"group": group, "topics": [normal], "lag": lag, "inflight": IN_FLIGHT, "dlq": 0},
            {"group": census_group, "topics": [normal], "lag": 0, "inflight": 0, "dlq": 0},
            {"group": fifo_group, "topics": [fifo], "lag": FIFO_MESSAGES, "inflight": 1, "dlq": 0},
        ],
        "group": {
            "group": group, "resetTopic": normal, "totalLag": lag, "totalInflight": IN_FLIGHT,
            "dlq": 0, "fullLag": NORMAL_MESSAGES,
            "queues": queues.iter().map(|(q, (written, done, flying))| json!({
                "topic": normal, "queueId": q, "brokerOffset": written,
                "consumerOffset": done, "lag": written - done, "inflight": flying,
            })).collect::<Vec<_>>(),
        },
        "messages": [
            {"lookup": {"id": first_acked.id}, "expect": normal_message(&first_acked, "acked")},
            {"lookup": {"id": first_in_flight.id}, "expect": normal_message(&first_in_flight, "in_flight")},
            {"lookup": {"topic": normal, "key": pending.key}, "expect": normal_message(&pending, "pending")},
            {"lookup": {"topic": fifo, "key": fifo_sent[0].key}, "expect": fifo_message(&fifo_sent[0], "in_flight")},
            {"lookup": {"topic": fifo, "key": fifo_sent[1].key}, "expect": fifo_message(&fifo_sent[1], "held")},
            {"lookup": {"topic": delayed, "key": "later-1"}, "expect": special(
                TIMER_TOPIC, later.message_id(), "later-1", "due in an hour",
                json!({"delayState": "scheduled", "deliverAtMs": deliver_at_ms, "transactionState": ""}))},
            // Committed: the delivered message and, beside it, the half message.
            {"lookup": {"topic": transactional, "key": "tx-committed"}, "count": 2, "expect": special(
                &transactional, &tx_ids["tx-committed"], "tx-committed", "tx-committed body",
                json!({"transactionState": "committed", "delayState": ""}))},
            {"lookup": {"topic": transactional, "key": "tx-rolled-back"}, "expect": special(
                HALF_TOPIC, &tx_ids["tx-rolled-back"], "tx-rolled-back", "tx-rolled-back body",
                json!({"transactionState": "rolled_back"}))},
            {"lookup": {"topic": transactional, "key": "tx-open"}, "expect": special(
                HALF_TOPIC, &tx_ids["tx-open"], "tx-open", "tx-open body",
                json!({"transactionState": "open"}))},
        ],
    });
    browser_checks(args).await?;

    // What the pages changed, seen through the admin API.
    let described = admin
        .describe_consumer_group(admin::DescribeConsumerGroupRequest {
            group: group.clone(),
        })
        .await?
        .into_inner();
    ensure!(
        described.total_lag == NORMAL_MESSAGES as u64,
        "after the reset to the earliest message the group's lag is {}, not {NORMAL_MESSAGES}",
        described.total_lag
    );
    let topics = admin
        .list_topics(admin::ListTopicsRequest { with_stats: false })
        .await?
        .into_inner()
        .topics;
    let created = topics
        .iter()
        .find(|t| t.name == kept)
        .with_context(|| format!("the topic {kept} created through the form is not listed"))?;
    ensure!(
        created.queue_nums == 3
            && created.perm == admin::Permission::Read as i32
            && created.message_types == vec![MessageType::Normal as i32, MessageType::Delay as i32],
        "the topic created through the form is {created:?}"
    );
    ensure!(
        !topics.iter().any(|t| t.name == deleted),
        "the topic {deleted} deleted through the page is still listed"
    );
    consumer.shutdown().await;
    census.shutdown().await;
    fifo_consumer.shutdown().await;
    producer.shutdown().await;
    tx_producer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sign_in_with_auth_on() -> anyhow::Result<()> {
    rocketlog_tests::nodes::init_test_logs();
    let data = tempfile::Builder::new()
        .prefix("rocketlog-console-auth-")
        .tempdir()?;
    let mut nameserver = NameserverNode::start_with(test_nameserver_config()).await?;
    let mut config = console_config(&nameserver, data.path())?;
    rocketlog_tests::auth::enable(&mut config);
    let broker = ConsoleBroker::start(config).await?;
    let outcome = sign_in(&broker).await;
    let stopped = broker.stop().await;
    let ns_stopped = nameserver.stop().await;
    outcome?;
    stopped?;
    ns_stopped
}

async fn sign_in(broker: &ConsoleBroker) -> anyhow::Result<()> {
    let (root, secret) = ("root", "root-secret-key");
    let mut admin = broker.admin(Some(Credentials::new(root, secret))).await?;
    admin
        .put_user(admin::PutUserRequest {
            access_key: "viewer".into(),
            secret_key: "viewer-secret-key".into(),
            super_user: false,
        })
        .await?;
    let stats = admin
        .broker_stats(admin::BrokerStatsRequest {})
        .await?
        .into_inner();
    let args = json!({
        "url": broker.url(),
        "mode": "auth",
        "screenshots": screenshot_dir(),
        "screenshot_prefix": "auth-",
        "timeout": VALUE_TIMEOUT_SECS,
        "cluster": {"brokerName": stats.broker_name},
        "auth": {
            "accessKey": root, "secretKey": secret, "wrongSecret": "not-the-secret-key",
            "nonSuperUser": ["viewer", "viewer-secret-key"],
        },
    });
    browser_checks(args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_a_master_and_its_slave() -> anyhow::Result<()> {
    rocketlog_tests::nodes::init_test_logs();
    let data = tempfile::Builder::new()
        .prefix("rocketlog-console-replicas-")
        .tempdir()?;
    let mut nameserver = NameserverNode::start_with(test_nameserver_config()).await?;
    let mut master_config = console_config(&nameserver, &data.path().join("master"))?;
    master_config.replication_listen = Some("127.0.0.1:0".parse()?);
    let master = ConsoleBroker::start(master_config).await?;
    let outcome = match master.replication {
        Some(repl) => {
            let mut slave_config = console_config(&nameserver, &data.path().join("slave"))?;
            slave_config.broker_id = 1;
            slave_config.replication.master_address = Some(repl.to_string());
            match ConsoleBroker::start(slave_config).await {
                Ok(slave) => {
                    let outcome = replicas(&master, &slave, repl).await;
                    let stopped = slave.stop().await;
                    outcome.and(stopped)
                }
                Err(e) => Err(e),
            }
        }
        None => Err(anyhow!("the master reported no replication port")),
    };
    let stopped = master.stop().await;
    let ns_stopped = nameserver.stop().await;
    outcome?;
    stopped?;
    ns_stopped
}

/// Sends a known load to the master, waits until the slave holds all of it (admin API), then
/// has the browser check both consoles.
async fn replicas(
    master: &ConsoleBroker,
    slave: &ConsoleBroker,
    repl: SocketAddr,
) -> anyhow::Result<()> {
    const SENT: usize = 30;
    let topic = unique_name("ReplicaConsole");
    let producer = Producer::builder(master.client_config())
        .topics([topic.as_str()])
        .build()
        .await?;
    for i in 0..SENT {
        producer
            .send(
                Message::builder(topic.as_str())
                    .body(format!("replicated {i}"))
                    .build()?,
            )
            .await?;
    }
    producer.shutdown().await;
    let mut master_admin = master.admin(None).await?;
    let slave_admin = slave.admin(None).await?;
    let end = master_admin
        .broker_stats(admin::BrokerStatsRequest {})
        .await?
        .into_inner()
        .max_log_offset;
    // The browser checks start from a slave that holds the whole log.
    poll(READY_TIMEOUT, "the slave to copy the master's log", || {
        let mut slave_admin = slave_admin.clone();
        async move {
            let stats = slave_admin
                .broker_stats(admin::BrokerStatsRequest {})
                .await
                .ok()?
                .into_inner();
            (stats.max_log_offset >= end).then_some(())
        }
    })
    .await?;
    let args = json!({
        "url": master.url(),
        "slaveUrl": slave.url(),
        "mode": "replicas",
        "screenshots": screenshot_dir(),
        "screenshot_prefix": "replicas-",
        "timeout": VALUE_TIMEOUT_SECS,
        "brokerName": BROKER_NAME,
        "masterReplication": repl.to_string(),
        "logEnd": end,
    });
    browser_checks(args).await
}
