//! The broker's lifecycle: open the store, the consumption engine and the topic table, start
//! the background tasks (auto-renewal, nameserver registration), serve the client port until
//! the shutdown future resolves, then stop accepting, let in-flight requests finish (long polls
//! and Telemetry streams are ended first), flush, checkpoint and return.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocketlog_proto::v2::messaging_service_server::MessagingServiceServer;
use rocketlog_store::Store;
use rocketlog_transport::signature::RequireSignature;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::auth::layer::Gate;
use crate::broker::{AdvertisedEndpoint, Broker};
use crate::config::{BrokerConfig, FlushMode};
use crate::consumption::{Consumption, ConsumptionConfig};
use crate::controller_agent::{Agent, Assigned};
use crate::error::BrokerError;
use crate::nameserver_client::NameserverClient;
use crate::renewal::{RenewalConfig, Renewals};
use crate::replication::{GroupRole, GroupState};
use crate::routes::RouteTable;
use crate::service::MessagingServer;
use crate::timer::Timer;
use crate::topics::{TopicDefaults, TopicManager};
use crate::transaction::Transactions;
use crate::transport::{tls, Transport};

/// Largest gRPC message accepted or sent (the proxy's 130 MiB); each message body is held to
/// `max_body_size` by the send handler.
pub const MAX_GRPC_MESSAGE: usize = 130 << 20;

/// Serves the broker on `listener` until `shutdown` resolves; returns after a clean stop.
pub async fn run(
    config: BrokerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BrokerError> {
    run_with_ready(config, listener, shutdown, |_| {}).await
}

/// What a broker that has started serving is listening on, besides its client port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The bound replication port (a master with `replication_listen`).
    pub replication: Option<std::net::SocketAddr>,
    /// The bound metrics port (`metrics_listen`).
    pub metrics: Option<std::net::SocketAddr>,
}

/// [`run`], calling `ready` once the broker serves: the store, the consumption state, open
/// transactions and pending delayed messages are recovered and gRPC health says `SERVING`.
/// `ready` is never called when recovery fails (the error is returned instead).
pub async fn run_with_ready(
    config: BrokerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    ready: impl FnOnce(Ready) + Send,
) -> Result<(), BrokerError> {
    config.validate()?;
    // The ports stay bound across in-process restarts (a role change under a controller):
    // clients wait in the listen backlog instead of being refused.
    let mut client_port = ClientPort {
        addr: listener.local_addr().map_err(BrokerError::Listener)?,
        listener: Some(listener.into_std().map_err(BrokerError::Listener)?),
    };
    let replication_port = match config.replication_listen {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => Some(l.into_std().map_err(BrokerError::Listener)?),
            Err(source) => {
                return Err(BrokerError::Replication(format!(
                    "binding replication_listen {addr}: {source}"
                )))
            }
        },
        None => None,
    };
    let metrics_port = crate::metrics::bind(config.metrics_listen).await?;
    let stop = CancellationToken::new();
    let mut ready = Some(ready);
    let incarnations = async {
        loop {
            let replication = replication_port.as_ref().map(reuse).transpose()?;
            let metrics = metrics_port.as_ref().map(reuse).transpose()?;
            let first = ready.take();
            let outcome = incarnation(
                &config,
                &mut client_port,
                (replication, metrics),
                stop.clone(),
                move |r| {
                    if let Some(f) = first {
                        f(r)
                    }
                },
            )
            .await?;
            match outcome {
                Ended::Stopped => return Ok(()),
                Ended::Restart { reason, isolated } => {
                    if isolated {
                        // Clients stuck on a master nobody can replace it with would wait
                        // forever; refused, they reach another replica.
                        client_port.close();
                    }
                    tracing::warn!(%reason, "broker restarting in process");
                }
            }
        }
    };
    tokio::pin!(shutdown);
    let watch = async {
        (&mut shutdown).await;
        stop.cancel();
        std::future::pending::<()>().await
    };
    tokio::select! {
        r = incarnations => r,
        () = watch => Ok(()),
    }
}

