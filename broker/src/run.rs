//! The broker's lifecycle: open the store, the consumption engine and the topic table, start
//! the background tasks (auto-renewal, nameserver registration), serve the client port until
//! the shutdown future resolves, then stop accepting, let in-flight requests finish (long polls
//! and Telemetry streams are ended first), flush, checkpoint and return.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocketlog_proto::v2::messaging_service_server::MessagingServiceServer;
use rocketlog_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::broker::{AdvertisedEndpoint, Broker};
use crate::config::{BrokerConfig, FlushMode};
use crate::consumption::{Consumption, ConsumptionConfig};
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
    let bound = listener.local_addr().map_err(BrokerError::Listener)?;
    let endpoint = AdvertisedEndpoint::resolve(config.advertised_address.as_deref(), bound);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Io {
        what: "creating",
        path: config.data_dir.clone(),
        source,
    })?;

    let store_config = config.store_config();
    let store = blocking(move || Store::open(store_config)).await??;
    // A slave's store refuses local appends before anything (timer, transactions) could
    // try, and a divergent tail is cut before anything reads it.
    let store = crate::replication::prepare_store(
        &config.identity(),
        &config.replication,
        store,
        config.store_config(),
    )
    .await?;
    let replication_token = CancellationToken::new();
    let replication_listener = match config.replication_listen {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(source) => {
                let _ = blocking(move || store.shutdown()).await;
                return Err(BrokerError::Replication(format!(
                    "binding replication_listen {addr}: {source}"
                )));
            }
        },
        None => None,
    };
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
    let served = serve(
        config,
        endpoint,
        Services {
            store: store.clone(),
            consumption: consumption.clone(),
            transactions: transactions.clone(),
            timer: Arc::clone(&timer),
            replication_listener,
            stop_replication: replication_token.clone(),
        },
        listener,
        shutdown,
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
    tracing::info!("broker stopped");
    Ok(())
}

/// What recovery opened, handed to [`serve`].
struct Services {
    store: Store,
    consumption: Consumption,
    transactions: Transactions,
    timer: Arc<Timer>,
    /// The replication port, bound (`replication_listen`).
    replication_listener: Option<TcpListener>,
    /// Ends replication streams (and a slave's following).
    stop_replication: CancellationToken,
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
        stop_replication,
    } = services;
    let bound = listener.local_addr().map_err(BrokerError::Listener)?;
    let topics = Arc::new(TopicManager::open(
        &config.config_dir(),
        TopicDefaults {
            auto_create: config.auto_create_topics,
            queue_count: config.default_queue_count,
        },
    )?);
    let role = match GroupRole::start(
        &config.identity(),
        &config.replication,
        &store,
        GroupState::new(Arc::clone(&topics), consumption.clone(), Arc::clone(&timer)),
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
    let nameservers = (!config.nameserver_addresses.is_empty())
        .then(|| NameserverClient::new(&config.nameserver_addresses));
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
    let broker = Arc::new(Broker::new(
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
    ));

    let mut tasks = JoinSet::new();
    tasks.spawn(renew_loop(Arc::clone(&broker)));
    tasks.spawn(crate::transaction::checker::run(Arc::clone(&broker)));
    if let Some(ns) = nameservers {
        tasks.spawn(crate::registration::register_loop(ns, Arc::clone(&broker)));
    }

    let replication_addr = replication_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok());
    if let Some(l) = replication_listener {
        let routes = Routes::new(broker.role.service());
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
    let messaging = MessagingServiceServer::new(MessagingServer::new(Arc::clone(&broker)))
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let admin = crate::admin::service(Arc::clone(&broker));
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
