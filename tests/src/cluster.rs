//! An in-process rocketlog cluster for one test: a nameserver and a broker registered with it,
//! started through their library `run` functions on `127.0.0.1:0` listeners, with a temporary
//! data directory, their own tokio runtime and their own log buffer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rocketlog_broker::BrokerConfig;
use rocketlog_client::{Credentials, SigningInterceptor};
use rocketlog_nameserver::NameserverConfig;
use rocketlog_proto::admin::v1 as admin;
use rocketlog_proto::admin::v1::admin_client::AdminClient;
use rocketlog_proto::nameserver::v1 as ns;
use rocketlog_proto::nameserver::v1::name_server_client::NameServerClient;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

use crate::logs::LogBuffer;

/// How long a server may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Between readiness probes (polling with a deadline).
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Deadline of one admin call.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Message types a topic accepts (the admin API's enum, named for readability in tests).
pub use rocketlog_proto::admin::v1::MessageType;

pub(crate) struct Server {
    pub(crate) name: &'static str,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: JoinHandle<Result<(), String>>,
}

/// A running cluster; stopped gracefully by [`Cluster::stop`], or best-effort when dropped.
pub struct Cluster {
    pub(crate) runtime: Option<Runtime>,
    pub(crate) servers: Vec<Server>,
    pub(crate) client_addr: SocketAddr,
    nameserver_addr: SocketAddr,
    pub(crate) config: BrokerConfig,
    logs: LogBuffer,
    data: TempDir,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("client_addr", &self.client_addr)
            .field("data", &self.data.path())
            .finish_non_exhaustive()
    }
}

/// The nameserver configuration of test clusters: quick expiry scans.
pub fn test_nameserver_config() -> NameserverConfig {
    NameserverConfig {
        broker_expiry_ms: 10_000,
        scan_interval_ms: 1_000,
        heartbeat_interval_ms: 500,
        ..Default::default()
    }
}

/// The broker configuration every test cluster starts from: small segments, quick
/// registration and a short shutdown grace. Tests adjust it further.
pub fn test_broker_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.store.segment_size = 32 << 20;
    config.store.flush_interval_ms = 100;
    config.heartbeat_interval_ms = 500;
    config.route_cache_ms = 200;
    config.shutdown_grace_ms = 2_000;
    config
}

