//! Servers for the Rust SDK tests (`tests/tests/sdk_*.rs`): a nameserver and any number of
//! brokers registered with it, each on a `127.0.0.1:0` listener, running on the test's own
//! tokio runtime so async tests drive them directly.
//!
//! Unlike [`crate::Cluster`] (one broker, its own runtime, blocking API), a broker here can be
//! stopped and started again on the same data directory and port, which failover tests need.
//! Logs go to the test writer: shown only for failing tests (`RUST_LOG` sets the levels).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use rocketlog_broker::BrokerConfig;
use rocketlog_client::ClientConfig;
use rocketlog_nameserver::NameserverConfig;
use rocketlog_proto::admin::v1 as admin;
use rocketlog_proto::admin::v1::admin_client::AdminClient;
use rocketlog_proto::nameserver::v1 as ns;
use rocketlog_proto::nameserver::v1::name_server_client::NameServerClient;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cluster::{test_broker_config, test_nameserver_config, MessageType};

/// How long a server may take to serve after start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Between probes while polling.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Deadline of one admin or nameserver call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends the test's logs to the test writer (once per test binary).
pub fn init_test_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rocketlog_client=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A topic or group name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Calls `probe` until it returns `Some`, failing with `what` once `limit` has passed.
pub async fn poll<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), String>>,
}

impl Running {
    async fn stop(self, name: &str) -> anyhow::Result<()> {
        // The server may already have ended; then nobody listens.
        let _ = self.stop.send(());
        match tokio::time::timeout(STOP_TIMEOUT, self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(anyhow!("{name} stopped with an error: {e}")),
            Ok(Err(join)) => Err(anyhow!("{name} task failed: {join}")),
            Err(_) => Err(anyhow!("{name} did not stop within {STOP_TIMEOUT:?}")),
        }
    }
}

async fn until_stopped(stopped: oneshot::Receiver<()>) {
    // A dropped sender (a test that failed) stops the server as well.
    let _ = stopped.await;
}

/// A nameserver on the test's runtime.
#[derive(Debug)]
pub struct NameserverNode {
    addr: SocketAddr,
    running: Option<Running>,
}

impl NameserverNode {
    /// Starts a nameserver with the quick test timings.
    pub async fn start() -> anyhow::Result<NameserverNode> {
        NameserverNode::start_with(test_nameserver_config()).await
    }

