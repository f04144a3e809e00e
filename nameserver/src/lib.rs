//! rocketlog nameserver: brokers register their topic tables (and re-register as their
//! heartbeat); brokers and tools ask it for topic routes. It keeps no disk state: a restarted
//! nameserver learns everything again within one broker heartbeat interval, and several run
//! side by side because every broker registers with each of them.
//!
//! With `[nameserver.controller] enabled = true` it is also a member of the controller, the
//! Raft group that elects each broker group's master (see [`controller`]).
//!
//! Layering: depends on `rocketlog-controller`, `rocketlog-proto` and `rocketlog-transport`
//! only; it must not depend on the broker, the store or the client (brokers reach it over
//! gRPC).
//!
//! Embed it with [`run`]; the `rocketlog nameserver` command is a thin wrapper around it.

pub mod controller;
pub mod metrics;
pub mod route_table;
mod service;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rocketlog_controller::raft::ControllerNode;
use rocketlog_proto::controller::v1::controller_server::ControllerServer;
use rocketlog_proto::nameserver::v1::name_server_server::NameServerServer;
use rocketlog_transport::signature::{Credentials, RequireSignature};
use rocketlog_transport::{ConnectionSettings, Transport};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use route_table::RouteTable;
pub use service::NameServerService;

/// Nameserver settings; every field has a default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NameserverConfig {
    /// A broker silent for this long is dropped from every route, ms (default 120 000).
    pub broker_expiry_ms: u64,
    /// How often silent brokers are looked for, ms (default 10 000).
    pub scan_interval_ms: u64,
    /// Registration interval suggested to brokers, ms (default 30 000).
    pub heartbeat_interval_ms: u64,
    /// Connections from brokers and tools: handshake deadline, keep-alive, how many at once.
    pub connections: ConnectionSettings,
    /// The controller role (automatic failover of broker groups).
    pub controller: controller::ControllerConfig,
    /// Where Prometheus scrapes the nameserver's metrics (`GET /metrics`, plain HTTP). Unset:
    /// no metrics port.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Who may call the nameserver (brokers, tools, the other controller members).
    pub auth: NameserverAuth,
}

/// `[nameserver.auth]`: with `enabled`, every call but health checks must be signed
/// (`MQv2-HMAC-SHA1`, as the broker checks its clients) with this access key and secret key,
/// which the brokers (`[broker.auth] nameserver_access_key`), `rocketlog admin --controller`
/// and the other controller members present.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NameserverAuth {
    /// Refuse unsigned calls (default false).
    pub enabled: bool,
    /// The access key callers sign with.
    pub access_key: Option<String>,
    /// Its secret key (set it through the environment, e.g.
    /// `ROCKETLOG_NAMESERVER__AUTH__SECRET_KEY`, rather than in a file).
    pub secret_key: Option<String>,
    /// Largest difference between a call's `x-mq-date-time` and the nameserver's clock, ms
    /// (default 900 000 = 15 min). 0 turns the check off.
    pub max_clock_skew_ms: u64,
}

impl Default for NameserverAuth {
    fn default() -> Self {
        NameserverAuth {
            enabled: false,
            access_key: None,
            secret_key: None,
            max_clock_skew_ms: 15 * 60 * 1000,
        }
    }
}

impl std::fmt::Debug for NameserverAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("NameserverAuth")
            .field("enabled", &self.enabled)
            .field("access_key", &self.access_key)
            .field("max_clock_skew_ms", &self.max_clock_skew_ms)
            .finish_non_exhaustive()
    }
}

impl NameserverAuth {
    /// The credentials calls must be signed with, when authentication is on.
    pub fn credentials(&self) -> Option<Credentials> {
        match (self.enabled, &self.access_key, &self.secret_key) {
            (true, Some(ak), Some(sk)) => Some(Credentials {
                access_key: ak.clone(),
                secret_key: sk.clone(),
            }),
            _ => None,
        }
    }

    fn invalid(&self) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        match (&self.access_key, &self.secret_key) {
            (Some(ak), Some(sk)) if printable(ak) && printable(sk) && sk.len() >= 8 => None,
            (Some(_), Some(_)) => Some(
                "auth.access_key and auth.secret_key must be printable ASCII without spaces, \
                 the secret at least 8 characters"
                    .into(),
            ),
            _ => Some("auth.enabled needs auth.access_key and auth.secret_key".into()),
        }
    }

    fn max_skew(&self) -> Option<Duration> {
        (self.max_clock_skew_ms > 0).then(|| Duration::from_millis(self.max_clock_skew_ms))
    }
}