impl Cluster {
    /// Starts a nameserver and a broker configured by [`test_broker_config`] then `tune` (the
    /// harness sets its data directory and nameserver), and waits until the broker answers and
    /// the nameserver lists it.
    pub fn start(tune: impl FnOnce(&mut BrokerConfig)) -> anyhow::Result<Cluster> {
        let logs = LogBuffer::new();
        let dispatch = logs.dispatch();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cluster")
            .enable_all()
            .on_thread_start(move || {
                // Every thread of this runtime logs into this cluster's buffer for its whole life;
                // forgetting the guard keeps the default set until the thread ends.
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .build()
            .context("building the cluster runtime")?;
        let data = tempfile::Builder::new()
            .prefix("rocketlog-test-")
            .tempdir()
            .context("creating the data directory")?;

        let mut servers = Vec::new();
        let ns_listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .context("binding the nameserver listener")?;
        let nameserver_addr = ns_listener
            .local_addr()
            .context("nameserver listener address")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let shutdown = async move {
                // A dropped sender stops the nameserver as well.
                let _ = stopped.await;
            };
            rocketlog_nameserver::run(test_nameserver_config(), ns_listener, shutdown)
                .await
                .map_err(|e| format!("{e}"))
        });
        servers.push(Server {
            name: "nameserver",
            stop: Some(stop),
            task,
        });

        let mut config = test_broker_config();
        tune(&mut config);
        config.data_dir = data.path().join("broker");
        config.nameserver_addresses = vec![nameserver_addr.to_string()];
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .context("binding the broker listener")?;
        let client_addr = listener.local_addr().context("broker listener address")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let broker_config = config.clone();
        let task = runtime.spawn(async move {
            let shutdown = async move {
                // A dropped sender stops the broker as well.
                let _ = stopped.await;
            };
            rocketlog_broker::run(config, listener, shutdown)
                .await
                .map_err(|e| format!("{e}"))
        });
        // Stopped in reverse order: the broker first, so it can unregister.
        servers.insert(
            0,
            Server {
                name: "broker",
                stop: Some(stop),
                task,
            },
        );
        let mut cluster = Cluster {
            runtime: Some(runtime),
            servers,
            client_addr,
            nameserver_addr,
            config: broker_config,
            logs,
            data,
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// `host:port` of the broker's client port (what the official clients dial).
    pub fn client_address(&self) -> SocketAddr {
        self.client_addr
    }

    /// The broker's configuration (as started).
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// `host:port` of the nameserver.
    pub fn nameserver_address(&self) -> SocketAddr {
        self.nameserver_addr
    }

    /// Everything the servers logged so far.
    pub fn logs(&self) -> String {
        self.logs.contents()
    }

    fn runtime(&self) -> anyhow::Result<&Runtime> {
        self.runtime
            .as_ref()
            .ok_or_else(|| anyhow!("the cluster was stopped"))
    }

    /// The broker's admin API, signed with the initial super user when the broker has one
    /// (it then may have authentication on).
    pub(crate) async fn admin(
        addr: SocketAddr,
        config: &BrokerConfig,
    ) -> anyhow::Result<
        AdminClient<InterceptedService<tonic::transport::Channel, SigningInterceptor>>,
    > {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(ADMIN_TIMEOUT)
            .timeout(ADMIN_TIMEOUT)
            .connect()
            .await?;
        let credentials = config
            .auth
            .init_access_key
            .clone()
            .zip(config.auth.init_secret_key.clone())
            .map(|(ak, sk)| Credentials::new(ak, sk));
        Ok(AdminClient::with_interceptor(
            channel,
            SigningInterceptor::new(credentials),
        ))
    }

    /// Runs `call` with the admin API of this cluster's broker (signed as its initial super user).
    pub fn admin_call<T>(
        &self,
        call: impl AsyncFnOnce(
            &mut AdminClient<InterceptedService<tonic::transport::Channel, SigningInterceptor>>,
        ) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let (addr, config) = (self.client_addr, self.config.clone());
        self.runtime()?.block_on(async move {
            let mut client = Self::admin(addr, &config).await?;
            call(&mut client).await
        })
    }

    async fn nameserver(
        addr: SocketAddr,
    ) -> anyhow::Result<NameServerClient<tonic::transport::Channel>> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(ADMIN_TIMEOUT)
            .timeout(ADMIN_TIMEOUT)
            .connect()
            .await?;
        Ok(NameServerClient::new(channel))
    }

    /// Polls until the broker's admin API answers (the store opens before serving starts) and
    /// the nameserver lists the broker (it registered).
    pub(crate) fn wait_ready(&mut self) -> anyhow::Result<()> {
        let addr = self.client_addr;
        let config = self.config.clone();
        let ns_addr = self.nameserver_addr;
        let broker_name = self.config.broker_name.clone();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(server) = self.servers.iter().find(|s| s.task.is_finished()) {
                let name = server.name;
                let outcome = self.stop_servers();
                bail!("the {name} stopped during startup: {outcome:?}");
            }
            let probe = self.runtime()?.block_on(async {
                let mut client = Self::admin(addr, &config).await?;
                client.broker_stats(admin::BrokerStatsRequest {}).await?;
                let mut nameserver = Self::nameserver(ns_addr).await?;
                let brokers = nameserver
                    .list_brokers(ns::ListBrokersRequest {})
                    .await?
                    .into_inner();
                if !brokers.brokers.iter().any(|b| b.broker_name == broker_name) {
                    bail!("the nameserver does not list broker {broker_name} yet");
                }
                anyhow::Ok(())
            });
            match probe {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!("the cluster (broker {addr}, nameserver {ns_addr}) was not ready within {READY_TIMEOUT:?}: {e:#}")
                }
                Err(_) => std::thread::sleep(PROBE_INTERVAL),
            }
        }
    }

    /// Creates (or updates) a read-write topic through the broker's admin API.
    pub fn create_topic(
        &self,
        name: &str,
        queues: u32,
        types: &[MessageType],
    ) -> anyhow::Result<()> {
        let addr = self.client_addr;
        let config = self.config.clone();
        let request = admin::CreateOrUpdateTopicRequest {
            topic: Some(admin::TopicConfig {
                name: name.to_owned(),
                queue_nums: queues,
                perm: admin::Permission::ReadWrite as i32,
                message_types: types.iter().map(|t| *t as i32).collect(),
            }),
        };
        self.runtime()?
            .block_on(async {
                let mut client = Self::admin(addr, &config).await?;
                client.create_or_update_topic(request).await?;
                anyhow::Ok(())
            })
            .with_context(|| format!("creating topic {name} through the admin API"))
    }

    /// The queue ids of the messages stored under business key `key` in `topic`, looked up
    /// through the broker's admin API (its key index).
    pub fn queues_of_key(&self, topic: &str, key: &str) -> anyhow::Result<Vec<u32>> {
        let addr = self.client_addr;
        let config = self.config.clone();
        let request = admin::LookupMessageRequest {
            by: Some(admin::lookup_message_request::By::Key(admin::KeyQuery {
                topic: topic.to_owned(),
                key: key.to_owned(),
            })),
            max: 32,
            with_body: false,
        };
        self.runtime()?
            .block_on(async {
                let mut client = Self::admin(addr, &config).await?;
                let found = client.lookup_message(request).await?.into_inner();
                anyhow::Ok(found.messages.iter().map(|m| m.queue_id).collect())
            })
            .with_context(|| format!("looking up key {key} of topic {topic}"))
    }

    /// Stops every server and waits for it; the first error wins.
    fn stop_servers(&mut self) -> anyhow::Result<()> {
        let Some(runtime) = self.runtime.take() else {
            return Ok(());
        };
        let mut first_error = None;
        // One after the other, in order (the broker before the nameserver it unregisters from).
        for mut server in self.servers.drain(..) {
            if let Some(stop) = server.stop.take() {
                // The server may already be gone; then there is nobody to tell.
                let _ = stop.send(());
            }
            let name = server.name;
            let outcome =
                runtime.block_on(async { tokio::time::timeout(STOP_TIMEOUT, server.task).await });
            let error = match outcome {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(e))) => Some(anyhow!("the {name} returned an error: {e}")),
                Ok(Err(join)) => Some(anyhow!("the {name} task failed: {join}")),
                Err(_) => Some(anyhow!("the {name} did not stop within {STOP_TIMEOUT:?}")),
            };
            if let Some(e) = error {
                first_error.get_or_insert(e);
            }
        }
        runtime.shutdown_timeout(Duration::from_secs(5));
        first_error.map_or(Ok(()), Err)
    }

    /// Stops every server gracefully; fails if one returned an error or did not stop in time.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_servers()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Best effort: a test that already failed has reported why.
        let _ = self.stop_servers();
    }
}