    /// Starts a nameserver with `config`.
    pub async fn start_with(config: NameserverConfig) -> anyhow::Result<NameserverNode> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the nameserver")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            rocketlog_nameserver::run(config, listener, until_stopped(stopped))
                .await
                .map_err(|e| e.to_string())
        });
        Ok(NameserverNode {
            addr,
            running: Some(Running { stop, task }),
        })
    }

    /// `host:port` of the nameserver.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Names of the broker groups registered now.
    pub async fn broker_names(&self) -> anyhow::Result<Vec<String>> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect()
            .await?;
        let brokers = NameServerClient::new(channel)
            .list_brokers(ns::ListBrokersRequest {})
            .await?
            .into_inner();
        Ok(brokers.brokers.into_iter().map(|b| b.broker_name).collect())
    }

    /// The route the nameserver serves for `topic`.
    pub async fn topic_route(&self, topic: &str) -> anyhow::Result<ns::GetTopicRouteResponse> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect()
            .await?;
        Ok(NameServerClient::new(channel)
            .get_topic_route(ns::GetTopicRouteRequest {
                topic: topic.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Stops the nameserver gracefully.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        match self.running.take() {
            Some(r) => r.stop("nameserver").await,
            None => Ok(()),
        }
    }
}

/// A broker on the test's runtime that can be stopped and started again on the same port and
/// data directory.
#[derive(Debug)]
pub struct BrokerNode {
    addr: SocketAddr,
    config: BrokerConfig,
    nameserver: Option<SocketAddr>,
    running: Option<Running>,
    /// The bound metrics port, as the broker reported it when it started serving.
    metrics: Arc<Mutex<Option<SocketAddr>>>,
}

impl BrokerNode {
    /// Starts a broker with `config` on a new `127.0.0.1:0` listener and waits until it serves
    /// (and, with a nameserver, until the nameserver lists it).
    pub async fn start(config: BrokerConfig) -> anyhow::Result<BrokerNode> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the broker")?;
        let addr = listener.local_addr()?;
        let nameserver = config
            .nameserver_addresses
            .first()
            .and_then(|a| a.parse().ok());
        let mut node = BrokerNode {
            addr,
            config,
            nameserver,
            running: None,
            metrics: Arc::default(),
        };
        node.run(listener).await?;
        Ok(node)
    }

    fn spawn(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel();
        let config = self.config.clone();
        let metrics = Arc::clone(&self.metrics);
        let task = tokio::spawn(async move {
            rocketlog_broker::run_with_ready(config, listener, until_stopped(stopped), move |r| {
                *metrics.lock().unwrap_or_else(|e| e.into_inner()) = r.metrics;
            })
            .await
            .map_err(|e| e.to_string())
        });
        self.running = Some(Running { stop, task });
    }

    async fn run(&mut self, listener: TcpListener) -> anyhow::Result<()> {
        self.spawn(listener);
        self.wait_ready().await
    }

    /// `host:port` of the client port.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// The client port as an access point (`127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// The metrics port (with `metrics_listen` set), known once the broker serves.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        *self.metrics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// A client configuration with this broker as the access point.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::builder()
            .access_point(self.endpoint())
            .build()
            .unwrap_or_else(|e| panic!("a client configuration for {}: {e}", self.addr))
    }

    /// Whether the broker is running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    async fn admin(&self) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect()
            .await?;
        Ok(AdminClient::new(channel))
    }

    async fn probe(&self) -> anyhow::Result<()> {
        self.admin()
            .await?
            .broker_stats(admin::BrokerStatsRequest {})
            .await?;
        if let Some(ns_addr) = self.nameserver {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{ns_addr}"))?
                .connect_timeout(CALL_TIMEOUT)
                .timeout(CALL_TIMEOUT)
                .connect()
                .await?;
            let brokers = NameServerClient::new(channel)
                .list_brokers(ns::ListBrokersRequest {})
                .await?
                .into_inner();
            let name = &self.config.broker_name;
            if !brokers.brokers.iter().any(|b| &b.broker_name == name) {
                bail!("the nameserver does not list {name} yet");
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if self.running.as_ref().is_some_and(|r| r.task.is_finished()) {
                let outcome = match self.running.take() {
                    Some(r) => r.stop("broker").await,
                    None => Ok(()),
                };
                bail!("the broker stopped during startup: {outcome:?}");
            }
            match self.probe().await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    bail!(
                        "broker {} was not ready within {READY_TIMEOUT:?}: {e:#}",
                        self.addr
                    )
                }
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// Stops the broker gracefully (flush, checkpoint); it can be started again.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        match self.running.take() {
            Some(r) => r.stop(&self.config.broker_name).await,
            None => Ok(()),
        }
    }

    /// Starts the stopped broker again on the same port and data directory. The port may stay
    /// busy for a moment after the stop; binding is retried until a deadline.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let addr = self.addr;
        let listener = poll(READY_TIMEOUT, "the broker's port to be free", || async {
            TcpListener::bind(addr).await.ok()
        })
        .await?;
        self.run(listener).await
    }

    /// `admin broker drain` (or `resume`) on this broker.
    pub async fn drain(&self, resume: bool) -> anyhow::Result<admin::DrainResponse> {
        Ok(self
            .admin()
            .await?
            .drain(admin::DrainRequest { resume })
            .await?
            .into_inner())
    }

    /// Creates (or updates) a read-write topic through this broker's admin API.
    pub async fn create_topic(
        &self,
        name: &str,
        queues: u32,
        types: &[MessageType],
    ) -> anyhow::Result<()> {
        let request = admin::CreateOrUpdateTopicRequest {
            topic: Some(admin::TopicConfig {
                name: name.to_owned(),
                queue_nums: queues,
                perm: admin::Permission::ReadWrite as i32,
                message_types: types.iter().map(|t| *t as i32).collect(),
            }),
        };
        self.admin()
            .await?
            .create_or_update_topic(request)
            .await
            .with_context(|| format!("creating topic {name} on {}", self.addr))?;
        Ok(())
    }
}

/// A nameserver and `n` brokers (`broker-a`, `broker-b`, ...) registered with it, with data in
/// one temporary directory.
#[derive(Debug)]
pub struct SdkCluster {
    /// The nameserver.
    pub nameserver: NameserverNode,
    /// The brokers, in name order.
    pub brokers: Vec<BrokerNode>,
    data: TempDir,
}

impl SdkCluster {
    /// One broker with [`test_broker_config`] adjusted by `tune`.
    pub async fn single(tune: impl Fn(&mut BrokerConfig)) -> anyhow::Result<SdkCluster> {
        SdkCluster::start(1, tune).await
    }

    /// `n` brokers with [`test_broker_config`] adjusted by `tune` (the harness then sets each
    /// one's name, data directory and nameserver).
    pub async fn start(n: usize, tune: impl Fn(&mut BrokerConfig)) -> anyhow::Result<SdkCluster> {
        init_test_logs();
        let data = tempfile::Builder::new()
            .prefix("rocketlog-sdk-test-")
            .tempdir()
            .context("creating the data directory")?;
        let nameserver = NameserverNode::start().await?;
        let mut cluster = SdkCluster {
            nameserver,
            brokers: Vec::with_capacity(n),
            data,
        };
        for i in 0..n {
            let mut config = test_broker_config();
            // Small segments: every broker preallocates its next one.
            config.store.segment_size = 16 << 20;
            tune(&mut config);
            let letter = char::from(b'a' + u8::try_from(i % 26).unwrap_or(0));
            config.broker_name = format!("broker-{letter}");
            config.data_dir = cluster.data.path().join(&config.broker_name);
            config.nameserver_addresses = vec![cluster.nameserver.address().to_string()];
            cluster.brokers.push(BrokerNode::start(config).await?);
        }
        Ok(cluster)
    }

    /// The first broker.
    pub fn broker(&self) -> &BrokerNode {
        &self.brokers[0]
    }

    /// A client configuration with the first broker as the access point.
    pub fn client_config(&self) -> ClientConfig {
        self.broker().client_config()
    }

    /// Stops every broker, then the nameserver; the first error wins.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut first = None;
        for b in &mut self.brokers {
            if let Err(e) = b.stop().await {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = self.nameserver.stop().await {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }
}