impl Default for NameserverConfig {
    fn default() -> Self {
        NameserverConfig {
            broker_expiry_ms: 120_000,
            scan_interval_ms: 10_000,
            heartbeat_interval_ms: 30_000,
            connections: ConnectionSettings::default(),
            controller: controller::ControllerConfig::default(),
            metrics_listen: None,
            auth: NameserverAuth::default(),
        }
    }
}

/// Why the nameserver could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NameserverError {
    #[error("invalid nameserver configuration: {0}")]
    Config(String),
    #[error("controller: {0}")]
    Controller(String),
}

/// On shutdown, how long in-flight requests may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl NameserverConfig {
    /// Checks the values once at start.
    pub fn validate(&self) -> Result<(), NameserverError> {
        if self.scan_interval_ms == 0 {
            return Err(NameserverError::Config(
                "scan_interval_ms must be > 0".into(),
            ));
        }
        if self.broker_expiry_ms <= self.heartbeat_interval_ms {
            return Err(NameserverError::Config(format!(
                "broker_expiry_ms ({}) must be larger than heartbeat_interval_ms ({})",
                self.broker_expiry_ms, self.heartbeat_interval_ms
            )));
        }
        if let Some((field, reason)) = self.connections.invalid_field() {
            return Err(NameserverError::Config(format!("{field} {reason}")));
        }
        if let Some(e) = self.controller.invalid() {
            return Err(NameserverError::Config(e));
        }
        if let Some(e) = self.auth.invalid() {
            return Err(NameserverError::Config(e));
        }
        Ok(())
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Serves the nameserver on `listener` until `shutdown` resolves.
pub async fn run(
    config: NameserverConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NameserverError> {
    config.validate()?;
    let table = Arc::new(Mutex::new(RouteTable::default()));
    let expiry = i64::try_from(config.broker_expiry_ms).unwrap_or(i64::MAX);
    let scan = Duration::from_millis(config.scan_interval_ms);
    let scanner = {
        let table = Arc::clone(&table);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(scan);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for key in table.lock().expire(now_ms(), expiry) {
                    tracing::warn!(broker = %key.broker_name, id = key.broker_id, "broker expired: no registration within {expiry} ms");
                }
            }
        })
    };

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<NameServerServer<NameServerService>>()
        .await;
    let mut service = NameServerService::new(Arc::clone(&table), &config);
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                NameserverError::Config(format!("binding metrics_listen {addr}: {e}"))
            })?;
            let metrics = metrics::NameserverMetrics::new(Arc::clone(&table));
            service = service.with_metrics(metrics.clone());
            tracing::info!(listen = ?listener.local_addr().ok(), "metrics serving");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(rocketlog_transport::serve_metrics(
                listener,
                metrics.registry(),
                async move {
                    let _ = stopped.await;
                },
            ));
            Some((stop, task))
        }
        None => None,
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "nameserver serving");
    }
    // Health checks stay open for probes; every other service checks signatures when auth is on.
    let (signed_by, skew) = (config.auth.credentials(), config.auth.max_skew());
    let mut routes = Routes::new(health);
    routes = match &signed_by {
        Some(c) => routes.add_service(RequireSignature::new(
            NameServerServer::new(service),
            c.clone(),
            skew,
        )),
        None => routes.add_service(NameServerServer::new(service)),
    };
    let controller = if config.controller.enabled {
        let mut settings = config.controller.raft().map_err(NameserverError::Config)?;
        settings.credentials = signed_by.clone();
        let node = ControllerNode::start(settings)
            .await
            .map_err(|e| NameserverError::Controller(e.to_string()))?;
        let node = Arc::new(node);
        let service =
            controller::ControllerService::new(Arc::clone(&node), config.controller.election());
        routes = match &signed_by {
            Some(c) => routes
                .add_service(RequireSignature::new(node.raft_service(), c.clone(), skew))
                .add_service(RequireSignature::new(
                    ControllerServer::new(service.clone()),
                    c.clone(),
                    skew,
                )),
            None => routes
                .add_service(node.raft_service())
                .add_service(ControllerServer::new(service.clone())),
        };
        tracing::info!(
            node = config.controller.node_id,
            peers = ?config.controller.peers,
            "controller member started"
        );
        Some((node, tokio::spawn(service.elect_loop())))
    } else {
        None
    };
    Transport::new(None, SHUTDOWN_GRACE, config.connections.clone())
        .serve(listener, routes, shutdown)
        .await;
    scanner.abort();
    if let Some((stop, task)) = metrics {
        let _ = stop.send(());
        let _ = task.await;
    }
    if let Some((node, elector)) = controller {
        elector.abort();
        node.shutdown().await;
    }
    tracing::info!("nameserver stopped");
    Ok(())
}