/// The client port, kept bound across in-process restarts; closed while a master cut off
/// from the controller waits to hear from it (so clients go to another replica), and bound
/// again to the same address when it does.
struct ClientPort {
    addr: std::net::SocketAddr,
    listener: Option<std::net::TcpListener>,
}

impl ClientPort {
    fn close(&mut self) {
        self.listener = None;
    }

    fn listener(&mut self) -> Result<TcpListener, BrokerError> {
        if self.listener.is_none() {
            let l = std::net::TcpListener::bind(self.addr).map_err(BrokerError::Listener)?;
            l.set_nonblocking(true).map_err(BrokerError::Listener)?;
            self.listener = Some(l);
        }
        match &self.listener {
            Some(l) => reuse(l),
            None => Err(BrokerError::Listener(std::io::Error::other(
                "client port closed",
            ))),
        }
    }
}

/// A listener on the same socket as `port` (which stays open).
fn reuse(port: &std::net::TcpListener) -> Result<TcpListener, BrokerError> {
    port.try_clone()
        .and_then(TcpListener::from_std)
        .map_err(BrokerError::Listener)
}

/// How one run of the broker ended.
enum Ended {
    /// The shutdown signal: the process ends.
    Stopped,
    /// The controller assigned a role that needs the store reopened (`isolated`: this
    /// master lost the controller and closes its client port until it hears from it).
    Restart { reason: String, isolated: bool },
}

