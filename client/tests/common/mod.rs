//! An in-process cluster for the integration tests: a nameserver and a broker on
//! 127.0.0.1:0, with their data in a temporary directory.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocketlog_broker::BrokerConfig;
use rocketlog_client::{ClientConfig, Producer};
use rocketlog_nameserver::NameserverConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running nameserver and broker.
pub struct Cluster {
    /// The broker's client port, `127.0.0.1:PORT`.
    pub endpoint: String,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<Result<(), String>>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A cluster with the default broker settings.
    pub async fn start() -> Cluster {
        Cluster::start_with(|_| {}).await
    }

    /// A cluster whose broker settings `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> Cluster {
        init_logs();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut stops = Vec::new();
        let mut tasks = Vec::new();

        let ns_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind nameserver");
        let ns_addr = ns_listener.local_addr().expect("nameserver address");
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        tasks.push(tokio::spawn(async move {
            rocketlog_nameserver::run(NameserverConfig::default(), ns_listener, quiet(stopped))
                .await
                .map_err(|e| e.to_string())
        }));

        let mut config = BrokerConfig {
            data_dir: dir.path().join("broker"),
            nameserver_addresses: vec![ns_addr.to_string()],
            heartbeat_interval_ms: 1_000,
            route_cache_ms: 200,
            shutdown_grace_ms: 2_000,
            ..BrokerConfig::default()
        };
        config.store.segment_size = 16 << 20;
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind broker");
        let endpoint = listener.local_addr().expect("broker address").to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        tasks.push(tokio::spawn(async move {
            rocketlog_broker::run(config, listener, quiet(stopped))
                .await
                .map_err(|e| e.to_string())
        }));

        let cluster = Cluster {
            endpoint,
            stops,
            tasks,
            _dir: dir,
        };
        cluster.wait_until_serving().await;
        cluster
    }

    /// A client configuration for this cluster.
    pub fn config(&self) -> ClientConfig {
        ClientConfig::new(&self.endpoint).expect("client config")
    }

    /// Creates (or updates) a topic through the admin API, accepting only `types`.
    pub async fn create_topic(
        &self,
        name: &str,
        queues: u32,
        types: &[rocketlog_proto::admin::v1::MessageType],
    ) {
        use rocketlog_proto::admin::v1 as admin;
        let mut client =
            admin::admin_client::AdminClient::connect(format!("http://{}", self.endpoint))
                .await
                .expect("admin connection");
        client
            .create_or_update_topic(admin::CreateOrUpdateTopicRequest {
                topic: Some(admin::TopicConfig {
                    name: name.to_owned(),
                    queue_nums: queues,
                    perm: admin::Permission::ReadWrite as i32,
                    message_types: types.iter().map(|t| *t as i32).collect(),
                }),
            })
            .await
            .expect("create topic");
    }

    /// Creates a topic that accepts only FIFO messages (consumer groups of it are FIFO).
    pub async fn create_fifo_topic(&self, name: &str, queues: u32) {
        self.create_topic(
            name,
            queues,
            &[rocketlog_proto::admin::v1::MessageType::Fifo],
        )
        .await;
    }

    /// Polls until a producer can start (the broker has registered and serves routes).
    async fn wait_until_serving(&self) {
        let probe = unique("probe");
        let started = poll_until(Duration::from_secs(20), || async {
            match Producer::builder(self.config())
                .topics([&probe])
                .build()
                .await
            {
                Ok(p) => {
                    p.shutdown().await;
                    Some(())
                }
                Err(_) => None,
            }
        })
        .await;
        assert!(
            started.is_some(),
            "the cluster did not start serving in time"
        );
    }

    /// Stops the broker, then the nameserver, and checks that both stopped cleanly.
    pub async fn stop(mut self) {
        // Broker first: it deregisters while the nameserver is still up.
        while let Some(stop) = self.stops.pop() {
            let _ = stop.send(());
            if let Some(task) = self.tasks.pop() {
                let result = tokio::time::timeout(Duration::from_secs(30), task)
                    .await
                    .expect("a server did not stop in time")
                    .expect("a server task panicked");
                assert!(result.is_ok(), "a server stopped with an error: {result:?}");
            }
        }
    }
}

async fn quiet(stopped: oneshot::Receiver<()>) {
    // A dropped sender (a failed test) stops the server as well.
    let _ = stopped.await;
}

/// Calls `probe` until it returns `Some`, or `None` once `limit` has passed.
pub async fn poll_until<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{nanos}")
}

fn init_logs() {
    // Shown by the test harness only for failing tests.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rocketlog_client=debug".into()),
        )
        .with_test_writer()
        .try_init();
}