/// One run of the broker, from opening the store to closing it.
async fn incarnation(
    config: &BrokerConfig,
    client_port: &mut ClientPort,
    (replication_listener, metrics_listener): (Option<TcpListener>, Option<TcpListener>),
    stop: CancellationToken,
    ready: impl FnOnce(Ready) + Send,
) -> Result<Ended, BrokerError> {
    let config = config.clone();
    let bound = client_port.addr;
    let endpoint = AdvertisedEndpoint::resolve(config.advertised_address.as_deref(), bound);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Io {
        what: "creating",
        path: config.data_dir.clone(),
        source,
    })?;

    let store_config = config.store_config();
    let store = blocking(move || Store::open(store_config)).await??;
    let mut identity = config.identity();
    // Under a controller the role is whatever it assigns; the store is open so the
    // controller can compare this replica's log end with the others'.
    let agent = if config.replication.controller {
        let replication_address = replication_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| advertised_replication(&endpoint, a))
            .unwrap_or_default();
        let agent = Arc::new(Agent::new(
            &config.nameserver_addresses,
            config.auth.nameserver_credentials(),
            &config.cluster_name,
            &config.broker_name,
            config.broker_id,
            replication_address,
            endpoint.address(),
        ));
        let log_end = store.log_range().1 .0;
        match agent.await_role(log_end, &stop).await {
            Some(assigned) => {
                identity.start_as = assigned.start_as.clone();
                Some((agent, assigned))
            }
            None => {
                blocking(move || store.shutdown()).await??;
                return Ok(Ended::Stopped);
            }
        }
    } else {
        None
    };
    let listener = match client_port.listener() {
        Ok(l) => l,
        Err(e) => {
            blocking(move || store.shutdown()).await??;
            return Err(e);
        }
    };
    // A slave's store refuses local appends before anything (timer, transactions) could
    // try, and a divergent tail is cut before anything reads it.
    let store = crate::replication::prepare_store(
        &identity,
        &config.replication,
        store,
        config.store_config(),
    )
    .await?;
    let replication_token = CancellationToken::new();
    let consumption = {
        let (engine_store, dir) = (store.clone(), config.consumption_dir());
        let engine_config = ConsumptionConfig {
            max_invisible: Duration::from_millis(config.receive.max_invisible_duration_ms),
            // Acks are as durable as the messages: fsynced in Sync mode, written in Async.
            fsync_journal: config.flush_mode == FlushMode::Sync,
            ..ConsumptionConfig::default()
        };
        match blocking(move || Consumption::open(engine_store, dir, engine_config)).await? {
            Ok(c) => c,
            Err(e) => {
                let _ = blocking(move || store.shutdown()).await;
                return Err(e.into());
            }
        }
    };
    // Open transactions are rebuilt from the log before anyone can end one.
    let transactions = {
        let (tx_store, dir) = (store.clone(), config.transaction_dir());
        let (settings, host) = (config.transaction.clone(), endpoint.address());
        match blocking(move || Transactions::open(tx_store, &dir, settings, host)).await? {
            Ok(t) => t,
            Err(e) => {
                let _ = blocking(move || consumption.shutdown()).await;
                let _ = blocking(move || store.shutdown()).await;
                return Err(e.into());
            }
        }
    };
    // Pending delayed messages: the timer resumes from its checkpoint and the log.
    let timer = {
        let (timer_store, dir, settings) =
            (store.clone(), config.timer_dir(), config.timer.clone());
        match blocking(move || Timer::open(timer_store, &dir, settings)).await? {
            Ok(t) => Arc::new(t),
            Err(e) => {
                let _ = blocking(move || consumption.shutdown()).await;
                let _ = blocking(move || store.shutdown()).await;
                return Err(e.into());
            }
        }
    };
    // Whatever happens while serving, the engine and the store are flushed and closed.
    let restart = agent.as_ref().map(|(a, _)| a.restart_token());
    let served = serve(
        config,
        endpoint,
        Services {
            store: store.clone(),
            consumption: consumption.clone(),
            transactions: transactions.clone(),
            timer: Arc::clone(&timer),
            replication_listener,
            metrics_listener,
            stop_replication: replication_token.clone(),
            agent: agent.clone(),
        },
        listener,
        {
            let stop = stop.clone();
            let restart = restart.clone();
            async move {
                match restart {
                    Some(r) => tokio::select! {
                        () = stop.cancelled() => {}
                        () = r.cancelled() => {}
                    },
                    None => stop.cancelled().await,
                }
            }
        },
        ready,
    )
    .await;
    replication_token.cancel();
    // Before the store closes: its last checkpoint needs the log flushed past its firings.
    blocking(move || timer.shutdown()).await?;
    let engine_result = blocking(move || consumption.shutdown()).await?;
    let store_result = blocking(move || store.shutdown()).await?;
    // Only a cleanly flushed log may be covered by the final transaction checkpoint.
    let checkpoint_result = match &store_result {
        Ok(()) => blocking(move || transactions.save_final_checkpoint()).await?,
        Err(_) => Ok(()),
    };
    served?;
    engine_result?;
    store_result?;
    checkpoint_result?;
    if !stop.is_cancelled() {
        if let Some((agent, _)) = &agent {
            if let Some(reason) = agent.restart_reason() {
                tracing::info!("broker closed for its new role");
                return Ok(Ended::Restart {
                    reason,
                    isolated: agent.isolated(),
                });
            }
        }
    }
    tracing::info!("broker stopped");
    Ok(Ended::Stopped)
}

/// The replication address other replicas dial: the bound port on the advertised host.
fn advertised_replication(endpoint: &AdvertisedEndpoint, bound: std::net::SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        if endpoint.host.contains(':') {
            format!("[{}]:{}", endpoint.host, bound.port())
        } else {
            format!("{}:{}", endpoint.host, bound.port())
        }
    } else {
        bound.to_string()
    }
}
/// What recovery opened, handed to [`serve`].
struct Services {
    store: Store,
    consumption: Consumption,
    transactions: Transactions,
    timer: Arc<Timer>,
    /// The replication port, bound (`replication_listen`).
    replication_listener: Option<TcpListener>,
    /// The metrics port, bound (`metrics_listen`).
    metrics_listener: Option<TcpListener>,
    /// Ends replication streams (and a slave's following).
    stop_replication: CancellationToken,
    /// Under a controller: this incarnation's agent and the role it was assigned.
    agent: Option<(Arc<Agent>, Assigned)>,
}

async fn serve(
    config: BrokerConfig,
    endpoint: AdvertisedEndpoint,
    services: Services,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    ready: impl FnOnce(Ready) + Send,
) -> Result<(), BrokerError> {
    let Services {
        store,
        consumption,
        transactions,
        timer,
        replication_listener,
        metrics_listener,
        stop_replication,
        agent,
    } = services;
    let bound = listener.local_addr().map_err(BrokerError::Listener)?;
    let topics = Arc::new(TopicManager::open(
        &config.config_dir(),
        TopicDefaults {
            auto_create: config.auto_create_topics,
            queue_count: config.default_queue_count,
        },
    )?);
    let identity = match &agent {
        Some((_, assigned)) => crate::replication::Identity {
            start_as: assigned.start_as.clone(),
            ..config.identity()
        },
        None => config.identity(),
    };
    // Before the role: a slave installs its master's users into them.
    let auth = Arc::new(
        crate::auth::Auth::open(&config.auth, &config.config_dir())
            .map_err(|e| BrokerError::Auth(e.to_string()))?,
    );
    let role = match GroupRole::start(
        &identity,
        &config.replication,
        &store,
        GroupState::new(
            Arc::clone(&topics),
            consumption.clone(),
            Arc::clone(&timer),
            auth.shared_users(),
        ),
        endpoint.address(),
        stop_replication.clone(),
    )
    .await
    {
        Ok(r) => Arc::new(r),
        Err(e) => return Err(e),
    };
    let tls_config = tls::server_config(
        config
            .tls_cert_path
            .as_deref()
            .zip(config.tls_key_path.as_deref()),
        std::slice::from_ref(&endpoint.host),
    )?;
    let nameservers = (!config.nameserver_addresses.is_empty()).then(|| {
        NameserverClient::new(
            &config.nameserver_addresses,
            config.auth.nameserver_credentials(),
        )
    });
    let routes = RouteTable::new(
        &config.broker_name,
        nameservers.clone(),
        Duration::from_millis(config.route_cache_ms),
    );
    let renewals = Renewals::new(RenewalConfig {
        invisible: Duration::from_millis(config.receive.auto_renew_invisible_duration_ms),
        ahead: Duration::from_millis(config.receive.auto_renew_ahead_ms),
        max_age: Duration::from_millis(config.receive.auto_renew_max_ms),
        period: Duration::from_millis(config.receive.auto_renew_period_ms),
    });
    let token = CancellationToken::new();
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let metrics =
        crate::metrics::for_broker(&config, &store, &consumption, &transactions, &timer, &role);
    let replication_address = replication_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| advertised_replication(&endpoint, a))
        .unwrap_or_default();
    let broker = Arc::new(
        Broker::new(
            config,
            store,
            consumption,
            topics,
            routes,
            renewals,
            endpoint,
            transactions,
            timer,
            role,
            token.clone(),
        )
        .with_metrics(metrics)
        .with_replication_address(replication_address),
    );

    let mut tasks = JoinSet::new();
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    tasks.spawn(renew_loop(Arc::clone(&broker)));
    tasks.spawn(crate::transaction::checker::run(Arc::clone(&broker)));
    if let Some(ns) = nameservers {
        tasks.spawn(crate::registration::register_loop(ns, Arc::clone(&broker)));
    }
    if let Some((agent, assigned)) = agent {
        tasks.spawn(agent.run(Arc::clone(&broker), assigned));
    }

    let replication_addr = replication_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok());
    if let Some(l) = replication_listener {
        let service = broker.role.service();
        // With group credentials, only replicas signing with them may follow or compare.
        let routes = match broker.config.replication.credentials() {
            Some(expected) => Routes::new(RequireSignature::new(
                service,
                expected,
                broker.config.replication.max_clock_skew(),
            )),
            None => Routes::new(service),
        };
        let settings = broker.config.connections.clone();
        let stop = stop_replication.clone();
        let addr = l.local_addr().ok();
        tracing::info!(listen = ?addr, "replication serving");
        tasks.spawn(async move {
            Transport::new(None, Duration::from_secs(1), settings)
                .serve(l, routes, stop.cancelled_owned())
                .await;
        });
    }

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<MessagingServiceServer<MessagingServer>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rocketlog_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| BrokerError::Reflection(e.to_string()))?;
    // A slave passing calls on to its master leaves the checks to the master.
    let messaging = crate::forward::Forwarding::new(
        Gate::new(
            MessagingServiceServer::new(MessagingServer::new(Arc::clone(&broker)))
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
            Arc::clone(&auth),
            MAX_GRPC_MESSAGE,
        ),
        Arc::clone(&broker.role),
    );
    // The HTTP port: metrics at /metrics and the web console.
    let console = (broker.config.console.enabled && metrics_listener.is_some()).then(|| {
        tasks.spawn(crate::console::sample_lag(Arc::clone(&broker)));
        Arc::new(crate::console::Console::new(
            Arc::clone(&broker),
            Arc::clone(&auth),
        )) as Arc<dyn rocketlog_transport::HttpPages>
    });
    {
        let (metrics, stop) = (broker.metrics.clone(), token.clone());
        tasks.spawn(async move {
            crate::metrics::serve(&metrics, console, metrics_listener, stop.cancelled()).await
        });
    }
    let admin = Gate::new(
        crate::admin::service(Arc::clone(&broker), Arc::clone(&auth)),
        auth,
        MAX_GRPC_MESSAGE,
    );
    let service_routes = Routes::new(messaging)
        .add_service(admin)
        .add_service(health)
        .add_service(reflection);

    tracing::info!(
        broker = %broker.config.broker_name,
        listen = %bound,
        advertised = %broker.endpoint.address(),
        "broker serving"
    );
    // Connections that arrived during recovery wait in the listen backlog; they are
    // accepted as soon as the transport starts below.
    ready(Ready {
        replication: replication_addr,
        metrics: metrics_addr,
    });
    let stopping = {
        let broker = Arc::clone(&broker);
        async move {
            shutdown.await;
            tracing::info!("broker shutting down");
            health_reporter
                .set_not_serving::<MessagingServiceServer<MessagingServer>>()
                .await;
            // Ends long polls and Telemetry streams so connections can drain.
            broker.shutdown.cancel();
            broker.clients.clear();
        }
    };
    Transport::new(Some(tls_config), grace, broker.config.connections.clone())
        .max_concurrent_streams(broker.config.max_concurrent_streams)
        .count_connections(broker.metrics.connections())
        .serve(listener, service_routes, stopping)
        .await;

    token.cancel();
    // The follower appends to the store: stopped before the store closes.
    broker.role.stop().await;
    stop_replication.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The broker half of standalone mode (a nameserver and a broker in one process): `config`
/// pointed at the in-process nameserver listening on `nameserver`. Run it with [`run`] next
/// to `rocketlog_nameserver::run`, both stopped by the same shutdown signal.
pub fn standalone(mut config: BrokerConfig, mut nameserver: std::net::SocketAddr) -> BrokerConfig {
    if nameserver.ip().is_unspecified() {
        nameserver.set_ip(match nameserver.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    config.nameserver_addresses = vec![nameserver.to_string()];
    config
}

/// Runs a blocking call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BrokerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BrokerError::Task(e.to_string()))
}

/// Extends auto-renewed deliveries until shutdown.
async fn renew_loop(broker: Arc<Broker>) {
    let period = broker.renewals.config().period;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = broker.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if broker.renewals.is_empty() {
            continue;
        }
        let b = Arc::clone(&broker);
        let pass = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            b.renewals.renew_due(&b.consumption, now, &|client| {
                b.clients.is_connected(client)
            })
        });
        if let Err(e) = pass.await {
            tracing::warn!(error = %e, "auto-renewal pass failed");
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
